"""FCN models, backbones and the paper's building blocks; U-Net for comparison.

Every model is registered by name (:func:`register_model`) and built from a spec
(:func:`build_model`); see :mod:`fcnseg.models.registry`.
"""

from fcnseg.models.backbones import BACKBONES, Backbone, build_backbone
from fcnseg.models.base import SegmentationModel
from fcnseg.models.fcn import FCN, fcn8s, fcn16s, fcn32s
from fcnseg.models.registry import (
    MODELS,
    build_model,
    model_fields,
    model_spec,
    register_model,
    spec_differences,
)
from fcnseg.models.surgery import convolutionalize, transplant
from fcnseg.models.unet import UNet, unet
from fcnseg.models.upsample import bilinear_deconv, bilinear_kernel

__all__ = [
    "BACKBONES",
    "FCN",
    "FCNS",
    "MODELS",
    "Backbone",
    "SegmentationModel",
    "UNet",
    "bilinear_deconv",
    "bilinear_kernel",
    "build_backbone",
    "build_model",
    "convolutionalize",
    "fcn8s",
    "fcn16s",
    "fcn32s",
    "model_fields",
    "model_spec",
    "register_model",
    "spec_differences",
    "transplant",
    "unet",
]

#: The FCN builders by name (the paper's three nets).
FCNS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}
