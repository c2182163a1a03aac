"""Running the service: bind the port first (so a port in use is one clear error, and the URL
is announced only once the server listens), then uvicorn on that socket."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fcnseg.inference import InferenceOptions, Predictor
    from fcnseg.serve.app import ServeLimits

__all__ = ["BindError", "bind", "run_server"]

log = logging.getLogger("fcnseg")


class BindError(OSError):
    """The server cannot listen on the address; the message says why and what to do."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: a free one), or :class:`BindError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise BindError(f"cannot listen on {host!r}: {err.strerror}; check --host") from err
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not past a live listener
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise BindError(f"port {port} is in use; choose another with --port") from err
        if err.errno == errno.EACCES:
            hint = "choose a port above 1023 with --port"
        elif err.errno == errno.EADDRNOTAVAIL:
            hint = "--host must be an address of this machine (127.0.0.1 or 0.0.0.0 for all)"
        else:
            hint = "check --host and --port"
        raise BindError(f"cannot listen on {host}:{port}: {err.strerror}; {hint}") from err
    sock.setblocking(False)
    return sock


def url(sock: socket.socket, host: str) -> str:
    """``http://host:port/`` of a bound socket (the port it really got)."""
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def run_server(
    predictor: Predictor,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits | None = None,
    options: InferenceOptions | None = None,
    log_level: str = "info",
    on_ready: Callable[[str], None] | None = None,
    token: str | None = None,
    insecure: bool = False,
) -> None:
    """Serve ``predictor`` with uvicorn until interrupted (``options``: as
    :func:`~fcnseg.serve.app.create_app`). The port is bound before anything else
    (:class:`BindError` if it cannot be); ``on_ready(url)`` runs once the server accepts
    connections. ``token``: the API's bearer token; off loopback a token is required unless
    ``insecure`` (``ValueError`` before binding)."""
    import uvicorn

    from fcnseg.serve.app import create_app
    from fcnseg.serve.auth import is_loopback, require_token_off_loopback

    require_token_off_loopback(host, token, insecure)
    sock = bind(host, port)
    try:
        app = create_app(predictor, limits=limits, options=options, token=token)
        if token is None and not is_loopback(host):
            log.warning("serving on %s without a token (--insecure): anyone who can reach the "
                        "port can use it", host)  # fmt: skip
        address = url(sock, host)

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: object) -> None:
                app.state.ready = False  # /ready 503, new predictions 503; in-flight ones finish
                super().handle_exit(sig, frame)  # type: ignore[arg-type]

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if self.started and on_ready is not None:
                    on_ready(address)

        Server(uvicorn.Config(app, log_level=log_level)).run(sockets=[sock])
    finally:
        sock.close()
