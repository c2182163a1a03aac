"""`fcnseg serve` under concurrent load with garbage mixed in (the short version of
``benchmarks/serve_load.py``): every answer is 200 or a clean 400/413/415/503, the server lives."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


@pytest.mark.slow
def test_serve_holds_under_concurrent_load(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--workers", "4", "--requests", "8",
           "--max-concurrent", "1", "--max-queue", "1", "--out", str(tmp_path)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    result = json.loads((tmp_path / "serve_load.json").read_text())
    assert result["requests"] == 32
    assert result["unclean"] == 0 and result["server_alive"] and result["healthy_after"]
    assert set(result["status"]) <= {"200", "400", "413", "415", "503"}
    assert result["status"].get("200", 0) > 0
    # With one slot and one queue place, four clients must have been turned away at times.
    assert result["status"].get("503", 0) > 0
    assert result["server_peak_rss_mb"] < 4096
