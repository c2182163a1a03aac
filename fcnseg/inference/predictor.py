"""Inference: class probabilities for any image size, overlap-tiled for huge images, with TTA
and optional dense-CRF refinement.

    from fcnseg.inference import Predictor
    predictor = Predictor.from_checkpoint("runs/camvid")
    labels = predictor.predict(image)          # H×W class indices; image: 3×H×W uint8 or [0, 1]

Tiling blends overlapping tiles with a weight that tapers linearly to the tile borders, so there
are no seams, and keeps only one strip of tiles in memory: rows no later tile can touch are
finalised as soon as the strip moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.crf import CRFParams, dense_crf

__all__ = [
    "OnnxModel",
    "Predictor",
    "expand_inputs",
    "predict_paths",
    "tile_positions",
    "tile_weight",
    "tta_probabilities",
]


def _as_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 → float in [0, 1]; float images pass through."""
    return image.float() / 255 if image.dtype == torch.uint8 else image


def tta_probabilities(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
) -> torch.Tensor:
    """Test-time augmentation: the mean of the softmax over horizontal flips and rescalings.

    ``logits_fn`` maps a B×3×h×w batch (float in [0, 1]) to B×C×h×w logits; each scale's
    probabilities are resized back to the input size (bilinear) before averaging. With
    ``flip=False, scales=(1,)`` this is just ``softmax(logits_fn(images))``."""
    if not scales:
        raise ValueError("scales must name at least one scale, e.g. (1.0,)")
    h, w = images.shape[-2:]
    total: torch.Tensor | None = None
    count = 0
    for s in scales:
        x = images
        if s != 1.0:
            size = (max(1, round(h * s)), max(1, round(w * s)))
            x = F.interpolate(images.float(), size=size, mode="bilinear", antialias=s < 1)
        for flipped in (False, True) if flip else (False,):
            p = logits_fn(x.flip(-1) if flipped else x).float().softmax(1)
            p = p.flip(-1) if flipped else p
            if p.shape[-2:] != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
            total = p if total is None else total + p
            count += 1
    return total / count  # type: ignore[operator]


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


class OnnxModel:
    """An exported ONNX FCN behind the same interface as the PyTorch model (ONNX Runtime, CPU)."""

    def __init__(self, path: str | Path, preprocess: dict) -> None:
        import onnxruntime

        from fcnseg.weights import Preprocess

        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.preprocess = Preprocess.from_dict(preprocess)

    def tiler(self, tile: int) -> None:
        """No exact tiling (see :meth:`fcnseg.models.SegmentationModel.tiler`)."""
        return None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {"images": images.float().cpu().numpy()})
        return torch.from_numpy(logits)


@dataclass
class Predictor:
    """A model with its preprocessing, class names and palette, ready to predict images."""

    model: nn.Module
    classes: list[str]
    palette: list[list[int]]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Predictor:
        """Load an fcnseg checkpoint (file or run directory) or an exported ``.onnx`` file
        (run with ONNX Runtime)."""
        from fcnseg.checkpoint import load_checkpoint

        if str(path).endswith(".onnx"):
            from fcnseg.export import read_onnx_metadata

            meta = read_onnx_metadata(path)
            return cls(OnnxModel(path, meta["preprocess"]), meta["classes"], meta["palette"])

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        ckpt = load_checkpoint(path)
        # channels_last: 1.08× faster for FCN-8s/VGG16 on CPU, same results to float rounding
        # (docs/benchmarks/speed.md).
        model = ckpt.build_model().to(dev, memory_format=torch.channels_last).eval()
        return cls(model, list(ckpt.classes), [list(c) for c in ckpt.palette], dev)

    @torch.no_grad()
    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.preprocess(images.to(self.device))
        if isinstance(self.model, nn.Module):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).float().cpu()

    def _batch_probs(
        self,
        images: torch.Tensor,
        flip: bool,
        scales: Sequence[float],
        crf: CRFParams | None,
        logits_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """B×C×H×W probabilities of a batch of tiles (or whole images): TTA, then the CRF per
        image if asked. ``logits_fn`` defaults to the plain forward pass."""
        p = tta_probabilities(logits_fn or self._logits, images, flip=flip, scales=scales)
        if crf is None:
            return p
        return torch.stack([dense_crf(i, q, crf) for i, q in zip(images, p, strict=True)])

    def _tile(
        self, image: torch.Tensor, flip: bool, scales: Sequence[float], crf: CRFParams | None
    ) -> torch.Tensor:
        """Probabilities of one tile (or the whole image)."""
        return self._batch_probs(image[None], flip, scales, crf)[0]

    def probabilities(
        self,
        image: torch.Tensor,
        *,
        tile: int | None = None,
        overlap: int = 64,
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        crf: CRFParams | None = None,
    ) -> torch.Tensor:
        """C×H×W class probabilities of ``image`` (3×H×W, uint8 or float in [0, 1]).

        ``tile``: overlap-tiled inference (memory bounded by the tile); ``flip``/``scales``:
        test-time augmentation; ``crf``: dense-CRF refinement (of each tile when tiled)."""
        rows = self._rows(image, tile, overlap, flip, scales, crf)
        return torch.cat([p for _, p in rows], 1)

    def predict(
        self,
        image: torch.Tensor,
        *,
        tile: int | None = None,
        overlap: int = 64,
        flip: bool = False,
        scales: Sequence[float] = (1.0,),
        crf: CRFParams | None = None,
    ) -> torch.Tensor:
        """H×W class indices (uint8 when fewer than 256 classes); options as
        :meth:`probabilities`."""
        dtype = torch.uint8 if len(self.classes) < 256 else torch.int64
        rows = self._rows(image, tile, overlap, flip, scales, crf)
        return torch.cat([p.argmax(0).to(dtype) for _, p in rows], 0)

    def _rows(
        self,
        image: torch.Tensor,
        tile: int | None,
        overlap: int,
        flip: bool,
        scales: Sequence[float],
        crf: CRFParams | None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Finished rows of probabilities, top to bottom, as ``(first row, C×rows×W)``."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if tile is None or (tile >= h and tile >= w):
            yield 0, self._tile(_as_float(image), flip, scales, crf)
            return
        tiler = self.model.tiler(tile)
        if tiler is not None:  # the model tiles itself, exactly (U-Net's overlap-tile)

            def logits(images: torch.Tensor) -> torch.Tensor:
                with torch.no_grad():
                    return tiler(self.model.preprocess(images.to(self.device))).float().cpu()

            yield 0, self._batch_probs(_as_float(image)[None], flip, scales, crf, logits)[0]
            return
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
        stride = tile - overlap
        ys, xs = tile_positions(h, tile, stride), tile_positions(w, tile, stride)
        th, tw = min(tile, h), min(tile, w)
        weight = tile_weight(th, tw, overlap)
        c = len(self.classes)
        top = 0  # first row held in the buffers
        acc = torch.zeros(c, th, w)
        norm = torch.zeros(th, w)
        for k, y in enumerate(ys):
            if y > top:  # rows above y are final: no later tile reaches them
                done = y - top
                yield top, acc[:, :done] / norm[:done]
                acc = torch.cat([acc[:, done:], torch.zeros(c, done, w)], 1)
                norm = torch.cat([norm[done:], torch.zeros(done, w)], 0)
                top = y
            for x in xs:
                # Converted per tile: a huge uint8 image is never copied to float whole.
                p = self._tile(_as_float(image[:, y : y + th, x : x + tw]), flip, scales, crf)
                acc[:, y - top : y - top + th, x : x + tw] += p * weight
                norm[y - top : y - top + th, x : x + tw] += weight
            if k == len(ys) - 1:
                yield top, acc / norm


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns → image paths, in order."""
    import glob

    from fcnseg.data.base import DataError
    from fcnseg.data.io import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(item), recursive=True))
            if not matches:
                raise DataError(f"input {item}: no such file, folder or matching files")
            paths += [m for m in matches if m.is_file()]
    if not paths:
        raise DataError(f"no images found in {list(map(str, inputs))}")
    return paths


def _read_groups(
    paths: Sequence[Path], batch_size: int, failures: list[tuple[Path, str]]
) -> Iterator[list[tuple[Path, torch.Tensor]]]:
    """Consecutive images of one size, up to ``batch_size`` at a time; unreadable files are
    recorded in ``failures`` and skipped."""
    from fcnseg.data.base import DataError
    from fcnseg.data.io import read_image

    group: list[tuple[Path, torch.Tensor]] = []
    for path in paths:
        try:
            image = read_image(path)
        except DataError as err:
            failures.append((path, str(err)))
            continue
        if group and (len(group) >= batch_size or group[0][1].shape != image.shape):
            yield group
            group = []
        group.append((path, image))
    if group:
        yield group


def predict_paths(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    tile: int | None = None,
    overlap: int = 64,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    crf: CRFParams | None = None,
    save_probabilities: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    failures: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """``fcnseg predict``: for every image write ``NAME.png`` (palette PNG of class indices),
    ``NAME_overlay.png`` (colour overlay with legend) and, on request, ``NAME_probs.npy``
    (C×H×W float16). Returns the label-map paths.

    Consecutive images of one size go through the network ``batch_size`` at a time (tiled
    inference goes image by image). A file that cannot be read is skipped and appended to
    ``failures`` as ``(path, message)`` (pass a list to collect them), so one bad file loses
    no other image's result."""
    import numpy as np
    from tqdm import tqdm

    from fcnseg.viz import save_label_png, save_overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    failures = failures if failures is not None else []
    paths = expand_inputs(inputs)
    written = []
    bar = tqdm(total=len(paths), desc="predict", disable=not progress)
    for group in _read_groups(paths, 1 if tile else max(1, batch_size), failures):
        images = [image for _, image in group]
        if tile or len(group) == 1:
            kwargs = {"tile": tile, "overlap": overlap, "flip": flip, "scales": scales}
            probs = [predictor.probabilities(images[0], crf=crf, **kwargs)]  # type: ignore[arg-type]
        else:
            batch = torch.stack([_as_float(i) for i in images])
            probs = list(predictor._batch_probs(batch, flip, scales, crf))
        for (path, image), p in zip(group, probs, strict=True):
            labels = p.argmax(0).numpy()
            if save_probabilities:
                np.save(out / f"{path.stem}_probs.npy", p.half().numpy())
            label_path = out / f"{path.stem}.png"
            save_label_png(label_path, labels, predictor.palette)
            rgb = image.permute(1, 2, 0).numpy()
            save_overlay(out / f"{path.stem}_overlay.png", rgb, labels, predictor.palette,
                         predictor.classes)  # fmt: skip
            written.append(label_path)
        bar.update(len(group))
    bar.update(len(failures))
    bar.close()
    return written
