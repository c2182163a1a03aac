"""``fcnseg serve`` binds its port before it says where it listens: the announced URL (with the
port really bound, here a free one from ``--port 0``) answers as soon as it is printed."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from fcnseg.serve.server import BindError, bind


def test_announced_url_answers(tmp_path: Path, make_fcn_checkpoint) -> None:
    ckpt = make_fcn_checkpoint(tmp_path / "m.safetensors", classes=["a", "b"],
                               palette=[[0, 0, 0], [255, 0, 0]])  # fmt: skip
    command = [sys.executable, "-m", "fcnseg", "serve", str(ckpt), "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server announces itself
        assert line.startswith("fcnseg serve: http://127.0.0.1:"), line
        url = line.split()[2]
        assert not url.endswith(":0/")  # the port it got, not the one asked for
        with urllib.request.urlopen(url + "health", timeout=10) as response:
            assert json.load(response)["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_bind_reports_a_port_in_use() -> None:
    first = bind("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        with pytest.raises(BindError, match=f"port {port} is in use; choose another with --port"):
            bind("127.0.0.1", port)
    finally:
        first.close()
    bind("127.0.0.1", port).close()  # free again once closed


def test_bind_reports_an_address_not_of_this_machine() -> None:
    with pytest.raises(BindError, match="--host must be an address of this machine"):
        bind("192.0.2.1", 0)  # TEST-NET-1: numeric, so no lookup, and never local
