"""Operations: ``/metrics`` in the Prometheus text format counts every request by endpoint and
status with a latency histogram and the running/queued gauges; ``/ready`` turns 503 once the
service stops taking work (new predictions then get 503), while ``/health`` stays 200."""

from __future__ import annotations

import io

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from serve_models import Pointwise

from fcnseg.inference import Predictor
from fcnseg.serve import create_app

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
    app.state.ready = False  # what the server does on SIGTERM/SIGINT
    res = client.get("/ready")
    assert res.status_code == 503 and res.json()["ready"] is False
    files = {"image": ("x.png", _png(), "image/png")}
    res = client.post("/predict", files=files, headers={"Authorization": "Bearer t0k"})
    assert res.status_code == 503 and res.headers["retry-after"] == "1"
    assert client.get("/health").status_code == 200  # alive, just not taking work
