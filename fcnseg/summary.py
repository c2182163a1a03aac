"""Keras-like model summaries for any :class:`torch.nn.Module`.

:func:`summarize` runs one forward pass on a dummy batch of size 1 (on the ``meta`` device by
default, so no real compute or memory is spent) with forward hooks on every leaf module, and
records each module's output shape and parameter counts in execution order.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

__all__ = ["LayerRow", "Summary", "count_parameters", "parse_input_shape", "summarize"]

ROOT_NAME = "(root)"


@dataclass
class LayerRow:
    """One executed module: qualified name, class name, output shape and parameter counts.

    ``params``/``trainable`` count the module's *direct* parameters (``recurse=False``) that
    were not already counted on an earlier row, so a module called twice (or a tied weight)
    shows its parameters only on the first row where they appear.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    params: int
    trainable: int


@dataclass
class Summary:
    """Result of :func:`summarize`.

    ``input_shape`` is the per-sample shape that was requested (no batch dim); row and model
    output shapes include the dummy batch dimension of 1. ``device`` is where the pass ran
    (``"cpu"`` when the meta pass failed and fell back).
    """

    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    device: str = field(default="meta")

    def table(self) -> str:
        """Render a fixed-width text table with a parameter-count footer."""
        headers = ("Layer (name)", "Type", "Output shape", "Param #")
        body = [
            (row.name, row.kind, _format_shape(row.output_shape), f"{row.params:,}")
            for row in self.rows
        ]
        widths = [max(len(cells[i]) for cells in [headers, *body]) for i in range(4)]
        gap = "  "

        def line(cells: tuple[str, str, str, str]) -> str:
            left = gap.join(c.ljust(w) for c, w in zip(cells[:3], widths[:3], strict=True))
            return f"{left}{gap}{cells[3].rjust(widths[3])}"

        width = sum(widths) + len(gap) * 3
        out = [
            f"Input shape: {_format_shape(self.input_shape)}",
            "=" * width,
            line(headers),
            "=" * width,
            *(line(cells) for cells in body),
            "=" * width,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"Output shape: {_format_shape(self.output_shape)}",
            "-" * width,
        ]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (shapes as lists, missing shapes as ``None``)."""

        def shape(s: tuple[int, ...] | None) -> list[int] | None:
            return None if s is None else list(s)

        return {
            "rows": [
                {
                    "name": r.name,
                    "kind": r.kind,
                    "output_shape": shape(r.output_shape),
                    "params": r.params,
                    "trainable": r.trainable,
                }
                for r in self.rows
            ],
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.non_trainable_params,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "device": self.device,
        }


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """Return ``(total, trainable)`` parameter counts; shared parameters count once.

    Uninitialised lazy parameters are skipped (their size is not known yet).
    """
    total = trainable = 0
    for p in module.parameters():
        if is_lazy(p):
            continue
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return total, trainable


_SHAPE_EXAMPLE = (
    "expected positive integers separated by 'x' or ',', e.g. '3x500x500' or '3,500,500'"
)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse ``"3x500x500"`` or ``"3,500,500"`` (optionally bracketed) into a tuple of ints."""
    stripped = text.strip()
    if len(stripped) >= 2 and stripped[0] in "([" and stripped[-1] in ")]":
        stripped = stripped[1:-1].strip()
    if not stripped:
        raise ValueError(f"invalid input shape {text!r}: it is empty; {_SHAPE_EXAMPLE}")
    dims = []
    for part in re.split(r"[xX,]", stripped):
        token = part.strip()
        if not re.fullmatch(r"\d+", token) or int(token) <= 0:
            raise ValueError(
                f"invalid input shape {text!r}: {token!r} is not a positive integer; "
                f"{_SHAPE_EXAMPLE}"
            )
        dims.append(int(token))
    return tuple(dims)


def summarize(model: nn.Module, input_shape: tuple[int, ...], *, device: str = "meta") -> Summary:
    """Summarise ``model`` by running a dummy ``(1, *input_shape)`` batch through a copy of it.

    The pass runs in eval mode under ``torch.no_grad`` on a structural copy of ``model``, so
    the original (weights, device, train/eval flags, hooks) is never touched. With
    ``device="meta"`` (the default) the copy holds meta tensors only; if the meta forward
    raises (an op without a meta kernel, data-dependent control flow, ...) the pass is retried
    on CPU. Rows are leaf modules, plus modules owning parameters directly, in the order their
    forward hooks fired.
    """
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape!r}")

    try:
        rows, out, total, trainable = _run(model, shape, device)
        used = str(torch.device(device))
    except Exception:
        if torch.device(device).type != "meta":
            raise
        rows, out, total, trainable = _run(model, shape, "cpu")
        used = "cpu"

    out_shape = _first_shape(out)
    return Summary(
        rows=rows,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        input_shape=shape,
        output_shape=out_shape if out_shape is not None else (),
        device=used,
    )


def _run(
    model: nn.Module, shape: tuple[int, ...], device: str
) -> tuple[list[LayerRow], Any, int, int]:
    """One hooked forward pass on a copy of ``model`` placed on ``device``."""
    dev = torch.device(device)
    clone = _clone_to(model, dev)
    clone.eval()

    rows: list[LayerRow] = []
    seen: set[int] = set()

    def make_hook(name: str):
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            params = trainable = 0
            for p in module.parameters(recurse=False):
                if id(p) in seen or is_lazy(p):
                    continue
                seen.add(id(p))
                params += p.numel()
                trainable += p.numel() if p.requires_grad else 0
            rows.append(
                LayerRow(
                    name=name or ROOT_NAME,
                    kind=type(module).__name__,
                    output_shape=_first_shape(output),
                    params=params,
                    trainable=trainable,
                )
            )

        return hook

    handles = []
    for name, module in clone.named_modules():
        is_leaf = next(module.children(), None) is None
        owns_params = next(module.parameters(recurse=False), None) is not None
        if is_leaf or owns_params:
            handles.append(module.register_forward_hook(make_hook(name)))

    dummy = torch.zeros((1, *shape), dtype=_input_dtype(clone), device=dev)
    try:
        with torch.no_grad():
            out = clone(dummy)
    finally:
        for handle in handles:
            handle.remove()

    total, trainable = count_parameters(clone)  # lazy modules are materialised by now
    return rows, out, total, trainable


def _clone_to(model: nn.Module, dev: torch.device) -> nn.Module:
    """Deep-copy ``model`` with parameters/buffers placed on ``dev``.

    Tensors are pre-seeded in the deepcopy memo so real weights are never copied needlessly:
    on meta they become empty meta tensors (meta ones become uninitialised tensors on ``dev``);
    parameters already on ``dev`` are shared (the pass runs under ``no_grad`` in eval mode),
    buffers are cloned. Tied tensors stay tied.
    """
    memo: dict[int, Any] = {}
    for t in (*model.parameters(), *model.buffers()):
        if is_lazy(t):
            continue  # let deepcopy make an independent uninitialised copy
        empty = dev.type == "meta" or t.device.type == "meta"  # no values to copy or to read
        if isinstance(t, nn.Parameter):
            if dev.type != "meta" and t.device == dev:
                new: torch.Tensor = t
            else:
                data = torch.empty_like(t, device=dev) if empty else t.detach().to(dev)
                new = nn.Parameter(data, requires_grad=t.requires_grad)
        else:
            new = torch.empty_like(t, device=dev) if empty else t.detach().to(dev, copy=True)
        memo[id(t)] = new
    return copy.deepcopy(model, memo)


def _input_dtype(model: nn.Module) -> torch.dtype:
    """Dtype of the model's first floating-point tensor, else the default dtype."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point() and not is_lazy(t):
            return t.dtype
    return torch.get_default_dtype()


def _iter_tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _iter_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _iter_tensors(value)


def _first_shape(obj: Any) -> tuple[int, ...] | None:
    """Shape of ``obj`` if a tensor, else of the first tensor nested in a dict/list/tuple."""
    return next((tuple(t.shape) for t in _iter_tensors(obj)), None)


def _format_shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    return "(" + ", ".join(str(d) for d in shape) + ")"
