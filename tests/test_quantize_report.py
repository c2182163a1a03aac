"""benchmarks/quantize.py's arithmetic: each engine is measured against the peak of its own
precision (the fastest probe), speed-ups against PyTorch fp32 of the same model/size/batch, and
mean IU drops against fp32 on the same data; a failed engine stays in the table as its error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from quantize_report import accuracy_drops, enrich, markdown, peaks

RESULT = {
    "command": "python benchmarks/quantize.py",
    "machine": {"cpu": "test", "threads": 2, "torch": "x", "python": "y"},
    "peaks": [
        {"probe": "conv-fp32-torch", "precision": "fp32", "ms": 2.0, "flops_per_s": 100e9},
        {"probe": "conv-fp32-ort", "precision": "fp32", "ms": 1.0, "flops_per_s": 200e9},
        {"probe": "conv-int8-ort", "precision": "int8", "ms": 1.0, "flops_per_s": 800e9},
        {"args": ["peak", "--probe", "conv-bf16-openvino"], "error": "not installed"},
    ],
    "speed": [
        {"engine": "torch-fp32", "model": "m", "size": "10x10", "batch": 2, "ms": 100.0,
         "gflops_per_image": 5.0},
        {"engine": "ort-int8", "model": "m", "size": "10x10", "batch": 2, "ms": 25.0,
         "gflops_per_image": 5.0},
        {"engine": "torchao-int8", "model": "m", "size": "10x10", "batch": 2,
         "error": "RuntimeError: no primitive", "gflops_per_image": 5.0},
    ],
    "accuracy": [
        {"data": "D", "precision": "fp32", "mean_iu": 0.60, "source": "run", "pixel_acc": 0.9,
         "mean_acc": 0.8, "fw_iu": 0.7, "per_class_iu": {"a": 0.5, "b": None}},
        {"data": "D", "precision": "int8", "mean_iu": 0.595, "source": "m.onnx", "pixel_acc": 0.9,
         "mean_acc": 0.8, "fw_iu": 0.7, "per_class_iu": {"a": 0.49, "b": None}},
    ],
}  # fmt: skip


def test_ratios_peaks_and_drops() -> None:
    assert peaks(RESULT) == {"fp32": 200e9, "int8": 800e9}
    fp32, int8, failed = enrich(RESULT)
    # 2 images × 5 GFLOP in 100 ms = 100 GFLOP/s: half the fp32 peak; 400 GOP/s: half of int8's
    assert fp32["gflop_per_s"] == pytest.approx(100) and fp32["pct_of_peak"] == pytest.approx(50)
    assert int8["pct_of_peak"] == pytest.approx(50)
    assert int8["speedup_vs_torch_fp32"] == pytest.approx(4.0)
    assert int8["images_per_s"] == pytest.approx(80)
    assert "pct_of_peak" not in failed
    assert accuracy_drops(RESULT) == {("D", "fp32"): 0.0, ("D", "int8"): pytest.approx(0.5)}


def test_page_shows_failures_and_absent_classes() -> None:
    page = "\n".join(markdown(RESULT))
    assert "| m | 10x10 | 2 | torchao-int8 | — | — | — | RuntimeError: no primitive |" in page
    assert "| ort-int8 (shipped) | 25.0 | 80.00 | 4.00 | 50% |" in page
    assert "not installed" in page
    assert "| int8 | 0.4900 | —" not in page and "| int8 | 0.490 | — |" in page
