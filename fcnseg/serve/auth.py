"""Who may use the service: a bearer token on the API, and no serving beyond this machine
without one unless asked for explicitly.

The token comes from a file (``--token-file``) or the ``FCNSEG_TOKEN`` environment variable; it
is compared in constant time and never written to a log or an error. ``/predict`` and
``/classes`` need ``Authorization: Bearer <token>`` (401 without it); the page and ``/health``
stay open (the page asks for the token and keeps it for the browser session).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

from fastapi import HTTPException, Request

__all__ = ["TOKEN_ENV", "bearer_check", "is_loopback", "read_token", "require_token_off_loopback"]

#: Environment variable holding the token when no ``--token-file`` is given.
TOKEN_ENV = "FCNSEG_TOKEN"


def read_token(token_file: str | Path | None) -> str | None:
    """The token of ``token_file`` (whitespace around it dropped), else of ``FCNSEG_TOKEN``,
    else ``None``; ``ValueError`` for a missing, unreadable or empty file."""
    if token_file is None:
        return os.environ.get(TOKEN_ENV, "").strip() or None
    path = Path(token_file)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        why = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ValueError(f"--token-file {path}: cannot read it ({why})") from err
    if not token:
        raise ValueError(f"--token-file {path} is empty; write the token into it")
    return token


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def require_token_off_loopback(host: str, token: str | None, insecure: bool) -> None:
    """Refuse (``ValueError``) to serve beyond this machine without a token unless
    ``insecure``."""
    if token is None and not insecure and not is_loopback(host):
        raise ValueError(
            f"--host {host} serves anyone who can reach the port; give a token "
            f"(--token-file FILE or {TOKEN_ENV}), or --insecure to serve without one"
        )


def bearer_check(token: str) -> Callable[[Request], None]:
    """A FastAPI dependency answering 401 unless the request carries the bearer ``token``."""
    expected = token.encode("utf-8")

    def check(request: Request) -> None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), expected
        ):
            raise HTTPException(
                401,
                "missing or wrong token: send the header Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check
