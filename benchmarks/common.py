"""Helpers shared by the benchmark scripts: machine facts, timing, writing results."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"


def shared_root(arg: str | Path | None = None) -> Path:
    """The shared data and weights folder: ``arg``, else ``$FCNSEG_SHARED``, else ``../shared``
    beside the repository."""
    return Path(arg or os.environ.get("FCNSEG_SHARED", ROOT.parent / "shared")).expanduser()


def machine() -> dict[str, Any]:
    """CPU model, threads, versions; the GPU too when there is one."""
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def command() -> str:
    """How this script was run, for the record."""
    return " ".join([".venv/bin/python", *sys.argv])


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_ms(
    fn: Callable[[], object], *, repeats: int, warmup: int = 1, device: str = "cpu"
) -> list[float]:
    """Wall time of ``fn()`` in ms, ``repeats`` times after ``warmup`` calls (synchronised)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(out: Path, name: str, result: dict[str, Any], markdown: list[str]) -> None:
    """``out/NAME.json`` and ``out/NAME.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(markdown) + "\n")


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
