"""`fcnseg serve`: the HTTP API's answers equal the Python API's, and every limit holds."""

from __future__ import annotations

import io
import json
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from serve_models import Gate, Pointwise

from fcnseg.inference import Predictor
from fcnseg.serve import ServeLimits, create_app

PALETTE = [[0, 0, 0], [220, 20, 60], [30, 144, 255]]


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def predictor() -> Predictor:
    return Predictor(Pointwise(), ["sky", "road", "car"], PALETTE)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)


def test_health_classes_and_page(predictor: Predictor) -> None:
    client = TestClient(create_app(predictor))
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["num_classes"] == 3
    classes = client.get("/classes").json()["classes"]
    assert [c["name"] for c in classes] == ["sky", "road", "car"]
    assert [c["color"] for c in classes] == PALETTE
    assert client.get("/classes").json()["untinted"] == []  # no class named background
    page = client.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="mask-canvas"' in page.text and 'id="opacity"' in page.text
    assert 'id="tint-background"' in page.text
    # The page leaves the background classes (named as overlays name them) untinted.
    named = Predictor(Pointwise(), ["road", "_Background_", "car"], PALETTE)
    assert TestClient(create_app(named)).get("/classes").json()["untinted"] == [1]


def test_predict_png_and_json_equal_the_python_api(predictor: Predictor, image) -> None:
    client = TestClient(create_app(predictor))
    want = predictor.predict(torch.from_numpy(image).permute(2, 0, 1)).numpy()
    assert len(np.unique(want)) == 3
    files = {"image": ("x.png", _png(image), "image/png")}
    res = client.post("/predict", files=files)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    label = Image.open(io.BytesIO(res.content))
    assert label.mode == "P" and label.size == (53, 37)
    np.testing.assert_array_equal(np.array(label), want)
    assert label.getpalette()[:9] == [v for c in PALETTE for v in c]
    hist = json.loads(res.headers["X-Class-Histogram"])
    assert hist == {str(i): int((want == i).sum()) for i in range(3)}
    # A raw image/png body works too, and JSON gives the histogram by name.
    res = client.post("/predict?format=json", content=_png(image),
                      headers={"content-type": "image/png"})  # fmt: skip
    body = res.json()
    assert (body["width"], body["height"]) == (53, 37)
    assert {c["name"]: c["pixels"] for c in body["classes"]} == {
        name: int((want == i).sum()) for i, name in enumerate(["sky", "road", "car"])
    }
    assert sum(c["fraction"] for c in body["classes"]) == pytest.approx(1)


def test_any_mode_and_size(predictor: Predictor) -> None:
    """1×1, grey, RGBA, JPEG: all answered with a label map of the image's size."""
    client = TestClient(create_app(predictor))
    for array, fmt in [
        (np.zeros((1, 1, 3), np.uint8), "PNG"),
        (np.full((9, 4), 200, np.uint8), "PNG"),
        (np.full((5, 6, 4), 90, np.uint8), "PNG"),
        (np.full((16, 24, 3), 30, np.uint8), "JPEG"),
    ]:
        res = client.post("/predict", files={"image": ("a", _png(array, fmt), "image/png")})
        assert res.status_code == 200, res.text
        assert Image.open(io.BytesIO(res.content)).size == (array.shape[1], array.shape[0])


def test_limits_give_clean_errors(predictor: Predictor, image) -> None:
    limits = ServeLimits(max_upload_bytes=4000, max_pixels=1000)
    client = TestClient(create_app(predictor, limits=limits))
    small = _png(np.zeros((10, 10, 3), np.uint8))
    # 413: over the byte limit (declared, and streamed without a length)
    big = bytes(5000)
    res = client.post("/predict", content=big, headers={"content-type": "image/png"})
    assert res.status_code == 413 and "4,000" in res.json()["detail"]
    res = client.post("/predict", content=iter([big[:3000], big[3000:]]),
                      headers={"content-type": "image/png"})  # fmt: skip
    assert res.status_code == 413
    # 413: over the pixel limit (a small file of a large image)
    flat = _png(np.zeros((40, 40, 3), np.uint8))
    res = client.post("/predict", files={"image": ("big.png", flat, "image/png")})
    assert res.status_code == 413 and "max_pixels" in res.json()["detail"]
    # 415: not an image upload
    res = client.post("/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert res.status_code == 415
    res = client.post("/predict", files={"image": ("a.txt", b"hello", "text/plain")})
    assert res.status_code == 415 and "a.txt" in res.json()["detail"]
    # 400: undecodable, empty, truncated, no file in the form
    noisy = _png(image[:30, :30])
    for data in (b"not an image at all", b"", noisy[: len(noisy) // 2]):
        res = client.post("/predict", files={"image": ("bad.png", data, "image/png")})
        assert res.status_code == 400, data[:20]
        assert "bad.png" in res.json()["detail"]
    res = client.post("/predict", data={"field": "x"}, files={"other": ("", b"", "")})
    assert res.status_code in (400, 415)
    res = client.post("/predict?format=xml", files={"image": ("a.png", small, "image/png")})
    assert res.status_code == 422
    # still serving
    ok = client.post("/predict", files={"image": ("a.png", small, "image/png")})
    assert ok.status_code == 200
    assert client.get("/health").json() | {"served": 1, "admitted": 0, "running": 0} == (
        client.get("/health").json()
    )


def test_busy_server_answers_503_and_recovers() -> None:
    gate = Gate()
    app = create_app(Predictor(gate, ["a", "b"], PALETTE[:2]),
                     limits=ServeLimits(max_concurrent=1, max_queue=0))  # fmt: skip
    upload = {"image": ("a.png", _png(np.zeros((4, 4, 3), np.uint8)), "image/png")}
    with TestClient(app) as client:
        results: list[int] = []
        first = threading.Thread(
            target=lambda: results.append(client.post("/predict", files=upload).status_code)
        )
        first.start()
        assert gate.entered.wait(30)
        busy = client.post("/predict", files=upload)
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert client.get("/health").json()["running"] == 1
        gate.release.set()
        first.join(30)
        assert results == [200]
        assert client.post("/predict", files=upload).status_code == 200


def test_internal_error_is_a_500_and_the_server_lives(image) -> None:
    class Broken(Pointwise):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    client = TestClient(create_app(Predictor(Broken(), ["a", "b", "c"], PALETTE)),
                        raise_server_exceptions=False)  # fmt: skip
    res = client.post("/predict", files={"image": ("a.png", _png(image), "image/png")})
    assert res.status_code == 500 and "boom" in res.json()["detail"]
    assert client.get("/health").status_code == 200
