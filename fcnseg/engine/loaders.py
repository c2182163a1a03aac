"""Data loaders whose order and augmentation are a pure function of (seed, position).

Training is iteration-based: an endless, seeded stream of samples, each with its own
augmentation seed. Resuming after ``k`` samples therefore continues with exactly the samples
and random crops/flips an uninterrupted run would have seen, with any number of workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from fcnseg.data.base import SegmentationDataset

__all__ = ["Resized", "SampleStream", "SeededSamples", "ShardSampler", "make_loader"]

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads consecutive seeds apart


def sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of the ``position``-th sample of a run seeded with ``seed``."""
    return (seed * _MIX + position * 0xBF58476D1CE4E5B9 + 1) % (2**63 - 1)


class SampleStream(Sampler):
    """Endless ``(index, augmentation seed)`` stream: a fresh permutation per epoch.

    With ``world_size`` > 1 each rank takes every ``world_size``-th entry of the shared
    permutation (padded by wrapping so all ranks take the same number of steps). ``start`` skips
    the entries this rank has already consumed.
    """

    def __init__(
        self, size: int, *, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        if size < 1:
            raise ValueError("cannot stream an empty dataset")
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size = rank, world_size
        self.per_rank = -(-size // world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        order += order[: self.per_rank * self.world_size - self.size]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        while True:
            epoch, offset = divmod(position, self.per_rank)
            order = self.epoch_order(epoch)
            for i in range(offset, self.per_rank):
                global_position = (epoch * self.per_rank + i) * self.world_size + self.rank
                yield order[i], sample_seed(self.seed, global_position)
            position = (epoch + 1) * self.per_rank


class ShardSampler(Sampler):
    """Every ``world_size``-th index, no padding: evaluation counts each sample exactly once."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class SeededSamples(Dataset):
    """``dataset[(index, seed)]``: the sample with its transforms run under ``seed``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):  # leaves the caller's RNG untouched
            torch.manual_seed(seed)
            return self.dataset[index]


class Resized:
    """Resize image (bilinear, antialiased) and mask (nearest-exact) to ``size``, then
    ``then``."""

    def __init__(self, size: list[int] | tuple[int, int], then: Any = None) -> None:
        self.size = tuple(size)
        self.resize = v2.Resize(self.size, antialias=True)
        self.then = then

    def __call__(self, image: Any, mask: Any, *extra: Any) -> Any:
        # Labels (and weight maps) by hand: v2.Resize always takes the legacy "nearest" for
        # masks, while the device-resident path (fcnseg.data.resident) takes "nearest-exact";
        # one rule for training and evaluation either way.
        out = (self.resize(image), *(_nearest_exact(m, self.size) for m in (mask, *extra)))
        return self.then(*out) if self.then is not None else out


def _nearest_exact(labels: Any, size: tuple[int, ...]) -> Any:
    """``labels`` (H×W or 1×H×W, any dtype) resized by pixel-centre nearest neighbour, keeping
    its type (e.g. ``tv_tensors.Mask``)."""
    plain = torch.as_tensor(labels).as_subclass(torch.Tensor)
    x = plain.reshape(1, 1, *plain.shape[-2:]).double()  # exact for any label value
    out = F.interpolate(x, size=size, mode="nearest-exact").to(plain.dtype)
    out = out.reshape(*plain.shape[:-2], *size)
    return tv_tensors.wrap(out, like=labels) if isinstance(labels, tv_tensors.TVTensor) else out


def make_loader(
    dataset: SegmentationDataset | Dataset,
    *,
    batch_size: int,
    sampler: Sampler,
    collate: Any,
    num_workers: int,
    device: torch.device,
) -> DataLoader:
    """A DataLoader with its own RNG (so creating it never consumes the global one)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator(),
    )
