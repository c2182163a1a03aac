"""caffe: the reference layout (pad 100, derived crops) and loading its converted weights."""

from __future__ import annotations

import pytest
import torch

from fcnseg.models import FCN, build_backbone, fcn8s
from fcnseg.models.caffe import _VGG_CONVS, load_caffe_weights


def _reference_state(model: FCN, *, flat_fc6: bool) -> dict[str, torch.Tensor]:
    """A random state dict in the reference's naming and shapes (Caffe deconvs are C×C×k×k)."""
    g = torch.Generator().manual_seed(0)
    stages = model.backbone.stages
    state: dict[str, torch.Tensor] = {}
    for name, stage, idx in _VGG_CONVS:
        conv = getattr(stages[stage], str(idx))  # slices keep torchvision's indices
        state[f"{name}.weight"] = torch.randn(conv.weight.shape, generator=g)
        state[f"{name}.bias"] = torch.randn(conv.bias.shape, generator=g)
    fc6, fc7 = stages["fc6"][0], stages["fc7"][0]
    w6 = torch.randn(fc6.weight.shape, generator=g)
    state["fc6.weight"] = w6.flatten(1) if flat_fc6 else w6
    state["fc6.bias"] = torch.randn(fc6.bias.shape, generator=g)
    state["fc7.weight"] = torch.randn(fc7.weight.shape, generator=g)
    state["fc7.bias"] = torch.randn(fc7.bias.shape, generator=g)
    for name, layer in [("score_fr", model.score_fr), *model.scorers.items()]:
        state[f"{name}.weight"] = torch.randn(layer.weight.shape, generator=g)
        state[f"{name}.bias"] = torch.randn(layer.bias.shape, generator=g)
    c = model.num_classes
    final = {0: "upscore", 1: "upscore16", 2: "upscore8"}[len(model.fusions)]
    for name, layer in [*model.upsamplers.items(), (final, model.upscore)]:
        k = layer.kernel_size[0]
        full = torch.zeros(c, c, k, k)
        full[torch.arange(c), torch.arange(c)] = torch.rand(c, k, k, generator=g)
        state[f"{name}.weight"] = full
    return state


def test_caffe_reference_weights_load_into_place_and_run_500() -> None:
    """Reference-named tensors land in the right layers (fc6 reshaped to 4096×512×7×7, deconv
    diagonals into the per-class upsamplers) and the caffe-mode FCN-8s runs on 500×500."""
    model = fcn8s(backbone="vgg16", num_classes=21, mode="caffe").eval()
    assert model.crops == {"score_pool4c": 5, "score_pool3c": 9, "score": 31}
    ref = _reference_state(model, flat_fc6=True)
    used = load_caffe_weights(model, ref)
    assert set(used) == set(ref)
    stages = model.backbone.stages
    torch.testing.assert_close(stages["pool1"][0].weight, ref["conv1_1.weight"])
    torch.testing.assert_close(stages["pool3"].get_submodule("12").weight, ref["conv3_2.weight"])
    torch.testing.assert_close(stages["pool5"].get_submodule("28").bias, ref["conv5_3.bias"])
    assert stages["fc6"][0].weight.shape == (4096, 512, 7, 7)
    torch.testing.assert_close(stages["fc6"][0].weight, ref["fc6.weight"].view(4096, 512, 7, 7))
    torch.testing.assert_close(stages["fc7"][0].weight, ref["fc7.weight"])
    torch.testing.assert_close(model.scorers["score_pool3"].weight, ref["score_pool3.weight"])
    diag = ref["upscore8.weight"][torch.arange(21), torch.arange(21)]
    torch.testing.assert_close(model.upscore.weight[:, 0], diag)
    diag2 = ref["upscore2.weight"][torch.arange(21), torch.arange(21)]
    torch.testing.assert_close(model.upsamplers["upscore2"].weight[:, 0], diag2)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 500, 500))
    assert out.shape == (1, 21, 500, 500) and torch.isfinite(out).all()


def test_caffe_blob_order_keys_and_errors() -> None:
    """Caffe blob names (``conv1_1.0`` / ``.1``) map to weight / bias; unknown keys and a
    wrong number of classes are reported by name."""
    model = FCN(build_backbone("vgg16", mode="caffe", width=1 / 16), 5, skips=1, mode="caffe")
    ref = _reference_state(model, flat_fc6=False)
    blobs = {k.replace(".weight", ".0").replace(".bias", ".1"): v for k, v in ref.items()}
    load_caffe_weights(model, blobs)
    torch.testing.assert_close(
        model.backbone.stages["pool2"].get_submodule("7").weight, ref["conv2_2.weight"]
    )
    torch.testing.assert_close(model.scorers["score_pool4"].bias, ref["score_pool4.bias"])
    with pytest.raises(ValueError, match="conv9_9"):
        load_caffe_weights(model, {"conv9_9.weight": torch.zeros(1)})
    wrong = dict(ref)
    wrong["score_fr.weight"] = torch.zeros(21, *ref["score_fr.weight"].shape[1:])
    with pytest.raises(ValueError, match=r"score_fr\.weight"):
        load_caffe_weights(model, wrong)


def test_caffe_mode_is_vgg16_only() -> None:
    with pytest.raises(ValueError, match="exact"):
        build_backbone("resnet18", mode="caffe")


def test_caffe_weights_set_the_reference_preprocess() -> None:
    """Loading reference weights installs the reference's input (BGR, 0–255, ILSVRC mean in
    B, G, R order): an RGB image through ``model.preprocess`` gives what the same weights give
    on the BGR mean-subtracted 0–255 image fed directly, as the reference fed its nets."""
    model = FCN(build_backbone("vgg16", mode="caffe", width=1 / 16), 5, skips=2, mode="caffe")
    assert model.preprocess.channel_order == "RGB"  # torchvision's ImageNet until loaded
    load_caffe_weights(model, _reference_state(model, flat_fc6=False))
    model.eval()
    assert model.backbone.preprocess is model.preprocess
    gen = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (2, 3, 37, 45), generator=gen, dtype=torch.uint8)
    mean_bgr = torch.tensor([104.00698793, 116.66876762, 122.67891434]).view(1, 3, 1, 1)
    caffe_input = rgb.flip(1).float() - mean_bgr  # what the reference's data layer computed
    with torch.no_grad():
        ours = model(model.preprocess(rgb))
        reference = model(caffe_input)
        rgb_order = model(rgb.float() - mean_bgr)  # control: the channels left in RGB order
    torch.testing.assert_close(model.preprocess(rgb), caffe_input, rtol=0, atol=1e-4)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-4)
    assert not torch.allclose(rgb_order, reference, rtol=1e-3, atol=1e-2)
    # float input in [0, 1] means the same image
    torch.testing.assert_close(model.preprocess(rgb / 255.0), caffe_input, rtol=0, atol=1e-4)
