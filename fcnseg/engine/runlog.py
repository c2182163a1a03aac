"""What a run writes as it goes: ``log.csv``, TensorBoard events (``tb/``), a progress bar,
and at the end the curves plot.

The CSV is the record resuming relies on: rows past the resumed iteration (and a row cut by a
kill) are dropped, so a resumed run's log reads like an uninterrupted one's.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from fcnseg.checkpoint import atomic_write

__all__ = ["LOG_FIELDS", "RunLog"]

LOG_FIELDS = ["iteration", "loss", "lr", "seconds", "pixel_acc", "mean_acc", "mean_iu", "fw_iu"]
#: The evaluation columns (logged under ``val/`` in TensorBoard).
VAL_FIELDS = LOG_FIELDS[4:]


class RunLog:
    """Rows to ``log.csv`` and TensorBoard, a tqdm bar; writes nothing off the main process."""

    def __init__(self, run_dir: Path, *, enabled: bool, progress: bool) -> None:
        self.path = Path(run_dir) / "log.csv"
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.progress = progress and enabled
        self.writer: Any = None
        self.bar: Any = None

    def truncate(self, iteration: int) -> None:
        """Keep the rows up to ``iteration`` (rewritten atomically; a row cut by a kill is
        dropped)."""
        if not self.enabled or not self.path.is_file():
            return
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if _row_iteration(r) <= iteration]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, out.getvalue().encode())

    def open(self, *, name: str, iteration: int, total: int) -> None:
        """Start the TensorBoard writer (dropping events after ``iteration``) and the bar."""
        if self.enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.run_dir / "tb", purge_step=iteration + 1)
        self.bar = tqdm(
            total=total, initial=iteration, desc=name, disable=not self.progress, dynamic_ncols=True
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.bar = self.writer = None

    def step(self, loss: float, lr: float) -> None:
        """One iteration done: advance the bar."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}")

    def row(self, row: dict[str, Any]) -> None:
        """Append ``row`` (keys from :data:`LOG_FIELDS`) to the CSV and TensorBoard."""
        if not self.enabled:
            return
        new = not self.path.is_file()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "iteration" and value is not None:
                    group = "val/" if key in VAL_FIELDS else "train/"
                    self.writer.add_scalar(group + key, value, row["iteration"])

    def message(self, text: str) -> None:
        """A line above the progress bar (main process only)."""
        if self.enabled:
            tqdm.write(text)

    def rows(self) -> list[dict[str, float]]:
        """The CSV as numbers (empty cells left out)."""
        with self.path.open() as f:
            return [
                {k: float(v) for k, v in r.items() if v not in ("", None)}
                for r in csv.DictReader(f)
            ]

    def plot_curves(self) -> None:
        """``curves.png``: loss and validation metrics over iterations."""
        from fcnseg.viz import plot_curves

        plot_curves(self.run_dir / "curves.png", self.rows())


def _row_iteration(row: dict[str, Any]) -> float:
    """A log row's iteration; rows cut short by a kill count as infinitely late (dropped)."""
    try:
        if None in row.values():
            return math.inf
        return int(row["iteration"])
    except (KeyError, TypeError, ValueError):
        return math.inf
