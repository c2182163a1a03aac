"""Graceful stops: SIGINT/SIGTERM become a request to stop after the current iteration (with a
checkpoint); a second signal quits at once. Under torchrun every process agrees on the stop.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from fcnseg.engine.distributed import DistInfo

__all__ = ["StopRequests"]


class StopRequests:
    """Catches SIGINT/SIGTERM while :meth:`catching`; :meth:`agreed` is the signal number that
    asks the job to stop (0: none)."""

    def __init__(self, dist: DistInfo, device: torch.device) -> None:
        self.dist = dist
        self.device = device
        self.received = 0

    @contextmanager
    def catching(self) -> Iterator[None]:
        """Install the handlers (main thread only; elsewhere this does nothing)."""
        self.received = 0
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        pid = os.getpid()

        def handler(signum: int, frame: Any) -> None:
            if os.getpid() != pid:
                return  # a forked data-loader worker: the training process stops the run
            name = signal.Signals(signum).name
            if self.received:
                raise KeyboardInterrupt(f"second {name}: quit without saving")
            self.received = signum
            if self.dist.is_main:
                print(
                    f"fcnseg: {name} received; stopping with a checkpoint at the end of this "
                    "iteration (send it again to quit at once, without saving)",
                    file=sys.stderr,
                    flush=True,
                )

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def agreed(self) -> int:
        """The signal asking to stop (0: none), agreed by every process of the job."""
        if not self.dist.enabled:
            return self.received
        import torch.distributed as dist

        flag = torch.tensor([self.received], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
