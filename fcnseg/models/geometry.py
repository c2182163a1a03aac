"""Coordinate geometry of convolutional networks: stride, offset and receptive field.

Every feature map is a regular grid laid over the input image. A :class:`Grid` records where
feature index ``i`` sits in input pixel coordinates (``offset + stride * i``, the centre of its
receptive field) and how wide that receptive field is. Propagating a grid through each layer
(:func:`trace`) is what lets FCN crop skip connections and the final upsampled score so that
output pixel ``(y, x)`` belongs to input pixel ``(y, x)`` for *any* input size — the crops are
derived, never hard-coded (the reference's 19 / 5, 27 / 5, 9, 31 fall out of the same code).

Conventions: pixel ``i`` has its centre at coordinate ``i``; a kernel of size ``k`` and dilation
``d`` is centred on tap ``d (k - 1) / 2``. Written by hand because no maintained library exposes
per-layer coordinate maps for torch modules (Caffe's ``coord_map.py`` did this for prototxt).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from torch import nn

__all__ = [
    "Grid",
    "LayerGeometry",
    "alignment",
    "conv",
    "deconv",
    "exact_fit",
    "input_size",
    "layer_sizes",
    "min_input_size",
    "output_size",
    "same_size_padding",
    "trace",
    "trace_layers",
]

Number = Fraction | int


@dataclass(frozen=True)
class Grid:
    """Placement of a feature map over the input: index ``i`` is centred at ``offset + stride*i``.

    ``rf`` is the receptive field size in input pixels. Values are exact fractions so that
    half-pixel offsets (2×2 pooling) stay exact.
    """

    stride: Fraction = Fraction(1)
    offset: Fraction = Fraction(0)
    rf: Fraction = Fraction(1)

    def centre(self, index: int) -> Fraction:
        """Input coordinate of the centre of feature ``index``."""
        return self.offset + self.stride * index

    def __repr__(self) -> str:
        return f"Grid(stride={self.stride}, offset={self.offset}, rf={self.rf})"


@dataclass(frozen=True)
class LayerGeometry:
    """Kernel, stride, padding, dilation of one spatial layer (one axis)."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False
    transposed: bool = False
    output_padding: int = 0


def conv(grid: Grid, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> Grid:
    """Grid after a convolution or pooling layer applied to ``grid``."""
    span = dilation * (kernel - 1)
    return Grid(
        stride=grid.stride * stride,
        offset=grid.offset + grid.stride * (Fraction(span, 2) - padding),
        rf=grid.rf + span * grid.stride,
    )


def deconv(grid: Grid, kernel: int, stride: int, padding: int = 0) -> Grid:
    """Grid after a transposed convolution (upsampling by ``stride``).

    Output ``j`` receives input ``i`` through tap ``j - stride*i + padding``; a symmetric kernel
    centres input ``i`` on output ``stride*i - padding + (kernel - 1)/2``.
    """
    new_stride = grid.stride / stride
    return Grid(
        stride=new_stride,
        offset=grid.offset + new_stride * (padding - Fraction(kernel - 1, 2)),
        rf=grid.rf,
    )


def alignment(source: Grid, target: Grid) -> Fraction:
    """Index into ``source`` whose centre coincides with ``target`` index 0 (the crop offset).

    Both grids must have the same stride. An integral result means the maps can be aligned by
    cropping exactly; the FCN head checks this and refuses to build a misaligned fusion.
    """
    if source.stride != target.stride:
        raise ValueError(f"cannot align grids of stride {source.stride} and {target.stride}")
    return (target.offset - source.offset) / source.stride


def _pair(value: int | tuple[int, ...]) -> int:
    if isinstance(value, tuple):
        if len(set(value)) != 1:
            raise ValueError(f"anisotropic layer geometry {value} is not supported")
        return int(value[0])
    return int(value)


def layer_geometry(module: nn.Module) -> LayerGeometry | None:
    """Spatial geometry of a leaf layer, or ``None`` for layers that do not move pixels."""
    if isinstance(module, nn.ConvTranspose2d):
        return LayerGeometry(
            kernel=_pair(module.kernel_size),
            stride=_pair(module.stride),
            padding=_pair(module.padding),
            dilation=_pair(module.dilation),
            transposed=True,
            output_padding=_pair(module.output_padding),
        )
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            raise ValueError(f"string padding {module.padding!r} is not traced; use integers")
        return LayerGeometry(
            kernel=_pair(module.kernel_size),
            stride=_pair(module.stride),
            padding=_pair(module.padding),
            dilation=_pair(module.dilation),
        )
    if isinstance(module, nn.MaxPool2d):
        return LayerGeometry(
            kernel=_pair(module.kernel_size),
            stride=_pair(module.stride or module.kernel_size),
            padding=_pair(module.padding),
            dilation=_pair(module.dilation),
            ceil_mode=bool(module.ceil_mode),
        )
    if isinstance(module, nn.AvgPool2d):
        return LayerGeometry(
            kernel=_pair(module.kernel_size),
            stride=_pair(module.stride or module.kernel_size),
            padding=_pair(module.padding),
            ceil_mode=bool(module.ceil_mode),
        )
    return None


def _apply(grid: Grid, geom: LayerGeometry) -> Grid:
    if geom.transposed:
        return deconv(grid, geom.kernel, geom.stride, geom.padding)
    return conv(grid, geom.kernel, geom.stride, geom.padding, geom.dilation)


def _branches(module: nn.Module) -> list[nn.Module] | None:
    """Parallel branches of a block whose outputs are concatenated or summed, else ``None``."""
    from torchvision.models.googlenet import Inception

    if isinstance(module, Inception):
        return [module.branch1, module.branch2, module.branch3, module.branch4]
    return None


# Children that run beside the main path (residual shortcuts) or only reweight channels
# (squeeze-excitation uses global pooling): they do not move the grid of the main path.
_SIDE_PATHS = ("downsample", "shortcut", "se", "aux1", "aux2", "fc", "avgpool", "classifier")


def _leaves(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """Main-path layers of ``module`` in order: true leaves and parallel-branch blocks."""
    from torchvision.ops.misc import SqueezeExcitation

    if isinstance(module, SqueezeExcitation):
        return []
    children = [(n, c) for n, c in module.named_children() if n not in _SIDE_PATHS]
    if not children or _branches(module) is not None:
        return [(prefix, module)]
    out: list[tuple[str, nn.Module]] = []
    for name, child in children:
        out.extend(_leaves(child, f"{prefix}.{name}" if prefix else name))
    return out


def trace(module: nn.Module, grid: Grid | None = None) -> Grid:
    """Grid of ``module``'s output given the grid of its input (default: the image itself).

    Walks the main path in registration order; residual shortcuts and squeeze-excitation are
    skipped, Inception branches are traced in parallel (they must agree on stride and offset; the
    receptive field is the widest branch's).
    """
    grid = grid or Grid()
    branches = _branches(module)
    if branches is not None:
        grids = [trace(b, grid) for b in branches]
        if len({(g.stride, g.offset) for g in grids}) != 1:
            raise ValueError(f"branches of {type(module).__name__} disagree: {grids}")
        return max(grids, key=lambda g: g.rf)
    leaves = _leaves(module)
    if len(leaves) == 1 and leaves[0][1] is module:
        geom = layer_geometry(module)
        return grid if geom is None else _apply(grid, geom)
    for _, leaf in leaves:
        grid = trace(leaf, grid)
    return grid


def trace_layers(module: nn.Module, grid: Grid | None = None) -> list[tuple[str, Grid]]:
    """Per-layer table ``[(name, grid after it)]`` along ``module``'s main path."""
    grid = grid or Grid()
    rows: list[tuple[str, Grid]] = []
    for name, leaf in _leaves(module):
        if layer_geometry(leaf) is None and _branches(leaf) is None:
            continue
        grid = trace(leaf, grid)
        rows.append((name, grid))
    return rows


def output_size(module: nn.Module, size: int) -> int:
    """Spatial size of ``module``'s main-path output for an input of ``size`` pixels.

    Returns 0 (or less) when some layer would produce an empty map.
    """
    branches = _branches(module)
    if branches is not None:
        return output_size(branches[0], size)
    leaves = _leaves(module)
    if not (len(leaves) == 1 and leaves[0][1] is module):
        for _, leaf in leaves:
            size = output_size(leaf, size)
            if size <= 0:
                return size
        return size
    g = layer_geometry(module)
    if g is None:
        return size
    if g.transposed:
        return (
            (size - 1) * g.stride
            - 2 * g.padding
            + g.dilation * (g.kernel - 1)
            + 1
            + (g.output_padding)
        )
    span = size + 2 * g.padding - g.dilation * (g.kernel - 1) - 1
    out = (-(-span // g.stride) if g.ceil_mode else span // g.stride) + 1
    # PyTorch's (and Caffe's) ceil mode drops a last window that would start in the padding.
    if g.ceil_mode and (out - 1) * g.stride >= size + g.padding:
        out -= 1
    return out


def min_input_size(module: nn.Module, limit: int = 4096) -> int:
    """Smallest input size for which every layer of ``module`` yields a non-empty map."""
    for size in range(1, limit + 1):
        if output_size(module, size) >= 1:
            return size
    raise ValueError(f"{type(module).__name__} produces no output below {limit} pixels")


# --- Valid (unpadded) networks: the input size a wanted output size needs ------------------------


def layer_sizes(module: nn.Module, size: int) -> list[tuple[str, int, int]]:
    """``[(name, input size, output size)]`` of every spatial layer on ``module``'s main path.

    Parallel-branch blocks count as one layer. Stops after the first layer whose output is empty.
    """
    rows: list[tuple[str, int, int]] = []
    for name, leaf in _leaves(module):
        if layer_geometry(leaf) is None and _branches(leaf) is None:
            continue
        out = output_size(leaf, size)
        rows.append((name, size, out))
        if out <= 0:
            break
        size = out
    return rows


def exact_fit(module: nn.Module, size: int) -> bool:
    """Whether every strided layer consumes its whole input for an input of ``size`` pixels.

    True when no trailing pixels are dropped by floor rounding (nor windows added by ceil mode):
    e.g. every 2×2 max-pool of a U-Net sees an even size, the U-Net paper's condition for a
    seamless tiling. Parallel-branch blocks are not looked into.
    """
    leaves = dict(_leaves(module))
    for name, size_in, size_out in layer_sizes(module, size):
        if size_out <= 0:
            return False
        g = layer_geometry(leaves[name])
        if g is None or g.transposed or g.stride == 1:
            continue
        if (size_in + 2 * g.padding - g.dilation * (g.kernel - 1) - 1) % g.stride:
            return False
    return True


def input_size(module: nn.Module, size: int, limit: int = 1 << 16) -> int:
    """Smallest input size for which ``module``'s output has at least ``size`` pixels.

    For a valid-convolution U-Net (depth 4) ``input_size(net, 388) == 572``. Output size never
    shrinks as the input grows, so this is a binary search. For networks whose strided layers
    tile their input (kernel ≤ stride, as 2×2 pools), the result is an :func:`exact_fit` size:
    a larger, misfitting size would give the same output as the next smaller one.
    """
    if size < 1:
        raise ValueError(f"output size must be >= 1, got {size}")
    hi = 1
    while output_size(module, hi) < size:
        if hi >= limit:
            raise ValueError(f"{type(module).__name__} needs inputs above {limit} for {size} px")
        hi = min(2 * hi, limit)
    lo = 1
    while lo < hi:
        mid = (lo + hi) // 2
        if output_size(module, mid) >= size:
            hi = mid
        else:
            lo = mid + 1
    return lo


def same_size_padding(module: nn.Module, size: int) -> tuple[int, int]:
    """Padding ``(before, after)`` that makes ``module`` yield ``size`` output pixels, output
    ``i`` centred on original input pixel ``i``; crop the output to its first ``size`` pixels.

    ``before`` is the offset of the output grid (the context a valid network eats per side,
    92 px for the depth-4 U-Net); ``after`` fills the input up to :func:`input_size`, which
    also makes the size fit every stride exactly. The output grid must have stride 1 and an
    integral offset.
    """
    grid = trace(module)
    if grid.stride != 1 or grid.offset.denominator != 1 or grid.offset < 0:
        raise ValueError(f"output grid {grid} is not a stride-1 grid at a whole-pixel offset")
    before = int(grid.offset)
    after = input_size(module, size) - size - before
    if after < 0:
        raise ValueError(f"{type(module).__name__} yields more pixels than it is given")
    return before, after
