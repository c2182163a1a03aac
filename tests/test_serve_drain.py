"""A real SIGTERM to a real server: the admitted request finishes and gets its answer, ``/ready``
and new predictions answer 503 meanwhile, and the process exits once drained — or, with a
request that outlives ``drain_timeout``, within that bound anyway. Requests go to 127.0.0.1."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

SERVER = """
import sys, time
import torch
from torch import nn
from fcnseg.inference import Predictor
from fcnseg.models import SegmentationModel
from fcnseg.serve import run_server

class Slow(SegmentationModel):
    def __init__(self):
        super().__init__()
        self.preprocess = nn.Identity()

    def forward(self, x):
        time.sleep(float(sys.argv[1]))
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

run_server(Predictor(Slow(), ["a", "b"], [[0, 0, 0], [255, 0, 0]]), port=0,
           drain_timeout=float(sys.argv[2]), log_level="warning",
           on_ready=lambda url: print(url, flush=True))
"""


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 7, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _call(url: str, body: bytes | None = None) -> tuple[int, dict | bytes]:
    headers = {"Content-Type": "image/png"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as res:
            data = res.read()
            kind = res.headers.get("content-type", "")
            return res.status, json.loads(data) if "json" in kind else data
    except urllib.error.HTTPError as err:
        data = err.read()
        return err.code, json.loads(data) if data.startswith(b"{") else data


def _start(tmp_path: Path, seconds: float, drain: float) -> tuple[subprocess.Popen, str]:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    proc = subprocess.Popen([sys.executable, str(script), str(seconds), str(drain)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    url = proc.stdout.readline().strip()  # printed once the model is there and it listens
    assert url.startswith("http://127.0.0.1:"), (url, proc.stderr.read() if not url else "")
    return proc, url


def _in_flight(url: str) -> tuple[threading.Thread, list]:
    """A prediction sent from a thread, once the server reports it running."""
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(_safe_predict(url)))
    thread.start()
    for _ in range(200):  # bounded: 10 s
        if _call(url + "health")[1]["running"] == 1:
            return thread, answers
        time.sleep(0.05)
    raise AssertionError("the prediction never started")


def _safe_predict(url: str) -> tuple[int, object]:
    try:
        return _call(url + "predict", _png())
    except OSError as err:  # the connection closed under it
        return -1, err


def test_sigterm_drains_the_request_in_flight(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, seconds=2.0, drain=30.0)
    try:
        thread, answers = _in_flight(url)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for _ in range(100):  # /ready turns 503 at once, while the process still answers
            status, body = _call(url + "ready")
            if status == 503:
                break
            time.sleep(0.02)
        assert (status, body) == (503, {"ready": False, "reason": "shutting down"})
        status, body = _call(url + "predict", _png())
        assert status == 503 and "shutting down" in body["detail"]
        assert _call(url + "health")[0] == 200
        thread.join(30)
        status, labels = answers[0]
        assert status == 200 and labels.startswith(b"\x89PNG")  # the admitted one is answered
        assert proc.wait(timeout=20) == 0  # and the server exits once it has
        assert time.monotonic() - signalled < 15
    finally:
        proc.kill()
        proc.wait()


def test_drain_is_bounded_by_drain_timeout(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, seconds=120.0, drain=1.0)  # a request that would run 2 min
    try:
        thread, answers = _in_flight(url)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert proc.wait(timeout=30) == 0
        elapsed = time.monotonic() - signalled
        assert 1.0 <= elapsed < 10, elapsed  # the drain timeout, then uvicorn's 2 s grace
        thread.join(30)
        assert answers[0][0] in (-1, 500), answers  # cut off, not answered
        assert "drain timeout: stopping with 1 request(s) unanswered" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
