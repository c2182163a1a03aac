"""Export a checkpoint to ONNX (dynamic batch, height, width) or TorchScript, with metadata.

The exported file carries what a deployment needs besides the graph: class names, palette and
the normalisation (``fcnseg.preprocess``), as ONNX ``metadata_props`` or TorchScript extra
files. The graph takes *normalised* images, like ``model(...)``; apply the stored
normalisation first (``fcnseg predict`` does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fcnseg.engine.checkpoint import load_checkpoint

__all__ = ["export_model", "read_onnx_metadata"]

#: Keys under which the metadata is stored.
META_KEYS = ("fcnseg.classes", "fcnseg.palette", "fcnseg.preprocess", "fcnseg.model")


def _metadata(ckpt: Any) -> dict[str, str]:
    return {
        "fcnseg.classes": json.dumps(ckpt.classes),
        "fcnseg.palette": json.dumps(ckpt.palette),
        "fcnseg.preprocess": json.dumps(ckpt.preprocess),
        "fcnseg.model": json.dumps(ckpt.model),
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

    dims = {
        0: torch.export.Dim("batch", min=1, max=1024),
        2: torch.export.Dim("height", min=1, max=65536),
        3: torch.export.Dim("width", min=1, max=65536),
    }
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample,),
            str(out),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"images": dims},
            verbose=False,
        )
    proto = onnx.load(str(out))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return out


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The fcnseg metadata of an exported ONNX file (classes, palette, preprocess, model)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in META_KEYS if k not in props]
    if missing:
        raise ValueError(f"{path} has no fcnseg metadata ({missing}); export it with fcnseg")
    return {k.removeprefix("fcnseg."): json.loads(props[k]) for k in META_KEYS}
