"""FCN models, backbones and the paper's building blocks."""

from fcnseg.models.backbones import BACKBONES, Backbone, build_backbone
from fcnseg.models.fcn import FCN, fcn8s, fcn16s, fcn32s
from fcnseg.models.surgery import convolutionalize, transplant
from fcnseg.models.upsample import bilinear_deconv, bilinear_kernel

__all__ = [
    "BACKBONES",
    "FCN",
    "Backbone",
    "bilinear_deconv",
    "bilinear_kernel",
    "build_backbone",
    "convolutionalize",
    "fcn8s",
    "fcn16s",
    "fcn32s",
    "transplant",
]
