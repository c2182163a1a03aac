"""Tests for :mod:`fcnseg.summary`."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from torch import nn

from fcnseg.summary import LayerRow, Summary, count_parameters, parse_input_shape, summarize


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- parameter counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "stride", "expected", "formatted"),
    [
        (20, 10, 102_416, "102,416"),
        (48, 24, 589_840, "589,840"),
        (80, 40, 1_638_416, "1,638,416"),
    ],
)
def test_conv_transpose_param_counts(kernel: int, stride: int, expected: int, formatted: str):
    layer = nn.ConvTranspose2d(16, 16, kernel_size=kernel, stride=stride, bias=True)
    assert count_parameters(layer) == (expected, expected)

    s = summarize(layer, (16, 4, 4))
    assert s.total_params == expected
    assert s.trainable_params == expected
    assert s.non_trainable_params == 0
    assert [(r.kind, r.params) for r in s.rows] == [("ConvTranspose2d", expected)]
    side = (4 - 1) * stride + kernel
    assert s.output_shape == (1, 16, side, side)

    table = s.table()
    assert formatted in table
    assert f"Total params: {formatted}" in table
    assert f"Trainable params: {formatted}" in table
    assert "Non-trainable params: 0" in table


def test_vgg16_total_params():
    model = torchvision.models.vgg16(weights=None)
    s = summarize(model, (3, 224, 224))
    assert s.device == "meta"
    assert s.total_params == 138_357_544 == _numel(model)
    assert s.trainable_params == 138_357_544
    assert "138,357,544" in s.table()
    assert s.output_shape == (1, 1000)
    assert sum(r.params for r in s.rows) == s.total_params
    assert sum(r.kind == "Conv2d" for r in s.rows) == 13
    assert [r.output_shape for r in s.rows if r.kind == "MaxPool2d"][-1] == (1, 512, 7, 7)


# --- shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_output_shapes_match_real_forward(device: str):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 4, kernel_size=3, padding=2),
    )
    expected = []
    x = torch.randn(1, 3, 31, 33)
    with torch.no_grad():
        for layer in model:
            x = layer(x)
            expected.append(tuple(x.shape))

    s = summarize(model, (3, 31, 33), device=device)
    assert s.device == device
    assert [r.name for r in s.rows] == ["0", "1", "2", "3"]
    assert [r.kind for r in s.rows] == ["Conv2d", "ReLU", "MaxPool2d", "Conv2d"]
    assert [r.output_shape for r in s.rows] == expected
    assert expected[2] == (1, 8, 14, 15)  # sanity: the real intermediate shape
    assert s.output_shape == expected[-1]
    assert s.input_shape == (3, 31, 33)
    assert [r.params for r in s.rows] == [3 * 8 * 9 + 8, 0, 0, 8 * 4 * 9 + 4]


class _NoMetaKernel(nn.Module):
    """Data-dependent forward (``.item()``) that cannot run on meta tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 5, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * float(y.abs().sum().item() >= 0)


def test_falls_back_to_cpu_when_meta_fails():
    model = _NoMetaKernel()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    s = summarize(model, (3, 10, 12))
    assert s.device == "cpu"
    assert s.output_shape == (1, 5, 8, 10)
    assert [(r.name, r.output_shape) for r in s.rows] == [("conv", (1, 5, 8, 10))]
    assert s.total_params == _numel(model)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_meta_built_model_falls_back_to_cpu_too():
    """A model built on the meta device (as ``fcnseg summary`` builds them) has no values to
    copy: the CPU retry runs on uninitialised tensors, so it gets the shapes, or the model's
    own error for a bad input (not "cannot copy out of meta tensor")."""
    with torch.device("meta"):
        model = _NoMetaKernel()
    s = summarize(model, (3, 10, 12))
    assert s.device == "cpu" and s.output_shape == (1, 5, 8, 10)
    with torch.device("meta"):
        conv = nn.Conv2d(3, 4, kernel_size=3)
    with pytest.raises(RuntimeError, match="channels"):
        summarize(conv, (5, 8, 8))


def test_errors_propagate_when_cpu_also_fails():
    model = nn.Conv2d(3, 4, kernel_size=3)
    with pytest.raises(RuntimeError):
        summarize(model, (5, 8, 8))  # wrong channel count fails on meta and on CPU


def test_dict_and_tuple_outputs():
    class DictHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, kernel_size=1)

        def forward(self, x: torch.Tensor) -> dict[str, object]:
            y = self.conv(x)
            return {"meta": "not a tensor", "out": y, "aux": y[:, :1]}

    class NoTensor(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[str, int]:
            return ("shape", x.dim())

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = DictHead()
            self.tail = NoTensor()

        def forward(self, x: torch.Tensor) -> tuple[str, dict[str, object]]:
            out = self.head(x)
            self.tail(x)
            return ("label", out)

    s = summarize(Wrapper(), (3, 6, 7))
    rows = {r.name: r for r in s.rows}
    assert list(rows) == ["head.conv", "tail"]
    assert rows["tail"].output_shape is None
    assert s.output_shape == (1, 2, 6, 7)
    assert "-" in s.table()


# --- counting rules ------------------------------------------------------------------------


def test_module_called_twice_appears_twice_params_once():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, kernel_size=3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(self.act(self.conv(x))))

    model = Twice()
    s = summarize(model, (4, 5, 5))
    assert [r.name for r in s.rows] == ["conv", "act", "conv", "act"]
    assert [r.params for r in s.rows] == [4 * 4 * 9 + 4, 0, 0, 0]
    assert s.total_params == _numel(model) == 4 * 4 * 9 + 4


def test_tied_weights_counted_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Linear(6, 6, bias=False)
            self.dec = nn.Linear(6, 6, bias=True)
            self.dec.weight = self.enc.weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.dec(self.enc(x))

    model = Tied()
    s = summarize(model, (6,))
    assert s.total_params == _numel(model) == 36 + 6
    assert [(r.name, r.params) for r in s.rows] == [("enc", 36), ("dec", 6)]


def test_direct_params_on_non_leaf_module_get_own_row():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1, 3, 1, 1))
            self.conv = nn.Conv2d(3, 3, kernel_size=1)
            self.unused = nn.Linear(2, 2)  # never called: no row, but counted in totals

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) * self.scale

    model = nn.Sequential(Scaled(), nn.ReLU())
    s = summarize(model, (3, 4, 4))
    assert [(r.name, r.kind, r.params) for r in s.rows] == [
        ("0.conv", "Conv2d", 12),
        ("0", "Scaled", 3),
        ("1", "ReLU", 0),
    ]
    assert s.total_params == _numel(model) == 15 + 6


def test_frozen_params_and_original_model_untouched():
    model = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 2, kernel_size=1),
    )
    for p in model[0].parameters():
        p.requires_grad_(False)
    model[1].eval()  # mixed train/eval flags must survive as they were
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]

    s = summarize(model, (3, 9, 9))

    frozen = 3 * 8 * 9 + 8
    total = _numel(model)
    assert s.total_params == total == frozen + 16 + 8 * 2 + 2
    assert s.non_trainable_params == frozen
    assert s.trainable_params == total - frozen
    assert count_parameters(model) == (total, total - frozen)
    assert (s.rows[0].params, s.rows[0].trainable) == (frozen, 0)
    assert (s.rows[1].params, s.rows[1].trainable) == (16, 16)
    assert f"Non-trainable params: {frozen:,}" in s.table()

    assert [m.training for m in model.modules()] == flags
    assert model.training
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(b.device.type == "cpu" for b in model.buffers())
    assert [p.requires_grad for p in model[0].parameters()] == [False, False]
    assert all(not m._forward_hooks for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_to_dict_is_json_serialisable():
    s = summarize(nn.Sequential(nn.Linear(4, 3), nn.Tanh()), (4,))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["total_params"] == 15
    assert d["input_shape"] == [4]
    assert d["output_shape"] == [1, 3]
    assert d["rows"][0] == {
        "name": "0",
        "kind": "Linear",
        "output_shape": [1, 3],
        "params": 15,
        "trainable": 15,
    }
    assert isinstance(s, Summary)
    assert isinstance(s.rows[0], LayerRow)


def test_table_is_fixed_width():
    s = summarize(nn.Sequential(nn.Conv2d(1, 1000, kernel_size=1), nn.ReLU()), (1, 3, 3))
    lines = s.table().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Layer (name)"))
    rule = lines[header - 1]
    body = lines[header + 2 : header + 4]
    assert set(rule) == {"="}
    assert all(len(line) == len(rule) for line in [lines[header], *body])
    assert body[0].split() == ["0", "Conv2d", "(1,", "1000,", "3,", "3)", "2,000"]
    assert "Total params: 2,000" in lines


def test_rejects_bad_input_shape_argument():
    with pytest.raises(ValueError, match="positive ints"):
        summarize(nn.ReLU(), (3, 0, 4))


# --- parse_input_shape ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3x500x500", (3, 500, 500)),
        ("3,500,500", (3, 500, 500)),
        (" 3 X 224 x 224 ", (3, 224, 224)),
        ("(3, 32, 32)", (3, 32, 32)),
        ("[1,2]", (1, 2)),
        ("10", (10,)),
    ],
)
def test_parse_input_shape_good(text: str, expected: tuple[int, ...]):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("3xax500", "'a'"),
        ("3x0x500", "'0'"),
        ("3x-1x5", "'-1'"),
        ("3x500x", "''"),
        ("3.5x4", "'3.5'"),
        ("3;500;500", "'3;500;500'"),
    ],
)
def test_parse_input_shape_bad(text: str, bad: str):
    with pytest.raises(ValueError) as info:
        parse_input_shape(text)
    message = str(info.value)
    assert bad in message
    assert repr(text) in message
    assert "3x500x500" in message


@pytest.mark.parametrize("text", ["", "   ", "()"])
def test_parse_input_shape_empty(text: str):
    with pytest.raises(ValueError, match="empty"):
        parse_input_shape(text)
