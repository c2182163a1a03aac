"""A data path that lives on the device: decode a dataset once into uint8 tensors (on the GPU
when there is one) and augment whole batches there, so training never waits on the CPU.

    data = ResidentData.from_dataset(build_dataset("camvid", root, "train"), device="cuda")
    images, masks = data.sample(16, crop=(360, 480), generator=gen)   # augmented batch

CamVid train + val at 360×480 is about 250 MB as uint8. Augmentation is one batched affine
warp (``F.affine_grid`` + ``F.grid_sample``): random scale, horizontal flip and crop position
per sample; bilinear for images (the border filled with ``fill``, e.g. the weights' mean
colour) and nearest for masks (the border filled with ``ignore_index``). The per-sample
pipeline in :mod:`fcnseg.data.transforms` stays the reference for CPU training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from fcnseg.data.base import IGNORE_INDEX, DataError

__all__ = ["ResidentData", "affine_augment"]


def affine_augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    crop: tuple[int, int],
    scale_range: tuple[float, float] = (1.0, 1.0),
    hflip: bool = False,
    fill: Sequence[float] = (0.0, 0.0, 0.0),
    ignore_index: int = IGNORE_INDEX,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale by s ~ U(scale_range), flip with probability ½ and crop ``crop`` at a uniform
    position, per sample, in one warp. ``images``: B×3×H×W uint8 or float in [0, 1];
    ``masks``: B×H×W integer. Returns float images in [0, 1] and int64 masks of size ``crop``.

    A crop larger than the scaled image is placed at a uniform offset with the rest filled.
    With scale 1, no flip and ``crop`` equal to the input size this is the identity."""
    b, _, h, w = images.shape
    ch, cw = crop
    dev = images.device
    rand = torch.rand(b, 4, generator=generator, device=generator.device if generator else None)
    rand = rand.to(dev)
    lo, hi = scale_range
    s = lo + (hi - lo) * rand[:, 0]
    flip = (rand[:, 1] < 0.5) if hflip else torch.zeros(b, dtype=torch.bool, device=dev)
    # Offsets of the crop in the scaled image (negative: the crop overhangs, filled).
    sh, sw = s * h, s * w
    oy, ox = rand[:, 2] * (sh - ch), rand[:, 3] * (sw - cw)
    # Output pixel u (centre u + ½) ↦ scaled pixel u + o ↦ input (u + o + ½)/s − ½; in
    # normalised align_corners=False coordinates that is x_n = a·u_n + c with:
    ax, ay = cw / sw, ch / sh
    cx, cy = (cw + 2 * ox) / sw - 1, (ch + 2 * oy) / sh - 1
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = torch.where(flip, -ax, ax)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = ay
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [b, 1, ch, cw], align_corners=False)
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(fill, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
    out = F.grid_sample(x - mean, grid, mode="bilinear", align_corners=False) + mean
    # Masks: sample (label + 1) so 0 marks "outside", then map it to ignore_index.
    m = F.grid_sample((masks.float() + 1)[:, None], grid, mode="nearest", align_corners=False)
    m = m[:, 0].round().long() - 1
    m[m < 0] = ignore_index
    return out.clamp(0, 1), m


@dataclass
class ResidentData:
    """Images (N×3×H×W uint8) and masks (N×H×W uint8, ``ignore_index`` for void) on a device."""

    images: torch.Tensor
    masks: torch.Tensor
    classes: list[str]
    palette: list[list[int]]
    ignore_index: int = IGNORE_INDEX

    @classmethod
    def from_dataset(
        cls,
        dataset: object,
        *,
        size: tuple[int, int] | None = None,
        device: str | torch.device = "cpu",
        limit: int | None = None,
        progress: bool = True,
    ) -> ResidentData:
        """Decode ``dataset`` (an fcnseg dataset without transforms: (image, mask) pairs) once,
        resizing to ``size`` (bilinear with antialias / nearest) when given; all samples must
        then share one size."""
        n = len(dataset) if limit is None else min(limit, len(dataset))  # type: ignore[arg-type]
        if n == 0:
            raise DataError(f"{dataset!r} is empty: nothing to load")
        images, masks = [], []
        for i in tqdm(range(n), desc="decode", disable=not progress, leave=False):
            image, mask = dataset[i]  # type: ignore[index]
            image, mask = torch.as_tensor(image), torch.as_tensor(mask)
            if mask.dim() == 3:
                mask = mask[0]
            if size is not None and tuple(image.shape[-2:]) != tuple(size):
                image = F.interpolate(image[None].float(), size=size, mode="bilinear",
                                      antialias=True, align_corners=False)[0]  # fmt: skip
                image = image.round().clamp(0, 255).to(torch.uint8)
                mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")
                mask = mask[0, 0].long()
            if images and image.shape != images[0].shape:
                raise DataError(
                    f"sample {i} is {tuple(image.shape[-2:])}, sample 0 "
                    f"{tuple(images[0].shape[-2:])}: pass size= to resize them to one size"
                )
            images.append(image.to(torch.uint8))
            masks.append(mask.to(torch.uint8))
        return cls(
            torch.stack(images).to(device),
            torch.stack(masks).to(device),
            list(dataset.classes),  # type: ignore[attr-defined]
            [list(c) for c in dataset.palette],  # type: ignore[attr-defined]
        )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        return self.images.numel() + self.masks.numel()

    def sample(
        self,
        batch_size: int,
        *,
        crop: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (1.0, 1.0),
        hflip: bool = False,
        fill: Sequence[float] = (0.0, 0.0, 0.0),
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch (indices uniform without replacement within the batch), augmented by
        :func:`affine_augment`; ``crop`` defaults to the stored size."""
        gen_dev = generator.device if generator is not None else None
        idx = torch.randperm(len(self), generator=generator, device=gen_dev)[:batch_size]
        return self.augment(
            idx,
            crop=crop,
            scale_range=scale_range,
            hflip=hflip,
            fill=fill,
            generator=generator,
        )

    def augment(
        self,
        index: torch.Tensor,
        *,
        crop: tuple[int, int] | None = None,
        scale_range: tuple[float, float] = (1.0, 1.0),
        hflip: bool = False,
        fill: Sequence[float] = (0.0, 0.0, 0.0),
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples ``index`` as one batch augmented by :func:`affine_augment`; ``crop``
        defaults to the stored size."""
        idx = index.to(self.images.device)
        crop = crop or tuple(self.images.shape[-2:])  # type: ignore[assignment]
        return affine_augment(
            self.images[idx],
            self.masks[idx],
            crop=crop,  # type: ignore[arg-type]
            scale_range=scale_range,
            hflip=hflip,
            fill=fill,
            ignore_index=self.ignore_index,
            generator=generator,
        )

    def batches(self, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The whole set in order, unaugmented (for evaluation): float images, int64 masks."""
        return [
            (self.images[i : i + batch_size].float() / 255, self.masks[i : i + batch_size].long())
            for i in range(0, len(self), batch_size)
        ]
