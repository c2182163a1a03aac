"""Shared fixtures: the ``../shared`` data/weights folder, and a guard against network use."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Where the shared folder's weights live, relative to it (see ``../shared/README.md``).
VGG16_SHARED_WEIGHTS = Path("weights") / "vgg16-imagenet-features.safetensors"

# --- network guard ----------------------------------------------------------------------

NETWORK_ERROR = "tests must not use the network"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _is_local(address: Any) -> bool:
    """Whether a socket address stays on this machine (AF_UNIX path or loopback host)."""
    if isinstance(address, (str, bytes, bytearray)):  # AF_UNIX path (or abstract name)
        return True
    if not isinstance(address, tuple) or not address:
        return False
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    host = host.strip("[]").split("%", 1)[0].lower()  # "[::1]", "fe80::1%lo"
    if host in _LOCAL_NAMES or host == "":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name other than localhost: resolving it would already be network
    return ip.is_loopback or ip.is_unspecified


def _refuse(address: Any) -> None:
    raise RuntimeError(f"{NETWORK_ERROR} (attempted connection to {address!r})")


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    """Make any non-local connection fail loudly; loopback and AF_UNIX sockets keep working.

    Tests that simulate being offline monkeypatch ``socket.create_connection`` themselves; their
    patch sits on top of this one and is undone after the test.
    """
    connect = socket.socket.connect
    connect_ex = socket.socket.connect_ex
    create_connection = socket.create_connection

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family != getattr(socket, "AF_UNIX", object()) and not _is_local(address):
            _refuse(address)
        return connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        if self.family != getattr(socket, "AF_UNIX", object()) and not _is_local(address):
            _refuse(address)
        return connect_ex(self, address)

    def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        if not _is_local(address):
            _refuse(address)
        return create_connection(address, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        mp.setattr(socket.socket, "connect_ex", guarded_connect_ex)
        mp.setattr(socket, "create_connection", guarded_create_connection)
        yield


# --- shared data and weights ------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared data/weights folder: ``$FCNSEG_SHARED``, else ``<repo root>/../shared``.

    Skips the requesting test when the folder is missing (users without a copy).
    """
    env = os.environ.get("FCNSEG_SHARED")
    path = Path(env).expanduser() if env else REPO_ROOT.parent / "shared"
    if not path.is_dir():
        source = "$FCNSEG_SHARED" if env else "the default location"
        pytest.skip(
            f"shared data/weights folder not found at {path} ({source}); set FCNSEG_SHARED to a "
            "copy of it to run this test"
        )
    return path


@pytest.fixture(scope="session")
def shared_path(shared_dir: Path) -> Callable[..., Path]:
    """``shared_path("data", "camvid")``: a path inside the shared folder; skips if missing."""

    def get(*parts: str) -> Path:
        path = shared_dir.joinpath(*parts)
        if not path.exists():
            pytest.skip(f"{path} is missing from the shared folder {shared_dir}")
        return path

    return get


@pytest.fixture(scope="session")
def vgg16_shared_weights(shared_path: Callable[..., Path]) -> Path:
    """The shared ImageNet VGG16 conv weights (float16, Caffe 0–255 mean metadata)."""
    return shared_path(*VGG16_SHARED_WEIGHTS.parts)


# --- a small saved model ----------------------------------------------------------------


def _fcn_checkpoint(
    path: Path,
    *,
    classes: list[str],
    palette: list[list[int]],
    std: float = 0.1,
    backbone: str = "resnet18",
    seed: int = 0,
) -> Path:
    """Save an FCN-8s whose score layers are random (the paper's zero init would predict one
    class everywhere), so predictions vary across classes."""
    import torch

    from fcnseg.checkpoint import save_checkpoint
    from fcnseg.models import fcn8s

    torch.manual_seed(seed)
    model = fcn8s(backbone=backbone, num_classes=len(classes))
    with torch.no_grad():
        for layer in (model.score_fr, *model.scorers.values()):
            layer.weight.normal_(0, std)
    spec = {"name": "fcn8s", "backbone": backbone, "num_classes": len(classes), "mode": "exact"}
    return save_checkpoint(path, model, model_spec=spec, classes=list(classes),
                           palette=[list(c) for c in palette], ignore_index=255)  # fmt: skip


@pytest.fixture(scope="session")
def make_fcn_checkpoint() -> Callable[..., Path]:
    """``make_fcn_checkpoint(path, classes=..., palette=..., std=0.1)`` → the saved file."""
    return _fcn_checkpoint
