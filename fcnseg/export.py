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

An ONNX export is one self-contained ``.onnx`` file. Only a model too large for one protobuf
(:data:`ONNX_SINGLE_FILE_LIMIT`, 2 GB) uses ONNX's external-data layout: ``NAME.onnx`` plus its
weights in ``NAME.onnx.data`` beside it (:func:`exported_files` lists them; keep them together).

``quantize="int8"`` writes instead the int8 model of the checked float export, calibrated on a
folder of images (:mod:`fcnseg.quantize`); it records ``fcnseg.precision`` and
``fcnseg.calibration``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from fcnseg.checkpoint import Checkpoint, load_checkpoint
from fcnseg.metadata import parse_metadata

__all__ = ["export_model", "exported_files", "read_onnx_metadata"]

log = logging.getLogger(__name__)

#: Max |ONNX Runtime − PyTorch| on the logits, relative to their largest magnitude (float32
#: operations reordered by the runtime).
ONNX_TOLERANCE = 1e-4
#: Largest ONNX model written as one file (protobuf's 2 GB limit); larger ones get a ``.data``.
ONNX_SINGLE_FILE_LIMIT = 2**31 - 1
#: (batch, height, width) at which an exported file is checked against PyTorch.
CHECK_SHAPES = ((1, 67, 45), (2, 31, 33), (1, 100, 101))

#: Keys under which the metadata is stored.
META_KEYS = ("fcnseg.classes", "fcnseg.palette", "fcnseg.preprocess", "fcnseg.model")
#: Keys of files exported by later versions: the training's scale policy, config, ignore index.
OPTIONAL_KEYS = ("fcnseg.train_scale", "fcnseg.config", "fcnseg.ignore_index")
#: Keys of quantized files: ``"int8"``, and the calibration (source, images, agreement).
QUANTIZED_KEYS = ("fcnseg.precision", "fcnseg.calibration")


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
    checkpoint: str | Path | Checkpoint,
    out: str | Path,
    *,
    fmt: str = "onnx",
    sample_size: tuple[int, int] = (64, 64),
    quantize: str | None = None,
    calibrate: str | Path | None = None,
    calibration_images: int = 32,
) -> Path:
    """Export ``checkpoint`` (file, run directory or loaded :class:`Checkpoint`) to the file
    ``out`` as ``"onnx"`` or ``"torchscript"``; returns ``out`` (see :func:`exported_files`
    for an ONNX model over 2 GB). ``quantize="int8"`` (ONNX only): the post-training int8
    model, calibrated on ``calibration_images`` images of the folder ``calibrate``
    (:func:`fcnseg.quantize.quantize_int8`)."""
    if fmt not in ("onnx", "torchscript"):
        raise ValueError(f"format must be 'onnx' or 'torchscript', got {fmt!r}")
    calibration = _check_quantize(fmt, quantize, calibrate, calibration_images)
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out} is a folder; name the file to write, e.g. {out / 'model.onnx'}")
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"{out.parent} is a file, not a folder; choose another path for {out}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    model = ckpt.build_model().eval()
    sample = torch.randn(1, 3, *sample_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(ckpt)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, sample, check_trace=False)
        torch.jit.save(traced, str(out), _extra_files={k: v.encode() for k, v in meta.items()})
        return out
    import onnx

    # Exporters may write NAME.onnx.data beside their file: stage in a private folder, then
    # write exactly the file(s) this export names.
    try:
        staging = tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.")
    except OSError as err:
        raise OSError(err.errno, f"cannot write in {out.parent} ({err.strerror})") from err
    with staging as tmp:
        staged = Path(tmp) / "export" / "model.onnx"
        try:
            staged.parent.mkdir()
            _export_onnx(model, sample, staged, dynamo=True)
            _check_onnx(staged, model)
        except Exception as err:  # torch.export failed, or the graph specialised a size
            log.info("dynamo ONNX export unusable (%s); using the TorchScript-based exporter", err)
            staged = Path(tmp) / "fallback" / "model.onnx"
            staged.parent.mkdir()
            _export_onnx(model, sample, staged, dynamo=False)
            _check_onnx(staged, model)
        proto = onnx.load(str(staged))  # any external data read back into the model
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        if quantize is None:
            _save_onnx(proto, out, Path(tmp))
            return out
        from fcnseg.quantize import quantize_int8

        fp32 = Path(tmp) / "float" / "model.onnx"
        fp32.parent.mkdir()
        onnx.save_model(proto, str(fp32))
        int8 = Path(tmp) / "int8" / out.name
        int8.parent.mkdir()
        assert calibrate is not None  # _check_quantize
        quantize_int8(fp32, int8, read_onnx_metadata(fp32), calibrate, calibration)
        os.replace(int8, out)
    return out


def _check_quantize(
    fmt: str, quantize: str | None, calibrate: str | Path | None, images: int
) -> list[Path]:
    """The quantization arguments make sense (before anything is exported): the calibration
    images (none when not quantizing)."""
    if quantize is None:
        if calibrate is not None:
            raise ValueError("--calibrate is for --quantize int8; add it or drop --calibrate")
        return []
    if quantize != "int8":
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}")
    if fmt != "onnx":
        raise ValueError(f"--quantize applies to ONNX exports, not {fmt}; use --format onnx")
    if calibrate is None:
        raise ValueError(
            "--quantize int8 needs --calibrate FOLDER: images like those the model will see"
        )
    from fcnseg.quantize import calibration_files

    return calibration_files(calibrate, images)


def _save_onnx(proto: Any, out: Path, tmp: Path) -> None:
    """Write ``proto`` as ``out`` alone, or with ``out.data`` when over the single-file limit
    (written in ``tmp`` first, then moved into place)."""
    import onnx

    data = out.with_name(out.name + ".data")
    try:
        single = proto.ByteSize() <= ONNX_SINGLE_FILE_LIMIT
    except Exception:  # protobuf refuses to size a message that large
        single = False
    final = tmp / out.name
    if single:
        onnx.save_model(proto, str(final))
        if data.exists():
            log.warning("%s is not part of this export (%s is self-contained)", data, out)
    else:
        onnx.save_model(
            proto,
            str(final),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
        )
        shutil.copymode(final, tmp / data.name)  # onnx makes it owner-only; match the .onnx
        os.replace(tmp / data.name, data)
    os.replace(final, out)


def exported_files(path: str | Path) -> list[Path]:
    """The files an export consists of: ``path``, then the external-data files its ONNX graph
    reads (none for a self-contained file, i.e. any model under 2 GB)."""
    path = Path(path)
    if path.suffix != ".onnx":
        return [path]
    import onnx
    from onnx.external_data_helper import uses_external_data

    proto = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        if uses_external_data(tensor)
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return [path, *(path.parent / name for name in sorted(locations))]


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
    train_scale, config, ignore_index when it was exported with them; precision and
    calibration when quantized)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in META_KEYS if k not in props]
    if missing:
        raise ValueError(f"{path} has no fcnseg metadata ({missing}); export it with fcnseg")
    keys = [*META_KEYS, *(k for k in (*OPTIONAL_KEYS, *QUANTIZED_KEYS) if k in props)]
    return parse_metadata(path, props, keys, prefix="fcnseg.")  # JSON, never evaluated
