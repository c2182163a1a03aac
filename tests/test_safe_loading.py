"""No code runs from a run folder: a training state is read with ``weights_only=True`` and only
numpy's RNG state allowed beyond tensors and plain values; a crafted state file is refused
before any of it is built, while fcnseg's own states (with the numpy RNG state) load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fcnseg import checkpoint as ckpt


class _Creates:
    """Unpickling this creates a file: what a hostile state file could do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (open, (str(self.target), "w"))


def test_crafted_state_file_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    state = tmp_path / "last.state.pt"
    torch.save({"iteration": 3, "payload": _Creates(target)}, state)
    assert not target.exists()
    with pytest.raises(ckpt.CheckpointError, match="asks to build objects") as err:
        ckpt.load_state(state)
    assert str(state) in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()


def test_own_state_with_numpy_rng_loads_exactly(tmp_path: Path) -> None:
    from fcnseg.engine.checkpointer import rng_state

    state = {"iteration": 7, "rng": rng_state(), "optimizer": {"lr": 0.1, "m": torch.ones(3)}}
    ckpt.save_state(tmp_path / "s.pt", state)
    back = ckpt.load_state(tmp_path / "s.pt")
    assert back["iteration"] == 7 and torch.equal(back["optimizer"]["m"], torch.ones(3))
    name, keys, *rest = back["rng"]["numpy"]
    want = np.random.get_state()
    assert name == want[0] and np.array_equal(keys, want[1]) and tuple(rest) == want[2:]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("fcnseg.classes", "__import__('os').system('touch x')", "is not valid JSON"),
        ("fcnseg.classes", '{"a": 1}', "is not a list of class names"),
        ("fcnseg.palette", "[[0, 0, 999]]", "is not a list of RGB triples"),
    ],
)
def test_hostile_onnx_metadata_is_a_clear_error(
    key: str, value: str, expected: str, tmp_path: Path, make_fcn_checkpoint
) -> None:
    """ONNX metadata is parsed as JSON, never evaluated, and checked: a malformed or hostile
    value is one line naming the file and the key, from the CLI too."""
    onnx = pytest.importorskip("onnx")
    from fcnseg.cli import main
    from fcnseg.export import export_model, read_onnx_metadata

    model = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["a", "b"],
                                palette=[[0, 0, 0], [255, 0, 0]])  # fmt: skip
    path = export_model(model, tmp_path / "m.onnx", sample_size=(32, 32))
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save_model(proto, str(path))
    with pytest.raises(ValueError, match=expected):
        read_onnx_metadata(path)
    with pytest.raises(SystemExit) as stop:
        main(["predict", str(path), str(tmp_path), "-o", str(tmp_path / "out"), "--no-progress"])
    message = str(stop.value.code)
    assert message.startswith("fcnseg predict: ") and str(path) in message and "\n" not in message
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"classes": "eval('1')"}, "metadata classes is not valid JSON"),
        ({"palette": "[[1, 2]]"}, "metadata palette is not a list of RGB triples"),
        ({"model": None}, "fcnseg metadata lacks model"),
    ],
)
def test_hostile_checkpoint_metadata_is_a_clear_error(
    change: dict, expected: str, tmp_path: Path, make_fcn_checkpoint
) -> None:
    """A checkpoint's safetensors metadata is JSON, parsed and checked: an altered value or a
    missing key is a CheckpointError naming the file, not a traceback."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["a", "b"],
                               palette=[[0, 0, 0], [255, 0, 0]])  # fmt: skip
    with safe_open(str(good), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = dict(f.metadata())
    for key, value in change.items():
        meta.pop(key) if value is None else meta.__setitem__(key, value)
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(ckpt.CheckpointError, match=expected) as err:
        ckpt.load_checkpoint(bad)
    assert str(bad) in str(err.value)
