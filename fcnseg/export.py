"""Export a checkpoint to ONNX (dynamic batch, height, width) or TorchScript, with metadata.

The exported file carries what a deployment needs besides the graph: class names, palette and
the normalisation (``fcnseg.preprocess``), as ONNX ``metadata_props`` or TorchScript extra
files, with the training's scale policy (``fcnseg.train_scale``: resize images to its
``resize`` first, :mod:`fcnseg.inference.scale`), config and ignore index. The graph takes
*normalised* images, like ``model(...)``; apply the stored normalisation first (``fcnseg
predict`` does).

ONNX export uses ``torch.export`` (the dynamo exporter) and then *checks* the file: ONNX
Runtime must reproduce PyTorch's logits within ``ONNX_TOLERANCE`` at sizes other than the
sample (odd ones, batch 2). Where the dynamo exporter cannot keep every size symbolic (the
ceil-mode pools of AlexNet and GoogLeNet give floor/ceil size expressions it fails on or
specialises), fcnseg falls back to the TorchScript-based exporter, whose traced shape
arithmetic stays dynamic, and checks that file the same way.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from fcnseg.checkpoint import load_checkpoint

__all__ = ["export_model", "read_onnx_metadata"]

log = logging.getLogger(__name__)

#: Max |ONNX Runtime − PyTorch| on the logits, relative to their largest magnitude (float32
#: operations reordered by the runtime).
ONNX_TOLERANCE = 1e-4
#: (batch, height, width) at which an exported file is checked against PyTorch.
CHECK_SHAPES = ((1, 67, 45), (2, 31, 33), (1, 100, 101))

#: Keys under which the metadata is stored.
META_KEYS = ("fcnseg.classes", "fcnseg.palette", "fcnseg.preprocess", "fcnseg.model")
#: Keys of files exported by later versions: the training's scale policy, config, ignore index.
OPTIONAL_KEYS = ("fcnseg.train_scale", "fcnseg.config", "fcnseg.ignore_index")


def _metadata(ckpt: Any) -> dict[str, str]:
    return {
        "fcnseg.classes": json.dumps(ckpt.classes),
        "fcnseg.palette": json.dumps(ckpt.palette),
        "fcnseg.preprocess": json.dumps(ckpt.preprocess),
        "fcnseg.model": json.dumps(ckpt.model),
        "fcnseg.train_scale": json.dumps(ckpt.train_scale),
        "fcnseg.config": json.dumps(ckpt.config),
        "fcnseg.ignore_index": json.dumps(ckpt.ignore_index),
    }


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    *,
    fmt: str = "onnx",
    sample_size: tuple[int, int] = (64, 64),
) -> Path:
    """Export ``checkpoint`` to ``out`` as ``"onnx"`` or ``"torchscript"``."""
    ckpt = load_checkpoint(checkpoint)
    model = ckpt.build_model().eval()
    sample = torch.randn(1, 3, *sample_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(ckpt)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, sample, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={k: v.encode() for k, v in meta.items()})
        return out
    if fmt != "onnx":
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    import onnx

    try:
        _export_onnx(model, sample, out, dynamo=True)
        _check_onnx(out, model)
    except Exception as err:  # torch.export failed, or the graph specialised a size
        log.info("dynamo ONNX export unusable (%s); using the TorchScript-based exporter", err)
        _export_onnx(model, sample, out, dynamo=False)
        _check_onnx(out, model)
    proto = onnx.load(str(out))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return out


def _export_onnx(model: torch.nn.Module, sample: torch.Tensor, out: Path, *, dynamo: bool) -> None:
    kwargs: dict[str, Any]
    if dynamo:
        dims = {
            0: torch.export.Dim("batch", min=1, max=1024),
            2: torch.export.Dim("height", min=1, max=65536),
            3: torch.export.Dim("width", min=1, max=65536),
        }
        kwargs = {"dynamic_shapes": (dims,)}  # by position: models name their input differently
    else:
        axes = {0: "batch", 2: "height", 3: "width"}
        kwargs = {"dynamic_axes": {"images": axes, "logits": axes}, "opset_version": 18}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample,),
            str(out),
            dynamo=dynamo,
            input_names=["images"],
            output_names=["logits"],
            verbose=False,
            **kwargs,
        )


def _check_onnx(path: Path, model: torch.nn.Module) -> None:
    """Raise unless ONNX Runtime matches PyTorch at every :data:`CHECK_SHAPES` size."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(0)
    for batch, h, w in CHECK_SHAPES:
        x = torch.randn(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            want = model(x).numpy()
        got = session.run(None, {"images": x.numpy()})[0]
        if got.shape != want.shape:
            raise ValueError(f"ONNX output {got.shape} at input {tuple(x.shape)}, not {want.shape}")
        err = float(abs(got - want).max() / max(1e-12, float(abs(want).max())))
        if err > ONNX_TOLERANCE:
            raise ValueError(f"ONNX differs from PyTorch by {err:.2e} (relative) at {(h, w)}")


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The fcnseg metadata of an exported ONNX file (classes, palette, preprocess, model; and
    train_scale, config, ignore_index when it was exported with them)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in META_KEYS if k not in props]
    if missing:
        raise ValueError(f"{path} has no fcnseg metadata ({missing}); export it with fcnseg")
    keys = [*META_KEYS, *(k for k in OPTIONAL_KEYS if k in props)]
    return {k.removeprefix("fcnseg."): json.loads(props[k]) for k in keys}
