"""`fcnseg serve` under concurrent requests, garbage mixed in: every answer is the one that
request must get, whatever the interleaving, and the queue bound turns away exactly the request
beyond it. Deterministic: no timings and no load-dependent outcomes are asserted here (how fast
and how much memory: ``benchmarks/serve_load.py``)."""

from __future__ import annotations

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_models import Gate, Pointwise

from fcnseg.inference import Predictor
from fcnseg.serve import ServeLimits, create_app

PALETTE = [[0, 0, 0], [220, 20, 60], [30, 144, 255]]
CLASSES = ["sky", "road", "car"]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(8, 80, 2)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


MAX_UPLOAD = 64_000
TRUNCATED = _png(_image(99))[: len(_png(_image(99))) // 2]
# (kind, request keyword arguments for TestClient.post, the status it must get)
GARBAGE = [
    ("garbage", {"files": {"image": ("bad.png", b"\x89PNG but not really", "image/png")}}, 400),
    ("truncated", {"files": {"image": ("cut.png", TRUNCATED, "image/png")}}, 400),
    ("not-an-image", {"files": {"image": ("notes.txt", b"hello", "text/plain")}}, 415),
    ("oversized", {"content": bytes(MAX_UPLOAD + 1), "headers": {"content-type": "image/png"}},
     413),
]  # fmt: skip


def test_concurrent_requests_get_their_own_correct_answers() -> None:
    """8 clients × 6 requests at once (2 inference slots, a queue that holds them all, so no
    503 is possible): each valid image comes back as exactly its Python-API label map, the same
    image sent by every client comes back byte-identical, each bad upload gets its clean
    error, and afterwards the server is idle and has served exactly the valid ones."""
    predictor = Predictor(Pointwise(), CLASSES, PALETTE)
    workers, per_worker = 8, 6
    limits = ServeLimits(max_concurrent=2, max_queue=workers, max_upload_bytes=MAX_UPLOAD)
    app = create_app(predictor, limits=limits)
    shared = _image(0)
    plan = []  # per worker: (kind, kwargs, expected status, expected labels or None)
    for k in range(workers):
        requests = [("shared", {"files": {"image": ("s.png", _png(shared), "image/png")}}, 200)]
        for j in range(per_worker - 1 - len(GARBAGE) // 2):
            image = _image(1000 * k + j + 1)
            requests.append(("valid", {"files": {"image": ("x.png", _png(image), "image/png")}},
                             200))  # fmt: skip
        requests += [GARBAGE[(k + i) % len(GARBAGE)] for i in range(len(GARBAGE) // 2)]
        plan.append(requests)

    def expected(kwargs: dict) -> np.ndarray:
        array = np.array(Image.open(io.BytesIO(kwargs["files"]["image"][1])).convert("RGB"))
        return predictor.predict(torch.from_numpy(array).permute(2, 0, 1)).numpy()

    with TestClient(app) as client:

        def worker(k: int) -> list[tuple[str, dict, int, int, bytes]]:
            out = []
            for kind, kwargs, status in plan[k]:
                res = client.post("/predict", **kwargs)
                out.append((kind, kwargs, status, res.status_code, res.content))
            return out

        with ThreadPoolExecutor(workers) as pool:
            answers = [a for per in pool.map(worker, range(workers)) for a in per]
        health = client.get("/health").json()

    assert len(answers) == workers * per_worker
    shared_bodies = set()
    for kind, kwargs, want_status, status, body in answers:
        assert status == want_status, (kind, status, body[:200])
        if status != 200:
            assert "detail" in json.loads(body), kind
            continue
        np.testing.assert_array_equal(np.array(Image.open(io.BytesIO(body))), expected(kwargs))
        if kind == "shared":
            shared_bodies.add(body)
    assert len(shared_bodies) == 1
    valid = sum(1 for a in answers if a[2] == 200)
    assert health["served"] == valid and health["admitted"] == 0 and health["running"] == 0


def _wait_for(condition, what: str, limit: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def test_queue_bound_turns_away_exactly_the_request_beyond_it() -> None:
    """One slot and one queue place: with the slot held (a model blocked on a gate) and the
    queue place taken, the next request gets 503 with Retry-After; once released, the running
    and the queued request both complete with 200 and the server takes new work."""
    gate = Gate()
    limits = ServeLimits(max_concurrent=1, max_queue=1)
    app = create_app(Predictor(gate, ["a", "b"], PALETTE[:2]), limits=limits)
    upload = {"image": ("a.png", _png(np.zeros((4, 4, 3), np.uint8)), "image/png")}
    with TestClient(app) as client:
        results: list[int] = []

        def post() -> None:
            results.append(client.post("/predict", files=upload).status_code)

        running = threading.Thread(target=post)
        running.start()
        assert gate.entered.wait(30)
        queued = threading.Thread(target=post)
        queued.start()
        _wait_for(lambda: client.get("/health").json()["admitted"] == 2, "the queued request")
        health = client.get("/health").json()
        assert (health["running"], health["admitted"]) == (1, 2)
        busy = client.post("/predict", files=upload)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        gate.release.set()
        running.join(30)
        queued.join(30)
        assert results == [200, 200]
        assert client.get("/health").json()["admitted"] == 0
        assert client.post("/predict", files=upload).status_code == 200
