"""Post-training int8 quantization of an exported ONNX model, with ONNX Runtime.

Static quantization (:func:`onnxruntime.quantization.quantize_static`): weights int8 per output
channel, activations uint8 with ranges calibrated (min/max) on real images, in the QDQ format
(``QuantizeLinear``/``DequantizeLinear`` around each quantized operator, which ONNX Runtime fuses
into integer kernels). Calibration images are read from a folder (or a data folder's
``images/``), normalised as the model expects and shown to it at the training's scale when the
export records one (``train_scale``), else at their own size with the longer side capped at
:data:`MAX_SIDE`. The quantized model is checked against the float one on calibration images
before it is kept: its labels must agree on at least :data:`MIN_AGREEMENT` of the pixels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "MIN_AGREEMENT",
    "MIN_CALIBRATION",
    "calibration_files",
    "calibration_inputs",
    "quantize_int8",
]

log = logging.getLogger(__name__)

#: Least share of pixels whose int8 label equals the float model's for the file to be kept.
MIN_AGREEMENT = 0.9
#: Longest side of a calibration image when the model records no training size.
MAX_SIDE = 512
#: Calibration images the int8 model is checked on against the float one.
CHECK_IMAGES = 4
#: Fewer calibration images than this draws a warning: min/max ranges seen on a handful of
#: images may clip the activations of the images the model meets later.
MIN_CALIBRATION = 16


def calibration_files(source: str | Path, count: int) -> list[Path]:
    """``count`` images of the folder ``source`` (of ``source/images`` when it has one), spread
    evenly over its sorted files, each checked to read as prediction reads it
    (:func:`fcnseg.data.io.read_image`). Raises :class:`~fcnseg.data.base.DataError` naming the
    folder or the first file that does not; warns below :data:`MIN_CALIBRATION` images."""
    from fcnseg.data.base import DataError
    from fcnseg.data.io import IMAGE_EXTENSIONS, read_image

    if count < 1:
        raise ValueError(f"calibration images must be at least 1, got {count}")
    folder = Path(source)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise DataError(f"calibration folder {folder} {what}; give a folder of images")
    if (folder / "images").is_dir():
        folder = folder / "images"
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        kinds = ", ".join(IMAGE_EXTENSIONS)
        raise DataError(f"calibration folder {folder} holds no images ({kinds})")
    n = min(count, len(files))
    chosen = [files[i * len(files) // n] for i in range(n)]
    for path in chosen:
        read_image(path)  # unreadable, or no 3-channel rendering: its DataError names the file
    if n < MIN_CALIBRATION:
        more = " (all the folder holds)" if count > len(files) else ""
        log.warning(
            "calibrating on %d image(s)%s: fewer than %d may leave activation ranges that "
            "clip on other images; give more images like those the model will see",
            n, more, MIN_CALIBRATION,
        )  # fmt: skip
    return chosen


def calibration_inputs(files: list[Path], meta: dict[str, Any]) -> list[np.ndarray]:
    """The network inputs of ``files`` (1×3×H×W float32, normalised), as predictions see them."""
    from fcnseg.data.io import read_image
    from fcnseg.inference.scale import resize_images, train_size
    from fcnseg.weights import Preprocess

    preprocess = Preprocess.from_dict(meta["preprocess"])
    size = train_size(meta.get("train_scale"))
    out = []
    for path in files:
        image = read_image(path)[None]
        h, w = image.shape[-2:]
        target = size or _capped((h, w))
        x = resize_images(image, target) if target != (h, w) else image.float() / 255
        out.append(preprocess(x).numpy().astype(np.float32))
    return out


def _capped(size: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    k = min(1.0, MAX_SIDE / max(h, w))
    return max(1, round(h * k)), max(1, round(w * k))


def quantize_int8(
    model: Path, out: Path, meta: dict[str, Any], source: str | Path, files: list[Path]
) -> dict[str, Any]:
    """Quantize the float ONNX ``model`` (written by :func:`fcnseg.export.export_model`, whose
    metadata ``meta`` it carries) into ``out``, calibrated on the images ``files`` (of the
    folder ``source``: :func:`calibration_files`); ``out`` carries the same metadata plus
    ``fcnseg.precision`` (``"int8"``) and ``fcnseg.calibration`` (source, images, agreement).
    Returns the calibration record. Raises ValueError, writing nothing, when the labels agree
    on fewer than :data:`MIN_AGREEMENT` of the pixels."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs = calibration_inputs(files, meta)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feed = iter(inputs)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.feed, None)
            return None if x is None else {"images": x}

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:  # ONNX Runtime's advice: shape inference and graph optimisation (BN folding) first;
        # its symbolic shape inference cannot follow the crops' floor/ceil sizes: ONNX's only
        quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
    except Exception as err:  # protobuf, ONNX and ONNX Runtime raise many types
        log.warning("quantization pre-processing failed (%s); quantizing the graph as is", err)
        prepared = model
    staged = out.with_name(out.stem + ".int8.onnx")
    quantize_static(
        str(prepared),
        str(staged),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    agreement = _agreement(model, staged, inputs[:CHECK_IMAGES])
    if agreement < MIN_AGREEMENT:
        raise ValueError(
            f"the int8 model's labels agree with the float model's on only {agreement:.1%} of "
            f"the pixels of {min(len(inputs), CHECK_IMAGES)} calibration images (below "
            f"{MIN_AGREEMENT:.0%}); not written: calibrate on more or more typical images, or "
            "keep the float export"
        )
    record = {"source": str(source), "images": len(files), "agreement": round(agreement, 4)}
    proto = onnx.load(str(staged))
    keep = [p for p in proto.metadata_props if not p.key.startswith("fcnseg.")]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    props = {
        **_props(model),
        "fcnseg.precision": '"int8"',
        "fcnseg.calibration": json.dumps(record),
    }
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(out))
    return record


def _props(model: Path) -> dict[str, str]:
    import onnx

    proto = onnx.load(str(model), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("fcnseg.")}


def _agreement(reference: Path, quantized: Path, inputs: list[np.ndarray]) -> float:
    """Share of pixels whose argmax label is the same under both models, over ``inputs``."""
    import onnxruntime

    def session(path: Path) -> Any:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    a, b = session(reference), session(quantized)
    same = total = 0
    for x in inputs:
        want = torch.from_numpy(a.run(None, {"images": x})[0]).argmax(1)
        got = torch.from_numpy(b.run(None, {"images": x})[0]).argmax(1)
        same += int((want == got).sum())
        total += want.numel()
    return same / total
