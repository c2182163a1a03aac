"""The HTTP service: FastAPI endpoints, upload limits and bounded concurrent inference.

Endpoints
    ``GET /``          the web page (choose or drop an image, overlay with the background
                       untinted, legend, opacity, download)
    ``GET /health``    ``{"status": "ok", ...}`` with the model, the current load and the
                       inference options
    ``GET /classes``   ``{"classes": [{"index", "name", "color"}, ...], "untinted": [...]}``:
                       ``untinted``, the indices of the background classes
                       (:func:`fcnseg.viz.background_classes`), which overlays (the page's
                       included) leave untinted by default
    ``POST /predict``  an image (multipart form field ``image``, or a raw ``image/*`` body) →
                       the label map as a palette PNG of class indices (default), or with
                       ``?format=json`` its size and class histogram

Limits (:class:`ServeLimits`): a body over ``max_upload_bytes`` → 413 (checked from
``Content-Length`` before reading, and while reading); a body that is not an image upload →
415; an undecodable image → 400 naming what is wrong; more than ``max_pixels`` → 413; more
than ``max_concurrent`` inferences running and ``max_queue`` waiting → 503 with
``Retry-After``; an inference past ``timeout`` → 504 (:mod:`fcnseg.serve.admission`). Any
other failure is a 500 with a message; the server keeps running. With a token
(:mod:`fcnseg.serve.auth`), ``/classes`` and ``/predict`` answer 401 without
``Authorization: Bearer <token>``; ``/health`` says whether a token is required.
``GET /metrics`` (Prometheus) and ``GET /ready`` (503 while the model loads and once draining,
when ``/predict`` answers 503 too): :mod:`fcnseg.serve.ops`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response

from fcnseg import __version__
from fcnseg.data.base import DataError
from fcnseg.data.io import read_image
from fcnseg.inference import InferenceOptions, Predictor
from fcnseg.serve.admission import Admission
from fcnseg.serve.auth import bearer_check
from fcnseg.serve.ops import add_operations
from fcnseg.viz import background_classes, label_image

__all__ = ["ServeLimits", "create_app"]

log = logging.getLogger("fcnseg.serve")

#: Content types accepted for a raw (non-multipart) body, and for the file part of a form.
_GENERIC_TYPES = {"application/octet-stream", ""}


@dataclass(frozen=True)
class ServeLimits:
    """What one server accepts: upload size, image size, and how much work at once."""

    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_concurrent: int = 1
    max_queue: int = 8
    timeout: float | None = None  #: seconds from asking for a slot to the answer; then 504

    def __post_init__(self) -> None:
        counts = {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                  "max_concurrent": self.max_concurrent}  # fmt: skip
        for name, value in counts.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_queue < 0:
            raise ValueError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError(f"timeout must be a number of seconds above 0, got {self.timeout}")


def _is_image_type(content_type: str) -> bool:
    return content_type.startswith("image/") or content_type in _GENERIC_TYPES


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"upload is {int(declared):,} bytes; the limit is {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"upload exceeds the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _upload(request: Request, limit: int) -> tuple[bytes, str]:
    """The uploaded image's bytes and name, from a multipart form or a raw ``image/*`` body."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    if not multipart and not _is_image_type(content_type):
        raise HTTPException(
            415, f"send an image (multipart form field 'image' or an image/* body), not "
            f"{content_type or 'a body without Content-Type'}",
        )  # fmt: skip
    body = await _read_body(request, limit)
    if not multipart:
        return body, "upload"

    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as exc:  # malformed multipart
        raise HTTPException(400, f"malformed multipart upload: {exc}") from None
    files = [v for v in form.values() if not isinstance(v, str)]
    part = form.get("image") if not isinstance(form.get("image"), str) else None
    part = part or (files[0] if files else None)
    if part is None:
        raise HTTPException(400, "the form has no file; send the image in the field 'image'")
    part_type = (part.content_type or "").split(";")[0].strip().lower()  # type: ignore[union-attr]
    name = f"upload {part.filename!r}" if part.filename else "upload"  # type: ignore[union-attr]
    if not _is_image_type(part_type):
        raise HTTPException(415, f"{name} is {part_type}, not an image")
    return await part.read(), name  # type: ignore[union-attr]


class _Service:
    """One served predictor: its classes and colours, how it predicts, and its admission."""

    def __init__(
        self,
        predictor: Predictor,
        limits: ServeLimits,
        options: InferenceOptions,
        admission: Admission,
    ) -> None:
        self.predictor = predictor
        self.limits = limits
        self.options = options
        self.admission = admission
        self.palette = palette = [list(map(int, c)) for c in predictor.palette]
        self.classes = [
            {"index": i, "name": name, "color": palette[i] if i < len(palette) else [0, 0, 0]}
            for i, name in enumerate(predictor.classes)
        ]
        self.untinted = background_classes(predictor.classes)

    def health(self) -> dict[str, Any]:
        """The ``GET /health`` body: the model, the current load and the inference options."""
        return {
            "status": "ok",
            "version": __version__,
            "num_classes": len(self.classes),
            "running": self.admission.running,
            "admitted": self.admission.admitted,
            "served": self.admission.served,
            "timed_out": self.admission.timed_out,
            "max_concurrent": self.limits.max_concurrent,
            "max_queue": self.limits.max_queue,
            "timeout": self.limits.timeout,
            "inference": self.options.as_dict(),
        }

    def infer(self, data: bytes, name: str) -> tuple[np.ndarray, float]:
        """Decode and predict (runs in a worker thread): the label map and the seconds taken."""
        try:
            image = read_image(data, name=name, max_pixels=self.limits.max_pixels)
        except DataError as err:
            status = 413 if "max_pixels" in str(err) else 400
            raise HTTPException(status, str(err)) from None
        start = time.perf_counter()
        with torch.inference_mode():
            labels = self.predictor.predict(image, self.options)
        return labels.numpy(), time.perf_counter() - start

    async def predict(self, request: Request) -> tuple[np.ndarray, float]:
        """Admit the request (503 when full), read its upload and predict it in a worker
        thread once a slot is free (504 past the timeout: :mod:`fcnseg.serve.admission`)."""
        admission, limits = self.admission, self.limits
        if not admission.try_enter():
            raise HTTPException(
                503,
                f"busy: {limits.max_concurrent} running and {limits.max_queue} waiting; retry",
                headers={"Retry-After": "1"},
            )
        try:
            data, name = await _upload(request, limits.max_upload_bytes)
        except BaseException:
            admission.leave()
            raise
        return await admission.run(self.infer, data, name)


class _State:
    """What the app serves and whether it takes work: the service once the model has loaded
    (``None`` while it loads), the loading error if it failed, whether it is draining, and the
    admission of its requests."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.service: _Service | None = None
        self.failed: BaseException | None = None  # what loading the model raised
        self.draining = False

    @property
    def load_error(self) -> str | None:
        """The loading error as one line (``None``: none)."""
        return None if self.failed is None else str(self.failed) or type(self.failed).__name__

    def not_ready(self) -> str | None:
        """Why no new prediction is taken (``None``: ready)."""
        if self.draining:
            return "shutting down"
        if self.load_error is not None:
            return f"the model failed to load: {self.load_error}"
        if self.service is None:
            return "loading the model"
        return None

    def require(self) -> _Service:
        """The service, or 503 saying why there is none to take the request."""
        reason = self.not_ready()
        if reason is not None or self.service is None:
            hint = "send it to another instance" if self.draining else "retry"
            raise HTTPException(503, f"{reason}; {hint}", headers={"Retry-After": "1"})
        return self.service


def _prediction_response(
    labels: np.ndarray,
    seconds: float,
    classes: list[dict[str, Any]],
    palette: list[list[int]],
    format: str,
) -> Response:
    """A label map as a palette PNG (size, class histogram and time in headers) or, with
    ``format="json"``, as its size and the pixels and fraction of each class present."""
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    height, width = labels.shape
    if format == "json":
        total = max(1, labels.size)
        present = [
            {**classes[i], "pixels": int(n), "fraction": int(n) / total}
            for i, n in enumerate(counts)
            if n
        ]
        return JSONResponse(
            {
                "width": width,
                "height": height,
                "inference_seconds": round(seconds, 4),
                "classes": present,
            }
        )
    histogram = {str(i): int(n) for i, n in enumerate(counts) if n}
    buf = io.BytesIO()
    label_image(labels, palette).save(buf, format="PNG")
    headers = {
        "X-Image-Size": f"{width}x{height}",
        "X-Class-Histogram": json.dumps(histogram, separators=(",", ":")),
        "X-Inference-Seconds": f"{seconds:.4f}",
    }
    return Response(buf.getvalue(), media_type="image/png", headers=headers)


def _add_routes(app: FastAPI, state: _State, page: str, token: str | None = None) -> None:
    """The endpoints of the module docstring, answered by ``state.service``; with a ``token``
    the API (``/classes``, ``/predict``) needs it (:mod:`fcnseg.serve.auth`)."""
    api = [Depends(bearer_check(token))] if token is not None else []

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        if state.service is None:  # alive, the model not (yet) there
            status = "loading" if state.load_error is None else "failed"
            return {"status": status, "version": __version__, "auth": token is not None}
        return {**state.service.health(), "auth": token is not None}

    @app.get("/classes", dependencies=api)
    def get_classes() -> dict[str, Any]:
        service = state.service
        if service is None:
            service = state.require()
        return {"classes": service.classes, "untinted": service.untinted}

    @app.post("/predict", dependencies=api)
    async def predict(
        request: Request,
        format: str = Query("png", pattern="^(png|json)$", description="png or json"),
    ) -> Response:
        service = state.require()
        labels, seconds = await service.predict(request)
        return _prediction_response(labels, seconds, service.classes, service.palette, format)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Any unhandled error: logged, and answered with a 500 naming it."""
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}: {exc}"}, 500)


def create_app(
    predictor: Predictor | Callable[[], Predictor],
    *,
    limits: ServeLimits | None = None,
    options: InferenceOptions | None = None,
    title: str = "fcnseg",
    token: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``predictor`` (see the module docstring for the endpoints);
    ``options``: how every upload is predicted (tiling, TTA, CRF; default: whole image);
    ``token``: the bearer token the API requires (:mod:`fcnseg.serve.auth`; none: open).

    ``predictor`` may be a function that loads one: it then runs in a thread once the app
    starts (its lifespan), ``/health`` answers at once and ``/ready`` turns 200 when the model
    is there. ``app.state.serving`` holds the app's :class:`_State` (the server marks it
    draining on SIGTERM)."""
    limits = limits or ServeLimits()
    options = options or InferenceOptions()
    admission = Admission(limits.max_concurrent, limits.max_queue, limits.timeout)
    state = _State(admission)

    def attach(loaded: Predictor) -> None:
        state.service = _Service(loaded, limits, options, admission)

    def load(loader: Callable[[], Predictor]) -> None:
        try:
            attach(loader())
        except BaseException as exc:  # SystemExit from a CLI loader included: reported
            state.failed = exc
            log.error("the model failed to load: %s", state.load_error)
        else:
            log.info("model loaded; ready")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not isinstance(predictor, Predictor):  # a Predictor is attached below
            threading.Thread(target=load, args=(predictor,), name="fcnseg-load",
                             daemon=True).start()  # fmt: skip
        yield

    if isinstance(predictor, Predictor):
        attach(predictor)
    page = resources.files("fcnseg.serve").joinpath("page.html").read_text(encoding="utf-8")
    app = FastAPI(title=title, version=__version__, docs_url="/docs", redoc_url=None,
                  lifespan=lifespan)  # fmt: skip
    app.state.serving = state
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    _add_routes(app, state, page, token)
    add_operations(app, lambda: admission.running,
                   lambda: admission.admitted - admission.running, state.not_ready)  # fmt: skip
    app.add_exception_handler(Exception, _unexpected)
    return app
