"""FCN models, backbones and the paper's building blocks."""

from fcnseg.models.backbones import BACKBONES, Backbone, build_backbone
from fcnseg.models.fcn import FCN, fcn8s, fcn16s, fcn32s
from fcnseg.models.surgery import convolutionalize, transplant
from fcnseg.models.upsample import bilinear_deconv, bilinear_kernel

__all__ = [
    "BACKBONES",
    "FCN",
    "MODELS",
    "Backbone",
    "bilinear_deconv",
    "bilinear_kernel",
    "build_backbone",
    "build_model",
    "convolutionalize",
    "fcn8s",
    "fcn16s",
    "fcn32s",
    "transplant",
]

#: Builders by name, as the command line and configs refer to them.
MODELS = {"fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s}


def build_model(name: str, **kwargs: object) -> FCN:
    """Build ``fcn32s`` / ``fcn16s`` / ``fcn8s`` by name with the builders' keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)  # type: ignore[operator]
