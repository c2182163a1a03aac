"""What ``fcnseg predict`` leaves on disk, written so that a crash at any moment leaves only
complete files: each output is written to a private temporary and renamed into place, off the
compute path (a background thread), and a per-rank JSONL manifest records each image once all
its files are in place (or the error that stopped it). A rerun skips images whose outputs are
all there."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MANIFEST", "OutputWriter", "PredictOutputs", "read_manifests"]

#: Manifest file name of rank R: ``manifest-rank{R}.jsonl`` in the output folder.
MANIFEST = "manifest-rank{rank}.jsonl"
#: Where temporaries live until renamed (removed when a run ends; cleared when one starts).
PARTIAL = ".fcnseg-partial"


@dataclass(frozen=True)
class PredictOutputs:
    """Which files ``fcnseg predict`` writes per image."""

    probabilities: bool = False
    panels: bool = False
    overlays: bool = True

    def names(self, stem: str) -> list[str]:
        names = [f"{stem}.png"] + ([f"{stem}_overlay.png"] if self.overlays else [])
        if self.probabilities:
            names.append(f"{stem}_probs.npy")
        if self.panels:
            names.append(f"{stem}_panel.png")
        return names


@dataclass
class OutputWriter:
    """Writes each image's files into ``out`` (see the module docstring) with at most
    ``pending`` images queued behind the compute; ``write(path, tmp_paths, ...)`` is supplied
    per image by the caller and writes the files given their temporary paths."""

    out: Path
    rank: int
    wanted: PredictOutputs
    pending: int = 8
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    _slots: threading.Semaphore = field(init=False, repr=False)
    _futures: list[Future] = field(default_factory=list, init=False, repr=False)
    #: This run's manifest records that carry an error (kept: the others are on disk only).
    failed: list[dict[str, Any]] = field(default_factory=list, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.partial = self.out / PARTIAL / f"rank{self.rank}"
        shutil.rmtree(self.partial, ignore_errors=True)  # a killed run's temporaries
        for _ in range(5):  # another rank may remove the shared parent as it finishes
            try:
                self.partial.mkdir(parents=True, exist_ok=True)
                break
            except FileNotFoundError:
                continue
        manifest = self.out / MANIFEST.format(rank=self.rank)
        cut = False
        if manifest.is_file() and manifest.stat().st_size:
            with manifest.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                cut = f.read(1) != b"\n"
        self.manifest = manifest.open("a")
        if cut:
            self.manifest.write("\n")  # a line cut by a crash ends here, not in the next one
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="fcnseg-writer")
        self._slots = threading.Semaphore(self.pending)

    def complete(self, path: Path) -> bool:
        """Whether every output of ``path`` is in place (renamed files are always whole)."""
        return all((self.out / name).is_file() for name in self.wanted.names(path.stem))

    def submit(
        self, path: Path, write: Callable[[dict[str, Path]], dict[str, Any]], record: dict
    ) -> None:
        """Queue ``write(tmp)`` (``tmp``: output name → temporary path; it returns extra
        manifest fields), then rename the files into place and append ``record``."""
        for future in self._futures:  # a failed write (disk full, …) stops the run now
            if future.done() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        self._futures = [f for f in self._futures if not f.done()]
        self._slots.acquire()
        self._futures.append(self._pool.submit(self._write, path, write, record))

    def _write(
        self, path: Path, write: Callable[[dict[str, Path]], dict[str, Any]], record: dict
    ) -> None:
        try:
            tmp = {name: self.partial / name for name in self.wanted.names(path.stem)}
            extra = write(tmp)
            done = []
            for name, file in tmp.items():
                if file.exists():
                    os.replace(file, self.out / name)
                    done.append(name)
            self.log({**record, **extra, "outputs": done, "done_at": round(time.time(), 3)})
        finally:
            self._slots.release()

    def log(self, record: dict[str, Any]) -> None:
        """Append one manifest line (flushed: a crash loses at most the line being written)."""
        with self._lock:
            self.manifest.write(json.dumps(record) + "\n")
            self.manifest.flush()
            if any(key.endswith("error") for key in record):
                self.failed.append(record)

    def close(self) -> None:
        """Wait for the queue, re-raise a writer's error, remove the temporaries."""
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(wait=True)
            self.manifest.close()
            shutil.rmtree(self.partial, ignore_errors=True)
            with contextlib.suppress(OSError):  # the last rank to finish removes the folder
                (self.out / PARTIAL).rmdir()


def read_manifests(out: Path) -> Iterator[dict[str, Any]]:
    """Every record of every rank's manifest in ``out`` (a line cut short by a crash is
    skipped)."""
    for file in sorted(out.glob(MANIFEST.format(rank="*"))):
        for line in file.read_text().splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def histogram(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Pixels per class name (classes present only)."""
    counts = torch.from_numpy(labels.astype(np.int64).ravel()).bincount(minlength=len(classes))
    return {classes[i]: int(n) for i, n in enumerate(counts.tolist()) if n and i < len(classes)}
