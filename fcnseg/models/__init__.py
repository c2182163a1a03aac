"""FCN models, backbones and the paper's building blocks; torchvision's FCN-ResNet; U-Net.

Every model is registered by name (:func:`register_model`) and built from a spec
(:func:`build_model`); see :mod:`fcnseg.models.registry`.
"""

from fcnseg.models.backbones import BACKBONES, Backbone, build_backbone
from fcnseg.models.base import SegmentationModel
from fcnseg.models.fcn import FCN, fcn8s, fcn16s, fcn32s
from fcnseg.models.fcn_resnet import FCNResNet, fcn_resnet, load_torchvision_state_dict
from fcnseg.models.pretrained import load_pretrained, pretrained_state
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
    "FCNResNet",
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
    "fcn_resnet",
    "load_pretrained",
    "load_torchvision_state_dict",
    "model_fields",
    "model_spec",
    "pretrained_state",
    "register_model",
    "spec_differences",
    "transplant",
    "unet",
]

#: The FCN builders by name (the paper's three nets).
FCNS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}
