"""The ``fcnseg`` command line: summary and geometry."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fcnseg.cli import main


def test_cli_summary_fcn8s_vgg16(capsys: pytest.CaptureFixture[str]) -> None:
    """The paper's FCN-8s/VGG16 (21 classes): ≈134M parameters, 500×500 in, 500×500 out."""
    assert main(["summary", "fcn8s", "--backbone", "vgg16", "--num-classes", "21"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 134,368,799" in out
    assert "(1, 21, 500, 500)" in out
    assert "score_pool3" in out and "upscore" in out


def test_cli_geometry_caffe_derives_reference_crops(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["geometry", "fcn8s", "--mode", "caffe"]) == 0
    out = capsys.readouterr().out
    assert "score_pool4c=5, score_pool3c=9, score=31" in out


def test_cli_errors_name_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit, match="--input"):
        main(["summary", "fcn32s", "--input", "3xax500"])
    with pytest.raises(SystemExit, match="unknown backbone 'vgg19'"):
        main(["summary", "fcn32s", "--backbone", "vgg19"])
    with pytest.raises(SystemExit, match="fcn8s only"):
        main(["summary", "fcn16s", "--at-once"])


def test_cli_entry_point_runs_as_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fcnseg", "--help"], capture_output=True, text=True, check=True
    )
    assert "summary" in proc.stdout and "geometry" in proc.stdout
