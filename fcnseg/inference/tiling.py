"""Overlap-tiled inference: blend overlapping tiles with a weight that tapers linearly to the
tile borders, so there are no seams, keeping only one strip of tiles in memory: rows no later
tile can touch are finalised as soon as the strip moves on."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

__all__ = ["blend_rows", "tile_positions", "tile_weight"]


def tile_positions(size: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering ``size`` with windows of ``tile`` at ``stride`` (last one flush)."""
    if tile >= size:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def tile_weight(height: int, width: int, overlap: int) -> torch.Tensor:
    """Blending weight: 1 inside, ramping linearly to 1/(overlap+1) over ``overlap`` px."""

    def ramp(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float32)
        edge = torch.minimum(i + 1, n - i)
        return (edge / (overlap + 1)).clamp(max=1.0) if overlap > 0 else torch.ones(n)

    return ramp(height)[:, None] * ramp(width)[None, :]


def blend_rows(
    tile_fn: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    tile: int,
    overlap: int,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Blended probabilities of ``image`` (3×H×W) in finished rows, top to bottom, as
    ``(first row, C×rows×W)``, on the image's device.

    ``tile_fn`` maps a 3×h×w crop of ``image`` (as given: a huge uint8 image is never copied
    to float whole) to its C×h×w probabilities."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    h, w = image.shape[-2:]
    stride = tile - overlap
    ys, xs = tile_positions(h, tile, stride), tile_positions(w, tile, stride)
    th, tw = min(tile, h), min(tile, w)
    weight = tile_weight(th, tw, overlap).to(image.device)
    acc = norm = None  # allocated at the first tile, when the class count is known
    top = 0  # first row held in the buffers
    for k, y in enumerate(ys):
        if acc is not None and norm is not None and y > top:  # rows above y are final
            done = y - top
            yield top, acc[:, :done] / norm[:done]
            acc = torch.cat([acc[:, done:], acc.new_zeros(acc.shape[0], done, w)], 1)
            norm = torch.cat([norm[done:], norm.new_zeros(done, w)], 0)
            top = y
        for x in xs:
            p = tile_fn(image[:, y : y + th, x : x + tw])
            if acc is None or norm is None:
                acc = p.new_zeros(p.shape[0], th, w)
                norm = p.new_zeros(th, w)
            acc[:, y - top : y - top + th, x : x + tw] += p * weight
            norm[y - top : y - top + th, x : x + tw] += weight
        if k == len(ys) - 1:
            yield top, acc / norm  # type: ignore[operator]
