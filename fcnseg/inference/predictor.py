"""The :class:`Predictor`: a model with its class names and palette, predicting images of any
size at the training's scale (:mod:`~fcnseg.inference.scale`), whole or overlap-tiled, with
optional TTA and dense-CRF refinement (:class:`~fcnseg.inference.InferenceOptions`). Every
forward pass goes through :func:`fcnseg.forward.forward`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.crf import dense_crf
from fcnseg.forward import forward
from fcnseg.inference.options import InferenceOptions
from fcnseg.inference.scale import resize_images, resized_rows, train_size
from fcnseg.inference.tiling import blend_rows
from fcnseg.inference.tta import as_float, tta_probabilities

if TYPE_CHECKING:
    from fcnseg.checkpoint import Checkpoint

__all__ = ["OnnxModel", "Predictor"]

_PLAIN = InferenceOptions()


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


class _Tiled:
    """A model's exact tiler (:meth:`~fcnseg.models.SegmentationModel.tiler`) behind the model
    interface, so that :func:`~fcnseg.forward.forward` runs it like the model itself."""

    def __init__(self, model: Any, tiler: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.preprocess = model.preprocess
        self.tiler = tiler

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.tiler(x)


@dataclass
class Predictor:
    """A model with its class names and palette, ready to predict images.

    ``device``: where the model runs (inputs are moved there, results come back to the inputs'
    device); ``channels_last``/``amp``: as :func:`fcnseg.forward.forward`; ``train_size``: the
    H×W the model was trained at (``data.resize``): with ``options.scale == "train"`` (the
    default) every image is resized to it for the network and its probabilities back to the
    image's size, so results always have the input's size (``None``: the image's own size).

        predictor = Predictor.from_checkpoint("runs/camvid")
        labels = predictor.predict(image)      # H×W class indices; image: 3×H×W uint8 or [0, 1]
        probs = predictor.probabilities(image, InferenceOptions(tile=512, flip=True))
    """

    model: nn.Module | OnnxModel
    classes: list[str]
    palette: list[list[int]]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    channels_last: bool = False
    amp: str | None = None
    train_size: tuple[int, int] | None = None
    #: How the training read its masks: the ignore label and the raw value → class table
    #: (``data.options.mask_values``), so ground truth given at inference reads the same way.
    ignore_index: int = 255
    mask_values: dict[int, int] | None = None
    #: The Predictor built the network itself (from a checkpoint or weights), so it may change
    #: it: under bf16 on the CPU its weights are cast to bf16 once, at the first prediction
    #: (autocast would cast them again at every call: FCN-8s/VGG16 at 500×500 runs 2× faster
    #: than fp32 this way, not 1.0×; docs/benchmarks/quantize.md). A network passed in (the
    #: Trainer's, evaluated during training) is left as it is.
    owns_model: bool = False
    _compiled: bool = field(default=False, init=False, repr=False)
    _weights: torch.dtype = field(default=torch.float32, init=False, repr=False)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", *, amp: str | None = None
    ) -> Predictor:
        """Load an fcnseg checkpoint (file or run directory) or an exported ``.onnx`` file
        (run with ONNX Runtime, on the CPU, at the precision it was exported at). ``amp``:
        ``"bf16"``/``"fp16"`` mixed precision (a checkpoint's only)."""
        from fcnseg.checkpoint import load_checkpoint

        if str(path).endswith(".onnx"):
            if amp is not None:
                raise ValueError(
                    f"{path} runs at the precision it was exported at; {amp} applies to "
                    "checkpoints (int8 ONNX: fcnseg export --quantize int8)"
                )
            return cls.from_onnx(path)
        return cls.from_loaded(load_checkpoint(path), device, amp=amp)

    @classmethod
    def from_pretrained(
        cls, name_or_file: str | Path, device: str = "auto", *, amp: str | None = None
    ) -> Predictor:
        """Published weights by name (e.g. ``"torchvision/fcn_resnet50_coco"``, downloaded
        once) or a weights file in a known layout, with their classes, palette and input
        normalisation (:func:`fcnseg.models.pretrained.pretrained_state`)."""
        from fcnseg.models.pretrained import pretrained_state

        return cls.from_loaded(pretrained_state(name_or_file), device, amp=amp)

    @classmethod
    def from_onnx(cls, path: str | Path) -> Predictor:
        """An exported ``.onnx`` file, run with ONNX Runtime on the CPU."""
        from fcnseg.checkpoint import CheckpointError
        from fcnseg.export import read_onnx_metadata

        if not Path(path).is_file():
            raise CheckpointError(f"model {path} does not exist")
        try:
            meta = read_onnx_metadata(path)
            model = OnnxModel(path, meta["preprocess"])
        except ValueError as err:  # no fcnseg metadata
            raise CheckpointError(str(err)) from err
        except Exception as err:  # protobuf and ONNX Runtime raise many types
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise CheckpointError(f"{path} is not a readable ONNX model ({reason})") from err
        size = train_size(meta.get("train_scale"))
        return cls(model, meta["classes"], meta["palette"], train_size=size,
                   ignore_index=meta.get("ignore_index", 255),
                   mask_values=_mask_values(meta.get("config")))  # fmt: skip

    @classmethod
    def from_loaded(
        cls, ckpt: Checkpoint, device: str = "auto", *, amp: str | None = None
    ) -> Predictor:
        """The model of a loaded checkpoint, on ``device`` (as :meth:`from_checkpoint`)."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(device)
        # channels_last: 1.14× faster for FCN-8s/VGG16 on CPU (1409 → 1239 ms), same results to
        # float rounding (docs/benchmarks/speed.md).
        model = ckpt.build_model().to(dev, memory_format=torch.channels_last).eval()
        palette = [list(c) for c in ckpt.palette]
        size = train_size(ckpt.train_scale)
        return cls(model, list(ckpt.classes), palette, dev, channels_last=True, amp=amp,
                   train_size=size, ignore_index=ckpt.ignore_index,
                   mask_values=_mask_values(ckpt.config), owns_model=True)  # fmt: skip

    def compile(self) -> Predictor:
        """Compile the network with ``torch.compile`` (inductor, weights frozen as constants),
        in place; returns ``self``. Worth it for many images of one size: on a 2-core CPU it
        makes FCN-8s/VGG16 at 500×500 about 1.4× faster in fp32 (docs/benchmarks/quantize.md),
        after a one-off compilation of seconds per input size. A checkpoint's network only (an
        ``.onnx`` model runs with ONNX Runtime)."""
        if not isinstance(self.model, nn.Module):
            raise ValueError(
                "--compile applies to checkpoints; an .onnx model runs with ONNX Runtime, "
                "already compiled: drop --compile"
            )
        self.model = torch.compile(self.model)  # type: ignore[assignment]
        self._compiled = True
        return self

    def _prepared(self) -> Any:
        """The network, its convolutions' and linear layers' weights cast to bf16 first when
        :attr:`owns_model` and bf16 runs on the CPU: what autocast would cast at every call
        (normalisation and batch norm stay fp32, as autocast leaves them)."""
        cpu_bf16 = self.amp == "bf16" and self.device.type == "cpu"
        want = torch.bfloat16 if cpu_bf16 and self.owns_model else torch.float32
        if want != self._weights and isinstance(self.model, nn.Module):
            if want != torch.bfloat16:
                raise RuntimeError(
                    "this Predictor's weights were cast to bf16 for bf16 inference; load the "
                    "checkpoint again to predict in fp32"
                )
            for layer in self.model.modules():  # the layers autocast runs in bf16
                if isinstance(layer, nn.modules.conv._ConvNd | nn.Linear):
                    layer.to(torch.bfloat16)
            self._weights = want
        return self.model

    def scaled_size(
        self, size: tuple[int, int] | torch.Size, options: InferenceOptions
    ) -> tuple[int, int] | None:
        """The size an image of ``size`` is resized to for the network under ``options``
        (``None``: none, it is predicted at its own size)."""
        if options.scale != "train" or self.train_size is None or tuple(size) == self.train_size:
            return None
        return self.train_size

    def probabilities_batch(
        self, images: torch.Tensor, options: InferenceOptions | None = None
    ) -> torch.Tensor:
        """B×C×H×W class probabilities of a batch of same-size images (B×3×H×W, uint8 or float
        in [0, 1]), on the images' device. Whole images go through the network (and TTA)
        together; tiled ones image by image."""
        options = options or _PLAIN
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected B×3×H×W images, got shape {tuple(images.shape)}")
        size = self.scaled_size(images.shape[-2:], options)
        if size is not None:
            p = self._batch(resize_images(images, size), options)
            return F.interpolate(p, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return self._batch(images, options)

    def _batch(self, images: torch.Tensor, options: InferenceOptions) -> torch.Tensor:
        """:meth:`probabilities_batch` at the images' own size."""
        if not _tiled(images, options):
            return self._refined(images, options)
        rows = [torch.cat([p for _, p in self._native_rows(image, options)], 1) for image in images]
        return torch.stack(rows)

    def probabilities(
        self, image: torch.Tensor, options: InferenceOptions | None = None
    ) -> torch.Tensor:
        """C×H×W class probabilities of ``image`` (3×H×W, uint8 or float in [0, 1]), on the
        image's device."""
        return torch.cat([p for _, p in self._rows(image, options or _PLAIN)], 1)

    def predict(self, image: torch.Tensor, options: InferenceOptions | None = None) -> torch.Tensor:
        """H×W class indices of ``image`` (uint8 when fewer than 256 classes). Tiled, only one
        strip of probabilities is held at a time."""
        dtype = torch.uint8 if len(self.classes) < 256 else torch.int64
        rows = self._rows(image, options or _PLAIN)
        return torch.cat([p.argmax(0).to(dtype) for _, p in rows], 0)

    @torch.no_grad()
    def _logits(self, images: torch.Tensor, model: Any = None) -> torch.Tensor:
        """Float logits of a batch, on the batch's device (``model`` defaults to the model)."""
        x = images.to(self.device)
        net = self._prepared() if model is None else model
        # Inductor's freezing (weights as constants, folded into the kernels) is read when a
        # call compiles: 1.4× for FCN-8s/VGG16 where torch.compile(options=...) gave none.
        frozen = _inductor_freezing() if self._compiled else contextlib.nullcontext()
        with frozen:
            out = forward(net, x, channels_last=self.channels_last, amp=self.amp)
        return out.float().to(images.device)

    def _refined(
        self, images: torch.Tensor, options: InferenceOptions, model: Any = None
    ) -> torch.Tensor:
        """Probabilities of a batch of whole images or tiles: TTA, then the CRF per image."""
        p = tta_probabilities(
            lambda x: self._logits(x, model), images, flip=options.flip, scales=options.scales
        )
        if options.crf is None:
            return p
        refined = [dense_crf(i, q, options.crf) for i, q in zip(images, p, strict=True)]
        return torch.stack(refined).to(p.device)

    def _rows(
        self, image: torch.Tensor, options: InferenceOptions
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Finished rows of probabilities, top to bottom, as ``(first row, C×rows×W)``."""
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3×H×W image, got shape {tuple(image.shape)}")
        size = self.scaled_size(image.shape[-2:], options)
        if size is None:
            yield from self._native_rows(image, options)
            return
        small = resize_images(image[None], size)[0]
        p = torch.cat([q for _, q in self._native_rows(small, options)], 1)
        yield from resized_rows(p, image.shape[-2:])

    def _native_rows(
        self, image: torch.Tensor, options: InferenceOptions
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """:meth:`_rows` at the image's own size."""
        if not _tiled(image, options):
            yield 0, self._refined(image[None], options)[0]
            return
        assert options.tile is not None
        tiler = self._prepared().tiler(options.tile)
        if tiler is not None:  # the model tiles itself, exactly (U-Net's overlap-tile)
            yield 0, self._refined(image[None], options, _Tiled(self.model, tiler))[0]
            return

        def tile_probabilities(crop: torch.Tensor) -> torch.Tensor:
            # Converted per tile: a huge uint8 image is never copied to float whole.
            return self._refined(as_float(crop)[None], options)[0]

        yield from blend_rows(tile_probabilities, image, options.tile, options.overlap)


def _inductor_freezing() -> contextlib.AbstractContextManager:
    import torch._inductor.config

    return torch._inductor.config.patch(freezing=True)


def _tiled(images: torch.Tensor, options: InferenceOptions) -> bool:
    """Whether ``options`` tile ``images`` (a tile covering the image is whole-image)."""
    h, w = images.shape[-2:]
    return options.tile is not None and (options.tile < h or options.tile < w)


def _mask_values(config: dict | None) -> dict[int, int] | None:
    """``data.options.mask_values`` of a stored config (JSON keys back to ints), or ``None``."""
    table = ((config or {}).get("data") or {}).get("options", {}).get("mask_values")
    return {int(k): int(v) for k, v in table.items()} if isinstance(table, dict) else None
