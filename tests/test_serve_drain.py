"""A real SIGTERM to a real server: the admitted request finishes and gets its answer, ``/ready``
and new predictions answer 503 meanwhile, and the process exits once drained — within
``drain_timeout`` when a request outlives it, and at once when the only inference left is one
whose client already had its 504. Requests go to 127.0.0.1 only."""

from __future__ import annotations

import io
import json
import select
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

#: A server whose model holds each inference until the file ``release`` exists (2 min at most).
SERVER = """
import logging, sys, time
from pathlib import Path
import torch
from torch import nn
from fcnseg.inference import Predictor
from fcnseg.models import SegmentationModel
from fcnseg.serve import ServeLimits, run_server

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
release = Path(sys.argv[1])

class Held(SegmentationModel):
    def __init__(self):
        super().__init__()
        self.preprocess = nn.Identity()

    def forward(self, x):
        for _ in range(1200):
            if release.exists():
                break
            time.sleep(0.1)
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

timeout = float(sys.argv[3]) if sys.argv[3] != "none" else None
run_server(Predictor(Held(), ["a", "b"], [[0, 0, 0], [255, 0, 0]]), port=0,
           limits=ServeLimits(timeout=timeout), drain_timeout=float(sys.argv[2]),
           log_level="warning", on_ready=lambda url: print(url, flush=True))
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


def _start(tmp_path: Path, drain: float, timeout: str = "none") -> tuple[subprocess.Popen, str]:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    argv = [sys.executable, str(script), str(tmp_path / "release"), str(drain), timeout]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)  # bounded start-up
    url = proc.stdout.readline().strip() if ready else ""
    if not url.startswith("http://127.0.0.1:"):
        proc.kill()
        raise AssertionError(f"the server did not start: {url!r} {proc.stderr.read()}")
    return proc, url


def _in_flight(url: str) -> tuple[threading.Thread, list]:
    """A prediction sent from a thread, once the server reports it running."""
    answers: list = []

    def send() -> None:
        try:
            answers.append(_call(url + "predict", _png()))
        except OSError as err:  # the connection closed under it
            answers.append((-1, err))

    thread = threading.Thread(target=send)
    thread.start()
    for _ in range(200):  # bounded: 10 s
        if _call(url + "health")[1]["running"] == 1:
            return thread, answers
        time.sleep(0.05)
    raise AssertionError("the prediction never started")


def _stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def test_sigterm_drains_the_request_in_flight(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, drain=60.0)
    try:
        thread, answers = _in_flight(url)
        proc.send_signal(signal.SIGTERM)
        for _ in range(100):  # /ready turns 503 at once, while the process still answers
            status, body = _call(url + "ready")
            if status == 503:
                break
            time.sleep(0.02)
        assert (status, body) == (503, {"ready": False, "reason": "shutting down"})
        status, body = _call(url + "predict", _png())
        assert status == 503 and "shutting down" in body["detail"]
        assert _call(url + "health")[0] == 200
        assert proc.poll() is None  # still draining: the inference is held
        (tmp_path / "release").touch()
        released = time.monotonic()
        thread.join(30)
        status, labels = answers[0]
        assert status == 200 and labels.startswith(b"\x89PNG")  # the admitted one is answered
        assert proc.wait(timeout=30) == 0  # and the server exits once it has
        assert time.monotonic() - released < 15
        assert "draining 1 request(s) for at most 60 s" in proc.stderr.read()
    finally:
        _stop(proc)


def test_drain_is_bounded_by_drain_timeout(tmp_path: Path) -> None:
    proc, url = _start(tmp_path, drain=1.0)  # the inference is never released
    try:
        thread, answers = _in_flight(url)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert proc.wait(timeout=60) == 0
        elapsed = time.monotonic() - signalled
        assert 1.0 <= elapsed < 15, elapsed  # the drain timeout, then uvicorn's 2 s grace
        thread.join(30)
        assert answers[0][0] in (-1, 500), answers  # cut off, not answered
        assert "drain timeout: stopping with 1 request(s) unanswered" in proc.stderr.read()
    finally:
        _stop(proc)


def test_an_inference_past_its_timeout_does_not_hold_up_the_drain(tmp_path: Path) -> None:
    """Its client had a 504: nothing is owed, so SIGTERM exits at once, not after 60 s."""
    proc, url = _start(tmp_path, drain=60.0, timeout="0.5")
    try:
        status, body = _call(url + "predict", _png())
        assert status == 504 and "--timeout" in body["detail"]
        assert _call(url + "health")[1]["running"] == 1  # the inference goes on, holding its slot
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - signalled < 15
        assert "unanswered" not in proc.stderr.read()
    finally:
        _stop(proc)
