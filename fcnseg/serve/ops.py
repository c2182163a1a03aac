"""What an operator watches: ``GET /metrics`` in the Prometheus text format (requests by
endpoint and status, latency histogram, requests running and waiting), and ``GET /ready``,
which — unlike ``/health``, true while the process answers at all — is false while the model
loads and once the service stops taking new work (draining before exit), so a load balancer
sends traffic elsewhere."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

__all__ = ["add_operations"]

#: Latency buckets (seconds): a small model on a CPU answers in tens of ms, a large one in s.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def add_operations(
    app: FastAPI,
    running: Callable[[], int],
    waiting: Callable[[], int],
    not_ready: Callable[[], str | None],
) -> None:
    """``/metrics`` and ``/ready`` on ``app``, and a middleware counting every request;
    ``running``/``waiting``: the inferences in progress and admitted but queued;
    ``not_ready``: why the service takes no new work (``None``: it does)."""
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
    )

    registry = CollectorRegistry()  # per app: two apps in one process keep their own counts
    requests = Counter("fcnseg_requests", "HTTP requests answered", ["endpoint", "status"],
                       registry=registry)  # fmt: skip
    latency = Histogram("fcnseg_request_seconds", "Time to answer a request", ["endpoint"],
                        buckets=BUCKETS, registry=registry)  # fmt: skip
    Gauge("fcnseg_inferences_running", "Inferences in progress",
          registry=registry).set_function(running)  # fmt: skip
    Gauge("fcnseg_queue_depth", "Requests admitted and waiting for a free slot",
          registry=registry).set_function(waiting)  # fmt: skip
    known = {"/", "/health", "/ready", "/metrics", "/classes", "/predict", "/docs",
             "/openapi.json"}  # fmt: skip

    @app.middleware("http")
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        start = time.perf_counter()
        response = await call_next(request)
        path = request.url.path
        endpoint = path if path in known else "other"  # bounded label values
        latency.labels(endpoint).observe(time.perf_counter() - start)
        requests.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ready")
    def ready() -> JSONResponse:
        reason = not_ready()
        if reason is None:
            return JSONResponse({"ready": True})
        return JSONResponse({"ready": False, "reason": reason}, 503)
