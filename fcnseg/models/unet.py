"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015): the original architecture, with valid
(unpadded) convolutions and overlap-tile inference by mirroring the image border.

Each level of the contracting path is two 3×3 convolutions + ReLU, then a 2×2 max-pool that
doubles the channels of the next level; the expanding path upsamples with a 2×2 up-convolution
that halves the channels, crops the encoder map of the same level to it and concatenates (or,
``fuse="sum"``, adds), then two 3×3 convolutions + ReLU; a 1×1 convolution gives the scores.

With ``padding="valid"`` every 3×3 convolution eats a pixel per side, so the output is smaller
than the input: 572×572 → 388×388 at depth 4. All sizes, offsets and crops come from
:mod:`fcnseg.models.geometry` (the modules are registered in main-path order, so ``trace`` and
``output_size`` read the network directly). :meth:`UNet.forward` returns an output of the
input's size, as every fcnseg model does (trainer, evaluation and the tiled ``Predictor`` rely
on it): it extrapolates the missing context by mirroring the image, as the paper's overlap-tile
strategy does at the image border. :meth:`UNet.forward_valid` is the bare network; training
feeds it crops whose context is cut from the image (:meth:`UNet.training_context`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fcnseg.models import geometry as G
from fcnseg.models.base import Margins, SegmentationModel
from fcnseg.models.registry import register_model
from fcnseg.weights import Preprocess

__all__ = ["UNet", "mirror_pad", "overlap_tile", "unet"]

#: Normalisation of a network trained from scratch on [0, 1] images: to [−1, 1]. Grey EM
#: images (replicated to RGB by the data loaders) have no useful per-channel statistics.
UNET_PREPROCESS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


def _reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of ``n`` samples mirrored ``before``/``after`` times past the ends (edge pixel
    not repeated, as ``numpy.pad(mode="reflect")``), for pads of any length."""
    index = torch.arange(-before, n + after, device=device)
    # period 1 when n == 1 (every index → 0) without a branch on n, so that a symbolic n
    # (torch.export, ONNX with dynamic sizes) needs no guard
    if isinstance(n, torch.Tensor):  # a size traced by torch.jit.trace
        period = (2 * (n - 1)).clamp(min=1)
    else:  # a tensor for ONNX, which cannot take a symbolic scalar here
        period = torch.full((1,), torch.sym_max(2 * (n - 1), 1), device=device)
    index = torch.remainder(index, period)
    return torch.where(index >= n, period - index, index)


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror the border of ``x`` (…×H×W) outwards by the given pixels, as the U-Net paper
    extrapolates missing context.

    Written with index arithmetic because ``F.pad(mode="reflect")`` refuses pads as large as
    the input (a 16-px image needs 92+ px of context per side); for smaller pads it agrees.
    """
    h, w = x.shape[-2], x.shape[-1]
    rows = _reflect_index(h, top, bottom, x.device)
    cols = _reflect_index(w, left, right, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _init(module: nn.Module) -> None:
    """The paper's initialisation: Gaussian with std sqrt(2 / N), N = inputs of one unit."""
    if isinstance(module, nn.ConvTranspose2d):
        # Kernel 2, stride 2: each output pixel sees one tap of every input channel.
        taps = module.in_channels * math.prod(module.kernel_size) // math.prod(module.stride)
        nn.init.normal_(module.weight, std=math.sqrt(2.0 / taps))
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)


def _double_conv(c_in: int, c_out: int, padding: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=padding),
        nn.ReLU(inplace=True),
    ]


class UpLevel(nn.Module):
    """One level of the expanding path: 2×2 up-convolution, fuse with the cropped encoder map
    (``crop`` pixels per side, derived from the geometry), two 3×3 convolutions."""

    def __init__(self, c_in: int, padding: int, fuse: str) -> None:
        super().__init__()
        c_out = c_in // 2
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        self.fuse = fuse
        self.crop = 0
        self.convs = nn.Sequential(
            *_double_conv(2 * c_out if fuse == "concat" else c_out, c_out, padding)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        o = self.crop
        skip = skip[..., o : o + x.shape[-2], o : o + x.shape[-1]]
        x = torch.cat([skip, x], 1) if self.fuse == "concat" else skip + x
        return self.convs(x)


class UNet(SegmentationModel):
    """U-Net; see the module docstring and :func:`unet`.

    ``forward(x)``: normalised images N×C×H×W (see :attr:`preprocess`; C = ``in_channels``, or 3
    for a grey network: RGB is averaged to grey, exact for grey images stored as RGB) → logits
    N×``num_classes``×H×W for any H, W ≥ 1. ``forward_valid(x)`` (or ``forward(x,
    valid=True)``): the bare network, output ``output_size(H)`` × ``output_size(W)``, output
    pixel ``i`` centred on input pixel ``i + context``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 1,
        base_width: int = 64,
        depth: int = 4,
        padding: str = "valid",
        fuse: str = "concat",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if base_width < 1 or depth < 0:
            raise ValueError(f"need base_width >= 1 and depth >= 0, got {base_width}, {depth}")
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        if fuse not in ("concat", "sum"):
            raise ValueError(f"fuse must be 'concat' or 'sum', got {fuse!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.padding = padding
        self.fuse = fuse
        self.depth = depth
        self.preprocess = Preprocess(UNET_PREPROCESS["mean"], UNET_PREPROCESS["std"])
        pad = 1 if padding == "same" else 0
        widths = [base_width * 2**k for k in range(depth + 1)]
        # Registration order is the main path (geometry walks it): level k = [pool,] 2 convs.
        levels: list[nn.Module] = [nn.Sequential(*_double_conv(in_channels, widths[0], pad))]
        for k in range(1, depth + 1):
            levels.append(
                nn.Sequential(nn.MaxPool2d(2), *_double_conv(widths[k - 1], widths[k], pad))
            )
        self.encoder = nn.ModuleList(levels)
        # The paper's drop-out at the end of the contracting path (0 = off).
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.ModuleList(UpLevel(widths[k], pad, fuse) for k in range(depth, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        self.apply(_init)

        # Crops of the skip connections, from the grids of both maps (never hard-coded).
        grids = []
        grid = G.Grid()
        for level in self.encoder:
            grid = G.trace(level, grid)
            grids.append(grid)
        for level, skip_grid in zip(self.decoder, reversed(grids[:-1]), strict=True):
            grid = G.trace(level.up, grid)
            offset = G.alignment(skip_grid, grid)
            if offset.denominator != 1 or offset < 0:
                raise ValueError(f"cannot crop {skip_grid} onto {grid}")  # not for 2×2 pools
            level.crop = int(offset)
            grid = G.trace(level.convs, grid)
        self.output_grid = G.trace(self, G.Grid())
        #: Pixels of context the valid network eats on each side (92 at depth 4; 0 for "same").
        self.context = int(self.output_grid.offset)
        self._pads: dict[int, tuple[int, int]] = {}
        self._rule: tuple[int, int, int] | None = None

    # ------------------------------------------------------------------ geometry

    def output_size(self, size: int) -> int:
        """Output size of :meth:`forward_valid` for an input of ``size`` pixels."""
        return G.output_size(self, size)

    def input_size(self, size: int) -> int:
        """Smallest input of :meth:`forward_valid` giving ``size`` output pixels (572 for 388
        at depth 4); every 2×2 pool then sees an even size."""
        return G.input_size(self, size)

    def same_size_padding(self, size: int) -> tuple[int, int]:
        """Mirror padding ``(before, after)`` :meth:`forward` applies to an axis of ``size``.

        A symbolic size (``torch.export``; ONNX export with dynamic height and width) gets the
        closed form of :meth:`_padding_rule` instead of the geometry's search, which would fix
        the size in the graph."""
        if not isinstance(size, int):
            period, a, c = self._padding_rule()
            return self.context, period * (
                (size + a + period - 1) // period
            ) + c - size - self.context
        if size not in self._pads:
            self._pads[size] = G.same_size_padding(self, size)
        return self._pads[size]

    def _padding_rule(self) -> tuple[int, int, int]:
        """``(P, a, c)`` with ``input_size(s) == P * ceil((s + a) / P) + c`` for every size s,
        P = 2**depth: fitted to the geometry's :meth:`input_size` over two periods (the rule
        repeats with period P, each pool halving) and checked over a third."""
        if self._rule is None:
            period = 2**self.depth
            sizes = range(1, 3 * period + 1)
            need = {s: self.input_size(s) for s in sizes}
            for a in range(period):
                c = need[1] - period * ((1 + a + period - 1) // period)
                if all(need[s] == period * ((s + a + period - 1) // period) + c for s in sizes):
                    self._rule = (period, a, c)
                    break
            else:
                raise ValueError(f"no periodic padding rule fits {self.extra_repr()}")
        return self._rule

    # ------------------------------------------------------------------ forward

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_channels:
            return x
        if self.in_channels == 1 and c == 3:
            return x.mean(1, keepdim=True)
        if self.in_channels == 3 and c == 1:
            return x.expand(-1, 3, -1, -1)
        raise ValueError(f"expected {self.in_channels}-channel images, got shape {tuple(x.shape)}")

    def forward_valid(self, x: torch.Tensor) -> torch.Tensor:
        """The bare network: logits for the pixels whose whole context is inside ``x``."""
        x = self._channels(x)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
        x = self.dropout(skips.pop())
        for level in self.decoder:
            x = level(x, skips.pop())
        return self.head(x)

    def forward(self, x: torch.Tensor, *, valid: bool = False) -> torch.Tensor:
        """Logits of the input's size: the image mirrored by the context the network needs (and
        up to a size every pool divides evenly), then the output cropped back. ``valid=True``:
        :meth:`forward_valid` (a training tile that carries its context, see
        :meth:`training_context`)."""
        if valid:
            return self.forward_valid(x)
        h, w = x.shape[-2], x.shape[-1]
        (top, bottom), (left, right) = self.same_size_padding(h), self.same_size_padding(w)
        out = self.forward_valid(mirror_pad(x, top, bottom, left, right))
        return out[..., :h, :w]

    def training_context(self, height: int, width: int) -> Margins | None:
        """A valid-convolution U-Net trains as the paper does: on output crops whose context
        comes from the image, the margins :meth:`forward` would mirror (``None`` for "same")."""
        if self.padding != "valid":
            return None
        return self.same_size_padding(height), self.same_size_padding(width)

    def tiler(self, tile: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The paper's overlap-tile strategy (:func:`overlap_tile`) for a valid-convolution
        U-Net, with ``tile`` rounded down to a multiple of ``2**depth`` (where it is exact);
        ``None`` for a "same" U-Net (blended tiles then)."""
        if self.padding != "valid":
            return None
        step = 2**self.depth
        size = max(step, tile // step * step)
        return lambda x: overlap_tile(self, x, size)

    def extra_repr(self) -> str:
        return f"padding={self.padding!r}, fuse={self.fuse!r}, context={self.context}"


@torch.no_grad()
def overlap_tile(model: UNet, x: torch.Tensor, tile: int) -> torch.Tensor:
    """The paper's overlap-tile strategy: logits of ``x`` (normalised, N×C×H×W) computed in
    output tiles of ``tile`` pixels, each from its input tile with the full context (taken from
    the image, mirrored only outside it). Equals ``model(x)`` when ``tile`` is a multiple of
    ``2**depth`` (then every tile sees the pooling grid of the whole image). Needs
    ``padding="valid"``: zero-padded convolutions would see each tile's border.
    """
    if model.padding != "valid":
        raise ValueError("overlap_tile needs a valid-convolution U-Net (padding='valid')")
    h, w = x.shape[-2], x.shape[-1]
    (top, _), (left, _) = model.same_size_padding(h), model.same_size_padding(w)
    need = model.input_size(tile) - tile  # context of a full tile, both sides
    padded = mirror_pad(x, top, need - top + tile, left, need - left + tile)
    out = torch.empty(x.shape[0], model.num_classes, h, w, dtype=x.dtype, device=x.device)
    for y in range(0, h, tile):
        for x0 in range(0, w, tile):
            window = padded[..., y : y + tile + need, x0 : x0 + tile + need]
            scores = model.forward_valid(window)
            th, tw = min(tile, h - y), min(tile, w - x0)
            out[..., y : y + th, x0 : x0 + tw] = scores[..., :th, :tw]
    return out


@register_model("unet")
def unet(
    *,
    num_classes: int,
    in_channels: int = 1,
    base_width: int = 64,
    depth: int = 4,
    padding: str = "valid",
    fuse: str = "concat",
    dropout: float = 0.0,
) -> UNet:
    """U-Net as in the paper (defaults: 64 channels at the top, 4 poolings, valid convolutions).

    Args:
        num_classes: output classes (2 for the paper's cell/membrane task).
        in_channels: 1 (grey; RGB input is averaged to grey) or 3.
        base_width: channels of the first level; level ``k`` has ``base_width · 2^k``.
        depth: number of 2×2 poolings (4 in the paper).
        padding: ``"valid"`` (the paper: unpadded 3×3 convolutions, output smaller than the
            input, context mirrored by :meth:`UNet.forward`) or ``"same"`` (zero-padded).
        fuse: ``"concat"`` (the paper: crop and concatenate) or ``"sum"`` (add the cropped
            encoder map; fewer parameters).
        dropout: drop-out probability at the end of the contracting path (the paper's
            implicit augmentation; 0 = off).

    Random initialisation (the paper's Gaussian, std sqrt(2/N)); ``model.preprocess`` maps
    [0, 1] images to [−1, 1].
    """
    return UNet(
        num_classes,
        in_channels=in_channels,
        base_width=base_width,
        depth=depth,
        padding=padding,
        fuse=fuse,
        dropout=dropout,
    )
