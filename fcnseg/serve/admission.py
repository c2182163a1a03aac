"""How much inference the service takes on at once, and how long one may take.

A request is *admitted* (or refused with 503 beyond ``max_concurrent`` running and
``max_queue`` waiting), waits for one of ``max_concurrent`` slots, and runs its inference in a
thread. With a timeout the client gets 504 once the inference has run that long; the thread
cannot be interrupted (PyTorch offers no way to stop a running forward pass), so the request
keeps its slot and its place in the admission count until the thread ends: a server with
abandoned work still never runs more than ``max_concurrent`` inferences at once. The timeout
counts from the moment the request asks for a slot: a client behind a stuck inference gets its
504 in time too, not an answer whenever the stuck one ends.

The counters and the slots belong to one event loop (the server's); the inference thread hands
its result back to that loop, and one that has closed (the server has shut down) gets nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException

__all__ = ["Admission", "InferenceTimeout"]

log = logging.getLogger("fcnseg.serve")

T = TypeVar("T")


class InferenceTimeout(HTTPException):
    """504: the inference ran past the server's timeout."""


class Admission:
    """Counts requests admitted (running + waiting) and runs their inference in a slot."""

    def __init__(self, max_concurrent: int, max_queue: int, timeout: float | None) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.timeout = timeout
        self.admitted = 0
        self.running = 0
        self.served = 0
        self.timed_out = 0
        self.abandoned = 0  # running inferences whose request has gone (timed out, cancelled)
        self.lock = threading.Lock()
        self.slots = anyio.Semaphore(max_concurrent)

    def try_enter(self) -> bool:
        """Admit one more request, or ``False`` when running + waiting is at the bound."""
        with self.lock:
            if self.admitted >= self.max_concurrent + self.max_queue:
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.admitted -= 1

    @property
    def owed(self) -> int:
        """Admitted requests still owed an answer (those past their timeout are answered)."""
        return self.admitted - self.abandoned

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a thread once a slot is free (the caller has been admitted, and
        leaves through this call). ``timeout`` bounds the wait for a slot and the run together:
        past it, :class:`InferenceTimeout` (504), while a running inference keeps its slot and
        its admission until its thread ends."""
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        try:
            with anyio.fail_after(self.timeout):  # None: no limit
                await self.slots.acquire()
        except TimeoutError:
            self.leave()
            self.timed_out += 1
            raise self._too_long("no inference slot came free") from None
        except BaseException:  # cancelled while queued
            self.leave()
            raise
        self.running += 1
        try:
            job = _in_daemon_thread(fn, *args)
        except BaseException:
            self._release()
            raise
        try:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            result = await asyncio.wait_for(asyncio.shield(job), left)
        except asyncio.TimeoutError:
            self.timed_out += 1
            raise self._too_long("the inference did not finish") from None
        finally:
            if job.done():
                self._finish(job, abandoned=False)
            else:  # timed out, or the request was cancelled: released when the thread ends
                self.abandoned += 1
                job.add_done_callback(functools.partial(self._finish, abandoned=True))
        self.served += 1
        return result

    def _too_long(self, what: str) -> InferenceTimeout:
        return InferenceTimeout(
            504,
            f"{what} within {self.timeout:g} s (the server's --timeout, queueing included); "
            "send a smaller image or retry later",
        )

    def _finish(self, job: asyncio.Future[Any], abandoned: bool) -> None:
        error = None if job.cancelled() else job.exception()  # retrieved: no asyncio warning
        if abandoned:
            self.abandoned -= 1
            if error is not None:
                log.info("an inference abandoned after its timeout ended with %r", error)
        self._release()

    def _release(self) -> None:
        self.running -= 1
        self.slots.release()
        self.leave()


def _in_daemon_thread(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """``fn(*args)`` in a new daemon thread, as a future of the running loop.

    Not anyio's or asyncio's worker pools: their threads are joined when the interpreter exits,
    so an inference abandoned after a timeout would hold up a bounded shutdown."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: object, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(result)  # type: ignore[arg-type]
            return
        try:
            future.set_exception(error)
        except TypeError:  # StopIteration cannot travel through a future
            future.set_exception(RuntimeError(f"the inference raised {error!r}"))

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting request
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: the server has shut down
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="fcnseg-inference", daemon=True).start()
    return future
