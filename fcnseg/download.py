"""Download a published file once: progress bar, resume, the publisher's checksum, and a fast,
clear failure when offline.

``torch.hub.download_url_to_file`` downloads and checks a SHA-256 prefix, but it cannot resume
a partial file, check an MD5 (what pytorch-fcn publishes) or notice a web page served instead
of the file; :func:`download` adds those on urllib, hashlib and tqdm. The file is written as
``NAME.partial`` beside its destination and renamed only once its checksum matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = [
    "Checksum",
    "DownloadError",
    "OfflineError",
    "check_reachable",
    "download",
    "hub_file",
    "partial_path",
]

#: Bytes read per step (and per progress-bar update).
CHUNK = 1 << 20


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (e.g. no network); the message says what to do.
    (Defined here, the leaf that fetches files; :mod:`fcnseg.weights` re-exports it.)"""


class DownloadError(WeightsUnavailableError):
    """A download failed (HTTP error, interrupted transfer, wrong checksum); the message says
    what was kept (a partial file to resume) or removed."""


class OfflineError(DownloadError):
    """The file's server cannot be reached (no network, or a firewall)."""


@dataclass(frozen=True)
class Checksum:
    """A published digest: ``algorithm`` (a :mod:`hashlib` name) and its hex ``digest``, or a
    prefix of it (torchvision names its files with the first 8 hex digits of their SHA-256)."""

    algorithm: str
    digest: str

    def __post_init__(self) -> None:
        hashlib.new(self.algorithm)  # an unknown algorithm fails here, not after a download
        if not self.digest or any(c not in "0123456789abcdef" for c in self.digest):
            raise ValueError(f"checksum digest must be lowercase hex, got {self.digest!r}")

    def matches(self, hexdigest: str) -> bool:
        """Whether a full hex digest agrees with this (possibly prefix) digest."""
        return hexdigest.startswith(self.digest)

    def of_file(self, path: str | Path) -> str:
        """The full hex digest of ``path`` under this algorithm."""
        h = hashlib.new(self.algorithm)
        with open(path, "rb") as f:
            while block := f.read(CHUNK):
                h.update(block)
        return h.hexdigest()

    def __str__(self) -> str:
        full = len(self.digest) == hashlib.new(self.algorithm).digest_size * 2
        return f"{self.algorithm} {self.digest}{'' if full else '…'}"


def hub_file(name: str) -> Path:
    """Where a downloaded file named ``name`` lives: torch's hub cache (``checkpoints/``), shared
    with torchvision, which caches its files under the same names."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / name


def partial_path(dest: str | Path) -> Path:
    """Where :func:`download` keeps the bytes of an unfinished download of ``dest``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".partial")


def check_reachable(url: str, timeout: float = 3.0) -> None:
    """Raise :class:`OfflineError` unless a TCP connection to ``url``'s host and port opens
    within about ``timeout`` seconds (DNS lookup included)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    start = time.monotonic()
    # create_connection's timeout does not bound the DNS lookup, which can block for tens of
    # seconds without a name server: bound the whole attempt from this thread instead.
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except BaseException as err:  # handed to the caller below
            outcome.append(err)

    worker = threading.Thread(target=attempt, name="fcnseg-reachable", daemon=True)
    worker.start()
    worker.join(timeout + min(timeout, 1.0))
    err = outcome[0] if outcome else TimeoutError(f"no answer within {timeout:g} s")
    if err is None:
        return
    if not isinstance(err, OSError):
        raise err
    raise OfflineError(
        f"cannot reach {host}:{port} ({err}; gave up after {time.monotonic() - start:.1f} s)"
    ) from err


def _open(url: str, offset: int, timeout: float) -> Any:
    headers = {"User-Agent": "fcnseg"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total(response: Any, start: int) -> int | None:
    """The file's full size from a 200's Content-Length or a 206's Content-Range."""
    if response.status == 206:
        whole = (response.headers.get("Content-Range") or "").rpartition("/")[2]
        return int(whole) if whole.isdigit() else None
    length = response.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def download(
    url: str,
    dest: str | Path,
    checksum: Checksum,
    *,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download ``url`` to ``dest`` and check it against the published ``checksum``.

    An earlier interrupted download (``NAME.partial``) is resumed with an HTTP Range request
    when the server honours it (otherwise it starts over). An interrupted transfer keeps the
    partial file and says to run again; a complete file whose checksum (or known ``size``,
    bytes) is wrong is removed. Raises :class:`DownloadError` (:class:`OfflineError` when the
    server cannot be reached). Processes fetching the same ``dest`` at once (torchrun ranks,
    two commands) take turns on a lock file: the first downloads, the others find the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(dest.with_name(dest.name + ".lock")):
        if dest.is_file():
            return dest
        return _download(url, dest, checksum, size, progress, timeout)


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock`` (where the OS has one; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(
    url: str, dest: Path, checksum: Checksum, size: int | None, progress: bool, timeout: float
) -> Path:
    """:func:`download` under its lock."""
    from tqdm import tqdm

    part = partial_path(dest)
    start = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, start, timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and start:  # the partial file is no prefix the server knows
            part.unlink()
            return _download(url, dest, checksum, size, progress, timeout)
        raise DownloadError(f"{url} answered HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise OfflineError(f"cannot download {url} ({reason})") from err
    with response:
        if (response.headers.get("Content-Type") or "").startswith("text/html"):
            raise DownloadError(
                f"{url} answered with a web page, not the file (a sign-in or confirmation page?)"
            )
        if start and response.status != 206:
            start = 0  # the server ignores Range: start over
        total = _total(response, start)
        h = hashlib.new(checksum.algorithm)
        if start:
            with part.open("rb") as f:
                while block := f.read(CHUNK):
                    h.update(block)
        received = start
        bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=dest.name, disable=not progress, leave=False)  # fmt: skip
        try:
            with bar, part.open("ab" if start else "wb") as out:
                while block := response.read(CHUNK):
                    out.write(block)
                    h.update(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as err:  # a reset, IncompleteRead, timeout
            raise DownloadError(
                f"download of {url} interrupted after {received} of {total or '?'} bytes ({err}); "
                f"{part} is kept: run the command again to resume"
            ) from err
    if total is not None and received < total:
        raise DownloadError(
            f"download of {url} interrupted after {received} of {total} bytes; {part} is kept: "
            "run the command again to resume"
        )
    _verify(url, part, h.hexdigest(), received, checksum, size)
    os.replace(part, dest)
    return dest


def _verify(
    url: str, part: Path, digest: str, received: int, checksum: Checksum, size: int | None
) -> None:
    """Remove ``part`` and raise unless its size and digest are the published ones."""
    problem = None
    if size is not None and received != size:
        what = "truncated" if received < size else "too long"
        problem = f"{what}: {received} bytes, the published file has {size}"
    elif not checksum.matches(digest):
        problem = f"checksum mismatch: {checksum.algorithm} {digest}, published {checksum}"
    if problem:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"the file downloaded from {url} is not the published one ({problem}); it was "
            "removed. Try again, or fetch it by hand and check its checksum"
        )
