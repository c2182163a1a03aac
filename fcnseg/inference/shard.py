"""Which images a process predicts: one sorted list of inputs, split across the ranks of a
torchrun job so that every image is predicted exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["check_unique_names", "shard"]


def shard(paths: Sequence[Path], rank: int, world_size: int) -> list[Path]:
    """Rank ``rank``'s share of ``paths``: the sorted, de-duplicated list, every
    ``world_size``-th image from position ``rank`` (shares differ by at most one image; every
    rank computes the same list, so no image is predicted twice or missed)."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a job of {world_size} process(es)")
    ordered = sorted(set(paths), key=str)
    return ordered[rank::world_size]


def check_unique_names(paths: Sequence[Path]) -> None:
    """Outputs are named after the input's stem: two inputs with one stem (``a/x.jpg`` and
    ``b/x.png``) would overwrite each other's results, so they are refused up front."""
    seen: dict[str, Path] = {}
    for path in sorted(set(paths), key=str):
        other = seen.setdefault(path.stem, path)
        if other != path:
            raise ValueError(
                f"inputs {other} and {path} would both write {path.stem}.png; predict them "
                "into separate output folders (-o), or rename one"
            )
