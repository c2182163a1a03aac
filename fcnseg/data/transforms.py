"""Joint image/mask transforms and batching, built on ``torchvision.transforms.v2``.

Datasets yield ``(tv_tensors.Image uint8 3×H×W, tv_tensors.Mask int64 H×W)``; v2 dispatches every
op on the tensor type, so one pipeline moves image and mask together, resamples masks with nearest
neighbours only and leaves them untouched by photometric ops. The output is plain tensors: the image
float32 in [0, 1] (normalisation is the model's ``preprocess``), the mask int64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from fcnseg.data.base import IGNORE_INDEX
from fcnseg.data.context_crop import ContextCrop
from fcnseg.models.base import Margins

__all__ = [
    "ContextCrop",
    "ElasticDeform",
    "PadCollate",
    "RandomScale",
    "SegmentationTransforms",
    "WeightMap",
    "elastic_displacement",
    "eval_transforms",
    "fill_from_preprocess",
    "pad_collate",
    "train_transforms",
]


class RandomScale(v2.Transform):
    """Resize by a factor drawn uniformly from ``scale_range``, relative to the input's own size.

    Written by hand because v2 has no such op: ``RandomResize`` draws an absolute shorter-side
    length and ``ScaleJitter`` scales relative to a fixed ``target_size``, neither of which is
    "0.5–2× this image". The resampling itself is v2's ``F.resize``: images bilinear with
    antialiasing, masks ``NEAREST_EXACT``. Nearest-exact samples the source pixel whose centre is
    nearest (``floor((i + 0.5) / s)``), the same pixel-centre convention as bilinear, whereas legacy
    ``NEAREST`` (``floor(i / s)``) shifts labels by up to half a source pixel against the image.
    """

    def __init__(self, scale_range: tuple[float, float]) -> None:
        super().__init__()
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < min <= max, got {scale_range}")
        self.scale_range = (lo, hi)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        lo, hi = self.scale_range
        scale = lo + float(torch.rand(())) * (hi - lo)  # torch's RNG: seeded like the rest of v2
        return {"size": [max(1, round(height * scale)), max(1, round(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return self._call_kernel(
            F.resize,
            inpt,
            params["size"],
            interpolation=v2.InterpolationMode.BILINEAR,
            antialias=True,
        )

    def extra_repr(self) -> str:
        return f"scale_range={self.scale_range}"


class WeightMap(tv_tensors.Mask):
    """Per-pixel loss weights (float H×W) that move with the mask: every geometric op resamples
    them with nearest neighbours, as a mask; padding and out-of-image pixels get weight 0 (unless
    a transform's ``fill`` names this type); the final dtype conversion leaves them float32."""


def elastic_displacement(coarse: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Dense displacement field for :func:`torchvision.transforms.v2.functional.elastic`.

    ``coarse``: 2×g×g displacements in pixels (x then y) at a g×g grid spanning the image (its
    corner points on the corner pixels), interpolated bicubically to every pixel as in the U-Net
    paper. Returns 1×H×W×2 in ``grid_sample`` units (``align_corners=False``: 2/W per pixel);
    output pixel ``p`` samples the input at ``p + displacement(p)``.
    """
    height, width = size
    dense = nnf.interpolate(
        coarse.to(torch.float32)[None], size=(height, width), mode="bicubic", align_corners=True
    )
    scale = torch.tensor([2.0 / width, 2.0 / height]).view(1, 2, 1, 1)
    return (dense * scale).permute(0, 2, 3, 1).contiguous()


class ElasticDeform(v2.Transform):
    """The U-Net paper's elastic deformation: random displacement vectors on a coarse ``grid`` ×
    ``grid`` grid, drawn from N(0, ``sigma``²) pixels, bicubically interpolated to a smooth
    per-pixel field; the same warp moves images (bicubic, clamped to the value range) and masks
    (nearest: labels stay labels).

    The warp is torchvision's ``F.elastic`` (``grid_sample``, dispatched on the tensor type);
    only the field is drawn here, since v2's ``ElasticTransform`` draws a different kind (a
    Gaussian-smoothed per-pixel field, Simard et al.). Images are warped in float32 and clamped,
    because bicubic overshoot would wrap around when cast back to uint8. Pixels sampled from
    outside the image get ``fill``: a value, or per type as in ``RandomCrop``, e.g.
    ``{tv_tensors.Image: (128,) * 3, tv_tensors.Mask: 255}``. ``p``: probability of applying.
    Randomness comes from torch's global RNG, so the pipeline's seeding controls it.
    """

    def __init__(
        self,
        sigma: float = 10.0,
        grid: int = 3,
        *,
        fill: Any = 0,
        p: float = 1.0,
    ) -> None:
        super().__init__()
        if sigma < 0 or grid < 2 or not 0.0 <= p <= 1.0:
            raise ValueError(f"need sigma >= 0, grid >= 2, 0 <= p <= 1; got {sigma}, {grid}, {p}")
        self.sigma = float(sigma)
        self.grid = int(grid)
        self.fill = fill
        self.p = float(p)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if self.p < 1.0 and float(torch.rand(())) >= self.p:
            return {"displacement": None}
        height, width = v2.query_size(flat_inputs)
        coarse = torch.randn(2, self.grid, self.grid) * self.sigma
        return {"displacement": elastic_displacement(coarse, (height, width))}

    def _fill_for(self, inpt: Any) -> Any:
        if isinstance(self.fill, Mapping):  # exact type, as v2's own ``fill`` dicts
            return self.fill.get(type(inpt), self.fill.get("others"))
        return self.fill

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        displacement = params["displacement"]
        if displacement is None:
            return inpt
        fill = self._fill_for(inpt)
        if isinstance(inpt, tv_tensors.Mask):  # and WeightMap: nearest
            return F.elastic(inpt, displacement, fill=fill)
        if isinstance(inpt, tv_tensors.Image):
            top = 1.0 if inpt.is_floating_point() else float(torch.iinfo(inpt.dtype).max)
            warped = F.elastic(
                inpt.to(torch.float32),
                displacement,
                interpolation=v2.InterpolationMode.BICUBIC,
                fill=fill,
            ).clamp_(0.0, top)
            if not inpt.is_floating_point():
                warped = warped.round_()
            return tv_tensors.wrap(warped.to(inpt.dtype), like=inpt)
        return self._call_kernel(F.elastic, inpt, displacement, fill=fill)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}, grid={self.grid}, fill={self.fill}, p={self.p:g}"


def _as_pair(image: Any, mask: Any) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Wrap PIL/ndarray/plain-tensor inputs as ``Image``/``Mask`` so v2 dispatches correctly."""
    if not isinstance(image, tv_tensors.Image):
        image = F.to_image(image)  # PIL, H×W×C ndarray or C×H×W tensor
    if not isinstance(mask, tv_tensors.Mask):
        if not torch.is_tensor(mask):  # PIL image or ndarray
            mask = torch.from_numpy(np.array(mask))
        mask = tv_tensors.Mask(mask)
    if mask.dtype != torch.int64:
        mask = tv_tensors.Mask(mask.to(torch.int64))
    if image.ndim != 3 or mask.ndim != 2 or tuple(image.shape[-2:]) != tuple(mask.shape):
        raise ValueError(
            f"expected a C×H×W image and an H×W mask of the same size, got image "
            f"{tuple(image.shape)} and mask {tuple(mask.shape)}"
        )
    return image, mask


class SegmentationTransforms:
    """``(image, mask) -> (float32 3×H×W tensor in [0, 1], int64 H×W tensor)`` via a v2 pipeline.

    Picklable (DataLoader workers); randomness comes from torch's global RNG, so
    ``torch.manual_seed`` (and the DataLoader's per-worker seeding) makes it reproducible.
    """

    def __init__(self, ops: Sequence[v2.Transform], *, quantise_float: bool = False) -> None:
        self.pipeline = v2.Compose(
            [
                *ops,
                # ``scale`` applies to images only: masks keep their label values.
                v2.ToDtype(
                    {tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
                    scale=True,
                ),
                v2.ToPureTensor(),
            ]
        )
        # Geometry runs on uint8 so that the integer ``fill`` means what it says; float inputs
        # are quantised first (at most 0.5/255 error, irrelevant for augmentation).
        self.quantise_float = quantise_float

    def __call__(self, image: Any, mask: Any, weights: Any = None) -> tuple[torch.Tensor, ...]:
        """``(image, mask)``, or ``(image, mask, weights)`` when a per-pixel weight map (H×W,
        e.g. :func:`fcnseg.weightmap.unet_weight_map`) is given: it moves with the mask."""
        image, mask = _as_pair(image, mask)
        if self.quantise_float and image.is_floating_point():
            image = F.to_dtype(image, torch.uint8, scale=True)
        if weights is None:
            out_image, out_mask = self.pipeline(image, mask)
            return out_image, out_mask
        if not isinstance(weights, WeightMap):
            weights = torch.as_tensor(
                np.asarray(weights) if not torch.is_tensor(weights) else weights
            )
            weights = WeightMap(weights.to(torch.float32))
        if tuple(weights.shape) != tuple(mask.shape):
            raise ValueError(
                f"weights {tuple(weights.shape)} do not match mask {tuple(mask.shape)}"
            )
        return tuple(self.pipeline(image, mask, weights))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def train_transforms(
    *,
    crop_size: tuple[int, int] | None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: bool = True,
    jitter: float = 0.0,
    fill: tuple[int, int, int],
    ignore_index: int = IGNORE_INDEX,
    elastic_sigma: float = 0.0,
    elastic_grid: int = 3,
    context: Margins | None = None,
) -> SegmentationTransforms:
    """Training augmentation: jitter, random scale, elastic deformation, random crop (padding
    if needed), flip; with ``context``: flip, then :class:`ContextCrop`.

    Args:
        crop_size: ``(height, width)`` of the output, or ``None`` for no crop (variable sizes;
            batch them with :func:`pad_collate`). Images smaller than the crop are padded, the
            image with ``fill`` and the mask with ``ignore_index``, then cropped at random.
        scale_range: resize factors drawn uniformly (``None`` or ``(1, 1)``: no scaling).
        hflip: random horizontal flip with probability 0.5.
        jitter: brightness/contrast/saturation strength (factors in ``[1 − jitter, 1 + jitter]``);
            0 switches it off. Image only.
        fill: padding colour in 0–255 RGB (required: padding should be the colour the model
            normalises to zero, see :func:`fill_from_preprocess`).
        ignore_index: the mask's padding label.
        elastic_sigma: :class:`ElasticDeform` with this displacement std (px; the U-Net paper:
            10) on an ``elastic_grid``² grid; 0 switches it off. It runs before the crop, so
            crops keep the real image around them; pixels pulled from outside the image get
            ``fill`` / ``ignore_index``.
        context: ``((top, bottom), (left, right))`` margins of image around each crop (needs
            ``crop_size``), cut from the image and mirrored only beyond its border
            (:class:`ContextCrop`; the model's ``training_context``). The flip then comes
            before the crop, since the margins need not be symmetric.

    Jitter runs first, not last: applied after padding it would recolour the ``fill`` border
    (brightness scales it) and contrast would average over padding.
    """
    if len(fill) != 3:
        raise ValueError(f"fill must be an RGB triple in 0–255, got {fill}")
    if jitter < 0:
        raise ValueError(f"jitter must be >= 0, got {jitter}")
    ops: list[v2.Transform] = []
    if jitter > 0:
        ops.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter))
    if scale_range is not None and tuple(scale_range) != (1.0, 1.0):
        ops.append(RandomScale(scale_range))
    if elastic_sigma > 0:
        fills = {tv_tensors.Image: tuple(int(c) for c in fill), tv_tensors.Mask: ignore_index}
        ops.append(ElasticDeform(elastic_sigma, elastic_grid, fill=fills))
    flip = [v2.RandomHorizontalFlip(p=0.5)] if hflip else []
    if context is not None:
        if crop_size is None:
            raise ValueError("a training context needs a crop_size")
        ops += [*flip, ContextCrop(tuple(crop_size), context, ignore_index=ignore_index)]
        return SegmentationTransforms(ops, quantise_float=True)
    if crop_size is not None:
        ops.append(
            v2.RandomCrop(
                tuple(crop_size),
                pad_if_needed=True,
                fill={tv_tensors.Image: tuple(int(c) for c in fill), tv_tensors.Mask: ignore_index},
            )
        )
    ops += flip
    return SegmentationTransforms(ops, quantise_float=True)


def eval_transforms() -> SegmentationTransforms:
    """No geometry change: the image to float32 in [0, 1], the mask to int64 plain tensors."""
    return SegmentationTransforms([])


def fill_from_preprocess(preprocess: Any) -> tuple[int, int, int]:
    """The RGB colour (0–255 ints) that ``preprocess`` maps to zero: its mean, in image units.

    ``preprocess`` is a :class:`~fcnseg.weights.Preprocess` or its ``to_dict()`` form. E.g. Caffe
    VGG (mean 123.68, 116.779, 103.939 at ``input_range`` 255) gives ``(124, 117, 104)``;
    torchvision's ImageNet mean (0.485, 0.456, 0.406 at range 1) gives ``(124, 116, 104)``. A BGR
    mean is reordered to RGB. The std does not matter: zero stays zero.
    """
    if isinstance(preprocess, Mapping):
        mean, input_range = preprocess["mean"], preprocess.get("input_range", 1.0)
        order = preprocess.get("channel_order", "RGB")
    else:
        mean, input_range = preprocess.mean, preprocess.input_range
        order = getattr(preprocess, "channel_order", "RGB")
    rgb = list(mean)[::-1] if order == "BGR" else list(mean)
    scale = 255.0 / float(input_range)
    r, g, b = (min(255, max(0, round(float(m) * scale))) for m in rgb)
    return r, g, b


class PadCollate:
    """Collate ``(image, mask)`` pairs of mixed sizes: pad bottom/right to the batch maximum.

    Images (float C×H×W in [0, 1]; uint8 is scaled) are padded with ``fill`` (RGB in [0, 1]),
    masks with ``ignore_index``. Returns ``(N×C×H×W float32, N×H×W int64)`` plain tensors.
    ``(image, mask, weights)`` triples also give ``N×H×W float32`` weights, padded with 0.
    Images may exceed their masks by a margin (:class:`ContextCrop`'s context) that is the
    same for the whole batch: they are padded to the largest mask plus that margin.
    """

    def __init__(
        self,
        *,
        ignore_index: int = IGNORE_INDEX,
        fill: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        self.ignore_index = int(ignore_index)
        self.fill = tuple(float(c) for c in fill)

    def __call__(self, batch: Sequence[tuple[Any, ...]]) -> tuple[torch.Tensor, ...]:
        if len(batch) == 0:
            raise ValueError("cannot collate an empty batch")
        if len(batch[0]) == 3:
            images, masks = self([item[:2] for item in batch])
            out_weights = torch.zeros(masks.shape, dtype=torch.float32)
            for i, item in enumerate(batch):
                weights = torch.as_tensor(item[2]).as_subclass(torch.Tensor)
                if tuple(weights.shape) != tuple(torch.as_tensor(item[1]).shape):
                    raise ValueError(f"sample {i}: weights {tuple(weights.shape)} != mask shape")
                out_weights[i, : weights.shape[-2], : weights.shape[-1]] = weights
            return images, masks, out_weights
        images = [torch.as_tensor(item[0]).as_subclass(torch.Tensor) for item in batch]
        masks = [torch.as_tensor(item[1]).as_subclass(torch.Tensor) for item in batch]
        images = [F.to_dtype(im, torch.float32, scale=True) for im in images]
        height = max(m.shape[-2] for m in masks)
        width = max(m.shape[-1] for m in masks)
        channels = images[0].shape[0]
        # The batch's context margin (0 without context): the first sample's.
        dy = max(0, images[0].shape[-2] - masks[0].shape[-2])
        dx = max(0, images[0].shape[-1] - masks[0].shape[-1])
        if len(self.fill) != channels:
            raise ValueError(f"fill has {len(self.fill)} values for {channels}-channel images")
        shape = (len(batch), channels, height + dy, width + dx)
        out_images = torch.empty(shape, dtype=torch.float32)
        out_images.copy_(torch.tensor(self.fill).view(1, channels, 1, 1).expand_as(out_images))
        out_masks = torch.full((len(batch), height, width), self.ignore_index, dtype=torch.int64)
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            h, w = mask.shape[-2:]
            if tuple(image.shape) != (channels, h + dy, w + dx):
                raise ValueError(
                    f"sample {i}: image {tuple(image.shape)} does not match "
                    f"mask {tuple(mask.shape)} (plus the batch's context margin {(dy, dx)})"
                )
            out_images[i, :, : h + dy, : w + dx] = image
            out_masks[i, :h, :w] = mask
        return out_images, out_masks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(ignore_index={self.ignore_index}, fill={self.fill})"


def pad_collate(
    batch: Sequence[tuple[Any, ...]],
    *,
    ignore_index: int = IGNORE_INDEX,
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> tuple[torch.Tensor, ...]:
    """Functional form of :class:`PadCollate`; bind options with ``functools.partial``."""
    return PadCollate(ignore_index=ignore_index, fill=fill)(batch)
