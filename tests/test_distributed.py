"""torchrun: 2 CPU processes (gloo) evaluate to the same metrics as one, and DDP trains."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fcnseg.config import load_config
from fcnseg.engine.evaluate import run_evaluation
from fcnseg.engine.trainer import Trainer

pytestmark = pytest.mark.slow

TINY = [
    "data.options={num_images: 10, size: [48, 64]}",
    "data.batch_size=2",
    "data.val_batch_size=3",
    "train.iterations=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "fcnseg", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_distributed_eval_equals_single_process(tmp_path: Path) -> None:
    """The val set (10 images, an uneven split over 2 ranks) is counted exactly once: the
    all-reduced confusion matrix gives the same four metrics as one process."""
    Trainer(load_config("fcn8s_resnet18_synthetic", TINY), tmp_path / "run", progress=False).train()
    one = run_evaluation(tmp_path / "run", out_dir=tmp_path / "one", progress=False, device="cpu")
    _torchrun("eval", str(tmp_path / "run"), "-o", str(tmp_path / "two"), "--no-progress",
              "--device", "cpu", cwd=tmp_path)  # fmt: skip
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert two[key] == pytest.approx(one[key], abs=1e-12), key
    assert two["images"] == 10


def test_distributed_training_runs(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m fcnseg train …` (DDP, gloo) trains and checkpoints."""
    sets = [arg for item in TINY for arg in ("--set", item)]
    _torchrun("train", "fcn8s_resnet18_synthetic", "-o", str(tmp_path / "ddp"), "--no-progress",
              "--set", "train.device=cpu", *sets, cwd=tmp_path)  # fmt: skip
    assert (tmp_path / "ddp" / "checkpoints" / "last.safetensors").is_file()
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert 0 <= metrics["mean_iu"] <= 1
