"""Authentication: with a token the API answers 401 without ``Authorization: Bearer <token>``
(the token never appears in a response or a log), the page and /health stay open; without one
the service stays on loopback unless ``--insecure`` is given."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from serve_models import Pointwise

from fcnseg.cli import main
from fcnseg.inference import Predictor
from fcnseg.serve import create_app
from fcnseg.serve.auth import is_loopback, read_token, require_token_off_loopback

TOKEN = "s3cret-token-4217"
PALETTE = [[0, 0, 0], [220, 20, 60], [30, 144, 255]]


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((9, 11, 3), 200, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _app(token: str | None) -> TestClient:
    return TestClient(create_app(Predictor(Pointwise(), ["a", "b", "c"], PALETTE), token=token))


def test_api_needs_the_token(caplog: pytest.LogCaptureFixture) -> None:
    client = _app(TOKEN)
    caplog.set_level(logging.DEBUG)
    files = {"image": ("x.png", _png(), "image/png")}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
        for res in (client.get("/classes", headers=headers),
                    client.post("/predict", files=files, headers=headers)):  # fmt: skip
            assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
            assert "Authorization: Bearer <token>" in res.json()["detail"]
            assert TOKEN not in res.text
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/classes", headers=good).status_code == 200
    res = client.post("/predict", files=files, headers=good)
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert client.get("/health").json()["auth"] is True  # probes need no token
    assert client.get("/").status_code == 200  # the page asks for it
    assert TOKEN not in caplog.text


def test_loopback_default_needs_no_token() -> None:
    client = _app(None)
    assert client.get("/classes").status_code == 200
    assert client.get("/health").json()["auth"] is False


def test_off_loopback_needs_a_token_or_insecure(tmp_path: Path, make_fcn_checkpoint) -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.5"):
        assert is_loopback(host)
        require_token_off_loopback(host, None, insecure=False)
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        assert not is_loopback(host)
        with pytest.raises(ValueError, match="--insecure"):
            require_token_off_loopback(host, None, insecure=False)
        require_token_off_loopback(host, TOKEN, insecure=False)
        require_token_off_loopback(host, None, insecure=True)
    model = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["a", "b"],
                                palette=[[0, 0, 0], [255, 0, 0]])  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main(["serve", str(model), "--host", "0.0.0.0", "--port", "0", "--device", "cpu"])
    message = str(stop.value.code)
    assert message.startswith("fcnseg serve: --host 0.0.0.0 serves anyone") and "\n" not in message


def test_token_from_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FCNSEG_TOKEN", raising=False)
    assert read_token(None) is None
    monkeypatch.setenv("FCNSEG_TOKEN", f" {TOKEN}\n")
    assert read_token(None) == TOKEN
    file = tmp_path / "token"
    file.write_text("from-file\n")
    assert read_token(file) == "from-file"  # the file wins
    file.write_text("  \n")
    with pytest.raises(ValueError, match="is empty"):
        read_token(file)
    with pytest.raises(ValueError, match="cannot read it"):
        read_token(tmp_path / "missing")
