"""What kind of model file a path holds, from its first bytes (never by unpickling it), and
the one-line message for a file given where an fcnseg checkpoint was expected."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

__all__ = ["file_kind", "not_a_checkpoint"]

_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def file_kind(path: str | Path) -> str:
    """``"safetensors"``, ``"onnx"`` (by its ``.onnx`` name), ``"torchscript"``, ``"pytorch"``
    (a ``torch.save`` file), ``"image"`` or ``"unknown"``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(16)
        size = path.stat().st_size
    except OSError:
        return "unknown"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if n <= size - 8:
            return "safetensors"
    if path.suffix.lower() == ".onnx":
        return "onnx"
    if head.startswith(_IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "image"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "pytorch" if any(n.endswith("data.pkl") for n in names) else "unknown"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:  # a pickle (torch.save's legacy format)
        return "pytorch"
    return "unknown"


def not_a_checkpoint(path: str | Path, kind: str) -> str:
    """What ``path`` (of :func:`file_kind` ``kind``) is instead of a checkpoint, and what to
    give or which command takes it."""
    path = Path(path)
    usage = "a .safetensors file written by fcnseg train, or its run directory"
    if kind == "onnx":
        return (
            f"{path} is an exported ONNX model, not a checkpoint: fcnseg predict, eval and serve "
            "take it; other commands need the checkpoint it was exported from"
        )
    if kind == "torchscript":
        return (
            f"{path} is an exported TorchScript model, which fcnseg does not load: give the "
            f"checkpoint it was exported from ({usage}) or an exported .onnx"
        )
    if kind == "pytorch" and path.name.endswith(".state.pt"):
        weights = path.name.removesuffix(".state.pt") + ".safetensors"
        return f"{path} is a run's training state (what --resume reads): use {weights} beside it"
    if kind == "pytorch":
        return (
            f"{path} is a PyTorch file, not an fcnseg checkpoint ({usage}); backbone weights go "
            "in model.backbone_weights"
        )
    if kind == "image":
        return (
            f"{path} is an image, not a checkpoint ({usage}); the checkpoint comes first: "
            "fcnseg predict RUN IMAGES -o OUT"
        )
    return f"{path} is not an fcnseg checkpoint ({usage}, or for predict/eval/serve an .onnx)"
