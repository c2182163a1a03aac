"""Inference: class probabilities for any image size, overlap-tiled for huge images, with TTA
and optional dense-CRF refinement, all chosen by one :class:`InferenceOptions`.

    from fcnseg.inference import InferenceOptions, Predictor
    predictor = Predictor.from_checkpoint("runs/camvid")
    labels = predictor.predict(image)          # H×W class indices; image: 3×H×W uint8 or [0, 1]
    labels = predictor.predict(big, InferenceOptions(tile=512, overlap=64))

Modules: :mod:`~fcnseg.inference.options` (the options), :mod:`~fcnseg.inference.predictor`
(the Predictor, ONNX models), :mod:`~fcnseg.inference.tiling` (seam-free blended tiles, one
strip in memory), :mod:`~fcnseg.inference.tta` (test-time augmentation) and
:mod:`~fcnseg.inference.files` (``fcnseg predict``).
"""

from fcnseg.inference.files import expand_inputs, predict_paths
from fcnseg.inference.options import TTA_SCALES, InferenceOptions
from fcnseg.inference.predictor import OnnxModel, Predictor
from fcnseg.inference.tiling import blend_rows, tile_positions, tile_weight
from fcnseg.inference.tta import tta_probabilities

__all__ = [
    "TTA_SCALES",
    "InferenceOptions",
    "OnnxModel",
    "Predictor",
    "blend_rows",
    "expand_inputs",
    "predict_paths",
    "tile_positions",
    "tile_weight",
    "tta_probabilities",
]
