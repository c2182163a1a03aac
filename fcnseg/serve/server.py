"""Running the service: bind the port first (so a port in use is one clear error), then uvicorn
on that socket, the model loading meanwhile (``/health`` answers, ``/ready`` is 503 until it is
there; the URL is announced once predictions are taken). SIGTERM or Ctrl-C drains: ``/ready``
and new predictions answer 503 while the admitted requests finish, for at most
``drain_timeout`` seconds; a second signal stops within uvicorn's 2 s grace."""

from __future__ import annotations

import errno
import logging
import socket
import time
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
    predictor: Predictor | Callable[[], Predictor],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits | None = None,
    options: InferenceOptions | None = None,
    log_level: str = "info",
    on_ready: Callable[[str], None] | None = None,
    token: str | None = None,
    insecure: bool = False,
    drain_timeout: float = 30.0,
) -> None:
    """Serve ``predictor`` (or what a loader function returns, loaded once the port listens)
    with uvicorn until a signal (``options``: as :func:`~fcnseg.serve.app.create_app`). The port
    is bound before anything else (:class:`BindError` if it cannot be); ``on_ready(url)`` runs
    once the model is loaded and the server accepts connections; an error loading the model
    stops the server and is raised here. ``token``: the API's bearer token; off loopback a token
    is required unless ``insecure`` (``ValueError`` before binding). ``drain_timeout``: the most
    seconds a SIGTERM/SIGINT waits for admitted requests before the server exits."""
    import uvicorn

    from fcnseg.serve.app import create_app
    from fcnseg.serve.auth import is_loopback, require_token_off_loopback

    require_token_off_loopback(host, token, insecure)
    sock = bind(host, port)
    try:
        app = create_app(predictor, limits=limits, options=options, token=token)
        state = app.state.serving
        if token is None and not is_loopback(host):
            log.warning("serving on %s without a token (--insecure): anyone who can reach the "
                        "port can use it", host)  # fmt: skip
        address = url(sock, host)

        class Server(uvicorn.Server):
            deadline: float | None = None  # when draining: the time to stop at the latest
            announced = False
            draining_logged = False

            def handle_exit(self, sig: int, frame: object) -> None:
                if self.deadline is not None or self.should_exit:
                    super().handle_exit(sig, frame)  # type: ignore[arg-type]  # again: stop now
                    return
                state.draining = True  # /ready 503, new predictions 503; admitted ones finish
                self.deadline = time.monotonic() + drain_timeout  # logged by on_tick, not here

            async def on_tick(self, counter: int) -> bool:
                if not self.announced and state.service is not None and not state.draining:
                    self.announced = True
                    if on_ready is not None:
                        on_ready(address)
                if state.failed is not None:
                    self.should_exit = True
                if self.deadline is not None and not self.should_exit:
                    owed = state.admission.owed  # answers still due (504s are answered)
                    if not self.draining_logged:
                        self.draining_logged = True
                        log.info("draining %d request(s) for at most %g s (signal again to stop "
                                 "now)", owed, drain_timeout)  # fmt: skip
                    if owed == 0 or time.monotonic() >= self.deadline:
                        if owed:
                            log.warning("drain timeout: stopping with %d request(s) unanswered",
                                        owed)  # fmt: skip
                        self.should_exit = True
                return await super().on_tick(counter)

        # uvicorn's own grace after the drain: the last answers' bytes, not inference.
        config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2)
        Server(config).run(sockets=[sock])
        if state.failed is not None:
            raise state.failed
    finally:
        sock.close()
