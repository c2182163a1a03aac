"""The two layouts of FCN weights people have: the reference's (converted Caffe models, layers
``conv1_1 … fc7, score_fr, score_pool4, upscore2 …``) and torchvision's FCN-ResNet
(``backbone.*``, ``classifier.*``, ``aux_classifier.*``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch

from fcnseg.models.caffe import CAFFE_PREPROCESS, convert_caffe_state
from fcnseg.models.fcn import FCN
from fcnseg.models.pretrained.registry import Layout, register_layout
from fcnseg.models.registry import build_model, model_spec
from fcnseg.weights import IMAGENET_TORCHVISION, Preprocess

__all__ = ["REFERENCE", "TORCHVISION", "check_fits"]

State = Mapping[str, torch.Tensor]


def check_fits(state: State, spec: dict[str, Any], source: str) -> None:
    """Raise a ``ValueError`` naming ``source`` unless ``state`` has exactly the tensors (names
    and shapes) of the model ``spec`` describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        own = build_model(spec).state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
             for k, v in own.items() if k in state and state[k].shape != v.shape]  # fmt: skip
    problems = [f"{what} {items[:4]}{' …' if len(items) > 4 else ''}"
                for what, items in (("missing", missing), ("unexpected", unexpected),
                                    ("shapes differ:", wrong)) if items]  # fmt: skip
    if problems:
        raise ValueError(f"{source} does not fit {spec['name']} ({'; '.join(problems)})")


# --- the reference's layout (pytorch-fcn's conversion of the Caffe models) -----------------


def _layer(key: str) -> str:
    return key.rpartition(".")[0]


def _reference_detect(state: State) -> bool:
    layers = {_layer(k) for k in state}
    return {"conv1_1", "score_fr"} <= layers


def _reference_spec(state: State) -> dict[str, Any]:
    layers = {_layer(k) for k in state}
    score = next(v for k, v in state.items() if _layer(k) == "score_fr" and v.dim() > 1)
    name = "fcn8s" if "score_pool3" in layers else "fcn16s" if "score_pool4" in layers else "fcn32s"
    # The reference froze its bilinear upsamplers (its README's FAQ); at-once FCN-8s differs
    # only by fixed skip scales, which no tensor records (see the registry's entry for it).
    return model_spec(name, backbone="vgg16", num_classes=int(score.shape[0]), mode="caffe",
                      learnable_upsampling=False)  # fmt: skip


def _reference_convert(state: dict[str, torch.Tensor], spec: dict[str, Any]) -> dict[str, Any]:
    with torch.device("meta"):
        model = build_model(spec)
    converted, _ = convert_caffe_state(cast(FCN, model), state)
    return converted


REFERENCE = register_layout(
    Layout(
        name="reference",
        description="the reference FCNs converted from Caffe (conv1_1 … fc7, score_fr, …)",
        detect=_reference_detect,
        spec=_reference_spec,
        convert=_reference_convert,
        preprocess=CAFFE_PREPROCESS,
    )
)


# --- torchvision's FCN-ResNet ---------------------------------------------------------------

#: Bottleneck blocks in ``layer3`` → ResNet depth.
_DEPTHS = {6: 50, 23: 101}


def _torchvision_detect(state: State) -> bool:
    return any(k.startswith("classifier.") for k in state) and any(
        k.startswith("backbone.layer4.") for k in state
    )


def _torchvision_spec(state: State) -> dict[str, Any]:
    blocks = {k.split(".")[2] for k in state if k.startswith("backbone.layer3.")}
    if len(blocks) not in _DEPTHS:
        n = len(blocks)
        raise ValueError(f"a torchvision FCN with {n} blocks in layer3 is no ResNet-50/101")
    if "classifier.4.weight" not in state:  # FCNHead's last layer: the class scores
        raise ValueError("a torchvision FCN without classifier.4.weight (its score layer)")
    aux = any(k.startswith("aux_classifier.") for k in state)
    return model_spec("fcn_resnet", num_classes=int(state["classifier.4.weight"].shape[0]),
                      depth=_DEPTHS[len(blocks)], aux=aux)  # fmt: skip


def _torchvision_convert(state: dict[str, torch.Tensor], spec: dict[str, Any]) -> dict[str, Any]:
    # Same names as torchvision (fcnseg's fcn_resnet is torchvision's FCN); without the
    # auxiliary head in the spec, its tensors are not needed for inference or fine-tuning.
    if spec.get("aux"):
        return dict(state)
    return {k: v for k, v in state.items() if not k.startswith("aux_classifier.")}


TORCHVISION = register_layout(
    Layout(
        name="torchvision",
        description="torchvision's fcn_resnet50/101 (backbone.*, classifier.*)",
        detect=_torchvision_detect,
        spec=_torchvision_spec,
        convert=_torchvision_convert,
        preprocess=Preprocess(IMAGENET_TORCHVISION.mean, IMAGENET_TORCHVISION.std).to_dict(),
    )
)
