"""Operations: ``/metrics`` in the Prometheus text format counts every request by endpoint and
status with a latency histogram and the running/queued gauges; ``/ready`` is 503 while the
model loads and once the service stops taking work (new predictions then get 503), while
``/health`` stays 200; ``--timeout`` answers 504 (SIGTERM draining: test_serve_drain.py)."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from serve_models import Gate, Pointwise

from fcnseg.inference import Predictor
from fcnseg.serve import ServeLimits, create_app, run_server

PALETTE = [[0, 0, 0], [220, 20, 60], [30, 144, 255]]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((9, 11, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _samples(client: TestClient) -> dict[tuple[str, tuple], float]:
    res = client.get("/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(res.text)
            for s in family.samples}  # fmt: skip


def _app() -> tuple[TestClient, object]:
    app = create_app(Predictor(Pointwise(), ["a", "b", "c"], PALETTE), token="t0k")
    return TestClient(app), app


def test_metrics_count_requests_by_endpoint_and_status() -> None:
    client, _ = _app()
    auth = {"Authorization": "Bearer t0k"}
    files = {"image": ("x.png", _png(), "image/png")}
    for _ in range(3):
        assert client.post("/predict", files=files, headers=auth).status_code == 200
    assert client.post("/predict", files=files).status_code == 401
    bad = {"image": ("x.txt", b"hello", "text/plain")}
    assert client.post("/predict", files=bad, headers=auth).status_code == 415
    client.get("/no-such-page")
    got = _samples(client)
    count = "fcnseg_requests_total"
    assert got[(count, (("endpoint", "/predict"), ("status", "200")))] == 3
    assert got[(count, (("endpoint", "/predict"), ("status", "401")))] == 1
    assert got[(count, (("endpoint", "/predict"), ("status", "415")))] == 1
    assert got[(count, (("endpoint", "other"), ("status", "404")))] == 1
    assert got[("fcnseg_request_seconds_count", (("endpoint", "/predict"),))] == 5
    assert got[("fcnseg_inferences_running", ())] == 0
    assert got[("fcnseg_queue_depth", ())] == 0
    # A second app keeps its own counts (one registry per app).
    other, _ = _app()
    assert (count, (("endpoint", "/predict"), ("status", "200"))) not in _samples(other)


def test_ready_turns_false_when_shutting_down() -> None:
    client, app = _app()
    assert client.get("/ready").json() == {"ready": True}
    app.state.serving.draining = True  # what the server does on SIGTERM/SIGINT
    res = client.get("/ready")
    assert res.status_code == 503 and res.json()["ready"] is False
    files = {"image": ("x.png", _png(), "image/png")}
    res = client.post("/predict", files=files, headers={"Authorization": "Bearer t0k"})
    assert res.status_code == 503 and res.headers["retry-after"] == "1"
    assert client.get("/health").status_code == 200  # alive, just not taking work


def test_timeout_answers_504_and_keeps_the_slot_until_the_inference_ends() -> None:
    """``--timeout``: a stuck inference answers 504 and the server keeps serving; the stuck
    thread keeps its slot (never more than ``max_concurrent`` inferences at once), a request
    queued behind it gets its own 504 in time, and the next one runs once the stuck one ends."""
    gate = Gate()
    limits = ServeLimits(max_concurrent=1, max_queue=2, timeout=1.0)
    app = create_app(Predictor(gate, ["a", "b"], PALETTE[:2]), limits=limits)
    files = {"image": ("x.png", _png(), "image/png")}
    with TestClient(app) as client:
        bad = client.post("/predict", files={"image": ("x.png", b"not a png", "image/png")})
        assert bad.status_code == 400  # failures leave nothing held
        assert (client.get("/health").json()["admitted"], gate.entered.is_set()) == (0, False)
        start = time.monotonic()
        res = client.post("/predict", files=files)
        assert res.status_code == 504, res.text
        assert "the inference did not finish within 1 s" in res.json()["detail"]
        assert 0.9 <= time.monotonic() - start < 10
        assert gate.entered.is_set() and not gate.release.is_set()  # still running
        health = client.get("/health").json()
        assert (health["running"], health["admitted"], health["timed_out"]) == (1, 1, 1)
        assert _samples(client)[("fcnseg_inferences_running", ())] == 1
        res = client.post("/predict", files=files)  # queued behind it: its own 504, in time
        assert res.status_code == 504 and "no inference slot came free" in res.json()["detail"]
        release = threading.Timer(0.3, gate.release.set)
        release.start()
        start = time.monotonic()
        res = client.post("/predict", files=files)  # waits for the slot, then runs at once
        waited = time.monotonic() - start
        release.join()
        assert res.status_code == 200 and waited >= 0.25, (res.status_code, waited)
        health = client.get("/health").json()
        assert (health["running"], health["admitted"], health["served"]) == (0, 0, 1)
        assert health["timed_out"] == 2
        got = _samples(client)
        assert got[("fcnseg_requests_total", (("endpoint", "/predict"), ("status", "504")))] == 2


def test_limits_are_checked() -> None:
    for bad in ({"timeout": 0}, {"timeout": float("nan")}, {"max_concurrent": 0},
                {"max_queue": -1}):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServeLimits(**bad)


def _wait_ready(client: TestClient, want: int) -> dict:
    for _ in range(200):  # bounded: 10 s
        res = client.get("/ready")
        if res.status_code == want:
            return res.json()
        time.sleep(0.05)
    raise AssertionError(f"/ready never answered {want}: {res.json()}")


def test_ready_only_once_the_model_has_loaded() -> None:
    """Given a loader, the app answers ``/health`` at once, ``/ready`` 503 and predictions 503
    (saying the model is loading) until the model is there, then serves."""
    go = threading.Event()

    def load() -> Predictor:
        assert go.wait(30)
        return Predictor(Pointwise(), ["a", "b", "c"], PALETTE)

    auth = {"Authorization": "Bearer t0k"}
    files = {"image": ("x.png", _png(), "image/png")}
    with TestClient(create_app(load, token="t0k")) as client:
        res = client.get("/ready")
        assert res.status_code == 503 and res.json()["reason"] == "loading the model"
        assert client.get("/health").json()["status"] == "loading"
        res = client.post("/predict", files=files, headers=auth)
        assert res.status_code == 503 and "loading the model" in res.json()["detail"]
        assert client.get("/classes", headers=auth).status_code == 503
        go.set()
        assert _wait_ready(client, 200) == {"ready": True}
        assert client.post("/predict", files=files, headers=auth).status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_a_model_that_fails_to_load_is_reported_and_stops_the_server() -> None:
    def load() -> Predictor:
        raise ValueError("no checkpoint at runs/x (check the path)")

    with TestClient(create_app(load)) as client:
        reason = _wait_ready(client, 503)["reason"]
        for _ in range(200):
            if "failed to load" in reason:
                break
            time.sleep(0.05)
            reason = client.get("/ready").json()["reason"]
        assert reason == "the model failed to load: no checkpoint at runs/x (check the path)"
        assert client.get("/health").json()["status"] == "failed"
    # The server stops and raises the loader's error (the CLI prints it as one line).
    start = time.monotonic()
    with pytest.raises(ValueError, match="no checkpoint at runs/x"):
        run_server(load, port=0, log_level="warning")
    assert time.monotonic() - start < 10
