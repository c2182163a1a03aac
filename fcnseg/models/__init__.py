"""FCN models, backbones and the paper's building blocks; U-Net for comparison."""

from torch import nn

from fcnseg.models.backbones import BACKBONES, Backbone, build_backbone
from fcnseg.models.fcn import FCN, fcn8s, fcn16s, fcn32s
from fcnseg.models.surgery import convolutionalize, transplant
from fcnseg.models.unet import UNet, unet
from fcnseg.models.upsample import bilinear_deconv, bilinear_kernel

__all__ = [
    "BACKBONES",
    "FCN",
    "FCNS",
    "MODELS",
    "Backbone",
    "UNet",
    "bilinear_deconv",
    "bilinear_kernel",
    "build_backbone",
    "build_model",
    "convolutionalize",
    "fcn8s",
    "fcn16s",
    "fcn32s",
    "transplant",
    "unet",
]

#: Builders by name, as the command line and configs refer to them.
FCNS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}
MODELS = {**FCNS, "unet": unet}


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build ``fcn32s`` / ``fcn16s`` / ``fcn8s`` / ``unet`` by name with the builders' keyword
    arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)  # type: ignore[operator]
