"""SBD (Hariharan et al. 2011, "Semantic Boundaries Dataset") and the FCN paper's training set.

SBD's ``benchmark_RELEASE/dataset`` folder holds ``img/<id>.jpg``, ``cls/<id>.mat`` and the lists
``train.txt`` (8498 ids) / ``val.txt`` (2857). Each ``cls`` file is a MATLAB struct ``GTcls`` with
fields ``Segmentation`` (uint8 H×W, classes 0..20 in VOC order, no 255 boundaries),
``Boundaries`` (per-class sparse edge maps) and ``CategoriesPresent``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from fcnseg.data.base import DataError, Transform
from fcnseg.data.datasets.pairs import PairedFileDataset, Sample, check_samples, require_root
from fcnseg.data.io import PathLike, format_values, read_id_list
from fcnseg.data.palettes import VOC_CLASSES, VOC_PALETTE

__all__ = ["SBDSegmentation", "VOCPlusSBD", "read_sbd_mat"]

#: Where the FCN paper's validation list lives in a VOC tree (copy ``seg11valid.txt`` from the
#: fcn.berkeleyvision.org repository's ``data/pascal/`` there, or pass ``exclude_list=``).
SEG11VALID = Path("ImageSets") / "Segmentation" / "seg11valid.txt"


def _field(obj: Any, name: str) -> Any:
    """``obj.name`` for whatever ``loadmat`` made of a 1×1 struct: a 1×1 record array (the
    default), a ``mat_struct`` (``struct_as_record=False``), or object arrays wrapping either."""
    while isinstance(obj, np.ndarray) and obj.dtype == object and obj.size == 1:
        obj = obj.reshape(()).item()
    if isinstance(obj, np.ndarray) and obj.dtype.names:
        if name not in obj.dtype.names or obj.size != 1:
            raise KeyError(name)
        value = obj.reshape(-1)[0][name]
    elif hasattr(obj, "_fieldnames"):  # scipy.io.matlab.mat_struct
        if name not in obj._fieldnames:
            raise KeyError(name)
        value = getattr(obj, name)
    else:
        raise KeyError(name)
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(()).item()
    return value


def read_sbd_mat(path: PathLike) -> torch.Tensor:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as int64 H×W class indices."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SBD mask file {path} does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"SBD mask file {path} is empty (0 bytes)")
    try:
        # No squeeze_me: it would turn a 1×W segmentation into a 1-D array.
        mat = scipy.io.loadmat(path, variable_names=["GTcls"])
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, MatReadError, ...
        raise DataError(f"cannot read SBD mask file {path} as a MATLAB file: {exc}") from exc
    if "GTcls" not in mat:
        raise DataError(
            f"SBD mask file {path} has no GTcls struct (is it an inst/ file rather than cls/?)"
        )
    try:
        seg = _field(mat["GTcls"], "Segmentation")
    except KeyError:
        raise DataError(f"SBD mask file {path}: GTcls has no Segmentation field") from None
    seg = np.asarray(seg)
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise DataError(
            f"SBD mask file {path}: GTcls.Segmentation must be a 2-D integer array, got "
            f"{seg.dtype} of shape {seg.shape}"
        )
    return torch.from_numpy(seg.astype(np.int64))


class SBDSegmentation(PairedFileDataset):
    """SBD class segmentation: ``root/img/<id>.jpg`` with ``root/cls/<id>.mat``.

    Args:
        root: SBD's ``benchmark_RELEASE/dataset`` folder.
        split: ``"train"`` or ``"val"`` (reads ``root/<split>.txt``).
        list_file: a list file that overrides ``split`` (a relative path not found as given is
            looked up in ``root``).
    """

    classes = VOC_CLASSES
    palette = VOC_PALETTE

    def __init__(
        self,
        root: PathLike | None,
        split: str = "train",
        transforms: Transform | None = None,
        *,
        list_file: PathLike | None = None,
    ) -> None:
        root = require_root(root, "SBDSegmentation")
        path = Path(list_file).expanduser() if list_file is not None else root / f"{split}.txt"
        if not path.is_file() and not path.is_absolute() and (root / path).is_file():
            path = root / path
        if not path.is_file():
            raise DataError(f"SBD split list {path} does not exist")
        self.root = root
        self.split = split
        self.list_file = path
        super().__init__(check_samples(self._samples(read_id_list(path)), path), transforms)

    def _samples(self, ids: Iterable[str]) -> list[Sample]:
        return [
            Sample(i, self.root / "img" / f"{i}.jpg", self.root / "cls" / f"{i}.mat") for i in ids
        ]

    def read_mask(self, path: Path) -> torch.Tensor:
        return read_sbd_mat(path)


class VOCPlusSBD(SBDSegmentation):
    """The FCN paper's PASCAL training set: SBD images with the paper's validation images removed.

    The paper trains on SBD ``train`` (8498 images) and validates on ``seg11valid``, the 736
    VOC2011 segmentation-val images *not* in SBD train. The samples are exactly::

        ids(root/<split>.txt) − ids(exclude list)      (order of the SBD list kept)

    with images and labels read from SBD (``img/``, ``cls/``). With the official lists the
    subtraction removes nothing for ``train`` (the lists are disjoint by construction); it
    guarantees no validation image is trained on when other SBD lists are used, e.g.
    ``split="trainval"`` (``root/trainval.txt``, SBD train ∪ val — write it yourself) or a custom
    ``list_file``. Validate with ``VOCSegmentation(voc_root, "val", list_file="seg11valid.txt")``.

    Args:
        root: SBD's ``benchmark_RELEASE/dataset`` folder (or pass ``sbd_root=`` and ``root=None``).
        split: the SBD list ``root/<split>.txt`` to start from (``"train"``, ``"val"``, …).
        voc_root: a VOC2011/VOC2012 folder; the default exclude list is its
            ``ImageSets/Segmentation/seg11valid.txt`` (not part of the devkit: copy it from the
            fcn.berkeleyvision.org repository's ``data/pascal/``).
        sbd_root: alternative spelling of ``root``.
        exclude_list: the ids to remove: a list-file path, or the ids themselves; ``()`` removes
            nothing (explicit opt-out). Required unless ``voc_root`` is given.
        list_file: a list file that overrides ``split``.

    ``excluded`` holds the ids actually removed.
    """

    def __init__(
        self,
        root: PathLike | None,
        split: str = "train",
        transforms: Transform | None = None,
        *,
        voc_root: PathLike | None = None,
        sbd_root: PathLike | None = None,
        exclude_list: PathLike | Iterable[str] | None = None,
        list_file: PathLike | None = None,
    ) -> None:
        if sbd_root is not None and root is not None and Path(sbd_root) != Path(root):
            raise DataError(f"VOCPlusSBD: root={root} and sbd_root={sbd_root} disagree; give one")
        root = sbd_root if sbd_root is not None else root
        if exclude_list is None:
            if voc_root is None:
                raise DataError(
                    "VOCPlusSBD needs exclude_list= (e.g. the FCN paper's seg11valid.txt) or "
                    f"voc_root= (a VOC folder with {SEG11VALID}); pass exclude_list=() to exclude "
                    "nothing"
                )
            exclude_list = Path(voc_root).expanduser() / SEG11VALID
            if not exclude_list.is_file():
                raise DataError(
                    f"VOCPlusSBD: exclude list {exclude_list} does not exist; copy seg11valid.txt "
                    "from fcn.berkeleyvision.org's data/pascal/ there, or pass exclude_list="
                )
        if isinstance(exclude_list, (str, os.PathLike)):
            self.exclude_file: Path | None = Path(exclude_list).expanduser()
            exclude = set(read_id_list(self.exclude_file, "exclude list"))
        else:
            self.exclude_file = None
            exclude = {str(i) for i in exclude_list}
        self._exclude = exclude
        super().__init__(root, split, transforms, list_file=list_file)

    def _samples(self, ids: Iterable[str]) -> list[Sample]:
        ids = list(ids)
        self.excluded = tuple(i for i in ids if i in self._exclude)
        kept = [i for i in ids if i not in self._exclude]
        if ids and not kept:
            raise DataError(
                f"VOCPlusSBD: the exclude list removes all {len(ids)} ids of {self.list_file} "
                f"(e.g. {format_values(ids, 5)})"
            )
        return super()._samples(kept)
