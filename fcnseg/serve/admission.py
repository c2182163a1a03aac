"""How much inference the service takes on at once, and how long one may take.

A request is *admitted* (or refused with 503 beyond ``max_concurrent`` running and
``max_queue`` waiting), waits for one of ``max_concurrent`` slots, and runs its inference in a
thread. With a timeout the client gets 504 once the inference has run that long; the thread
cannot be interrupted (PyTorch offers no way to stop a running forward pass), so the request
keeps its slot and its place in the admission count until the thread ends: a server with
abandoned work still never runs more than ``max_concurrent`` inferences at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

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

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` in a thread once a slot is free (the caller has been admitted, and
        leaves through this call). Past ``timeout`` seconds of running: :class:`InferenceTimeout`
        (504), while the slot and the admission stay held until the thread ends."""
        handed_over = abandoned = False
        try:
            await self.slots.acquire()
            self.running += 1
            job = _in_daemon_thread(fn, *args)

            def finish(done: asyncio.Future[T]) -> None:
                error = None if done.cancelled() else done.exception()  # retrieved: no warning
                if error is not None and abandoned:
                    log.info("an inference abandoned after the timeout ended with %r", error)
                self.running -= 1
                self.slots.release()
                self.leave()

            try:
                result = await asyncio.wait_for(asyncio.shield(job), self.timeout)
            except asyncio.TimeoutError:
                abandoned = True
                self.timed_out += 1
                raise InferenceTimeout(
                    504,
                    f"the inference took longer than {self.timeout:g} s (the server's "
                    "--timeout); send a smaller image or retry later",
                ) from None
            finally:
                handed_over = True  # from here on ``finish`` releases, now or when it ends
                if job.done():
                    finish(job)
                else:
                    job.add_done_callback(finish)
            self.served += 1
            return result
        finally:
            if not handed_over:  # cancelled or failed before the inference started
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
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting request
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # a closed loop: the server has shut down
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="fcnseg-inference", daemon=True).start()
    return future
