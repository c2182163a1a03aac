"""Datasets in their real on-disk formats: shared data, exact-format fixtures, every error path."""

from __future__ import annotations

import pickle
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch
from PIL import Image
from torchvision import tv_tensors

from fcnseg.data.base import IGNORE_INDEX, DataError
from fcnseg.data.datasets.ade20k import ADE20K
from fcnseg.data.datasets.camvid import CamVid
from fcnseg.data.datasets.cityscapes import Cityscapes
from fcnseg.data.datasets.folder import FolderPairs, available_meta, kfold_indices, load_meta
from fcnseg.data.datasets.sbd import SBDSegmentation, VOCPlusSBD, _field, read_sbd_mat
from fcnseg.data.datasets.voc import VOCSegmentation
from fcnseg.data.io import LabelMap, check_pair, colors_to_indices, read_image, read_mask
from fcnseg.data.palettes import (
    ADE20K_CLASSES,
    ADE20K_PALETTE,
    CAMVID_CLASSES,
    CAMVID_PALETTE,
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_PALETTE,
    VOC_CLASSES,
    VOC_PALETTE,
    default_palette,
    voc_colormap,
)
from fcnseg.data.registry import build_dataset

SharedPath = Callable[..., Path]

# --- fixture helpers ----------------------------------------------------------------------


def write_image(path: Path, h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    """An RGB image (JPEG or PNG by suffix); returns the pixels written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def write_mask(path: Path, labels: np.ndarray, palette: bool = False) -> None:
    """An 8-bit grey PNG of ``labels`` — or a palette PNG (VOC colour map) if ``palette``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8))
    if palette:
        im.putpalette([v for color in voc_colormap(256) for v in color])
    im.save(path)


def labels_like(h: int = 6, w: int = 8, values: tuple[int, ...] = (0, 1)) -> np.ndarray:
    return np.resize(np.array(values, dtype=np.uint8), h * w).reshape(h, w)


def write_sbd_mat(path: Path, seg: np.ndarray) -> None:
    """An SBD ``cls/*.mat`` file in the release's structure: struct GTcls with Segmentation,
    Boundaries (20×1 cell of sparse matrices) and CategoriesPresent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        boundaries[c, 0] = scipy.sparse.csc_matrix(seg == c + 1, dtype=float)
    present = np.array([[c for c in np.unique(seg) if c > 0]], dtype=np.uint8)
    gtcls = {"Segmentation": seg.astype(np.uint8), "Boundaries": boundaries}
    gtcls["CategoriesPresent"] = present
    scipy.io.savemat(path, {"GTcls": gtcls})


def make_voc(root: Path, ids: dict[str, list[str]]) -> Path:
    """A VOC tree with one 6×8 sample per id and the given lists."""
    every = sorted({i for names in ids.values() for i in names})
    for n, i in enumerate(every):
        write_image(root / "JPEGImages" / f"{i}.jpg", seed=n)
        write_mask(root / "SegmentationClass" / f"{i}.png", labels_like(values=(0, 15, 255)), True)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for name, names in ids.items():
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in names))
    return root


def make_folder(root: Path, stems: list[str], values: tuple[int, ...] = (0, 1)) -> Path:
    for n, stem in enumerate(stems):
        write_image(root / "images" / f"{stem}.png", seed=n)
        write_mask(root / "masks" / f"{stem}.png", labels_like(values=values))
    return root


TWO_CLASSES = {"classes": ["background", "thing"]}

# --- shared data --------------------------------------------------------------------------


def test_camvid_shared(shared_path: SharedPath) -> None:
    root = shared_path("data", "camvid")
    train = build_dataset("camvid", root, "train")
    val = CamVid(root, "val")
    assert (len(train), len(val)) == (367, 101)
    assert train.classes == CAMVID_CLASSES and train.num_classes == 11
    image, mask = train[0]
    assert isinstance(image, tv_tensors.Image) and isinstance(mask, tv_tensors.Mask)
    assert image.shape == (3, 360, 480) and image.dtype == torch.uint8
    assert mask.shape == (360, 480) and mask.dtype == torch.int64
    raw = np.array(Image.open(root / "trainannot" / f"{train.name(0)}.png"))
    assert (raw == 11).any(), "sample 0 has void pixels"
    assert torch.equal(mask == IGNORE_INDEX, torch.from_numpy(raw == 11))
    values = set(torch.unique(mask).tolist())
    assert values <= set(range(11)) | {IGNORE_INDEX}
    assert train.name(0) == "0001TP_006690"


def test_voc_mini_shared(shared_path: SharedPath) -> None:
    root = shared_path("data", "voc-mini")
    ds = build_dataset("voc", root, "val")
    assert [ds.name(i) for i in range(len(ds))] == ["2011_000003", "2011_000006", "2011_000025"]
    assert ds.classes == VOC_CLASSES and ds.palette == VOC_PALETTE
    image, mask = ds[0]
    raw = Image.open(root / "SegmentationClass" / "2011_000003.png")
    assert raw.mode == "P"
    assert torch.equal(mask, torch.from_numpy(np.array(raw).astype(np.int64)))  # indices, not RGB
    assert image.shape == (3, *mask.shape) == (3, 338, 500)
    assert set(torch.unique(mask).tolist()) == {0, 5, 15, 255}  # 255 borders kept as ignore
    values = [set(torch.unique(ds[i][1]).tolist()) for i in range(1, len(ds))]
    assert values == [{0, 9, 15, 18, 255}, {0, 6, 7}]


def test_horse_shared(shared_path: SharedPath) -> None:
    ds = FolderPairs(shared_path("data", "weizmann-horse"), "all", meta="horse")
    assert len(ds) == 328 and ds.classes == ("background", "horse")
    assert ds.name(0) == "horse001"
    image, mask = ds[0]
    assert image.shape == (3, *mask.shape) and image.dtype == torch.uint8
    assert set(torch.unique(mask).tolist()) == {0, 1}


def test_isbi_shared(shared_path: SharedPath) -> None:
    root = shared_path("data", "isbi2012-em")
    ds = build_dataset("folder", root, "all", meta="isbi2012")
    assert len(ds) == 30 and ds.classes == ("membrane", "cell")
    assert [ds.name(i) for i in range(3)] == ["0", "1", "2"]  # natural order
    image, mask = ds[1]
    assert image.shape == (3, 512, 512)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grey → RGB
    raw = np.array(Image.open(root / "label" / "1.png"))
    assert torch.equal(mask, torch.from_numpy((raw == 255).astype(np.int64)))  # 255 cell → 1


# --- exact-format fixtures ----------------------------------------------------------------


def test_sbd_mat_fixture(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    for n, i in enumerate(["2008_000002", "2008_000003", "2008_000007"]):
        write_image(root / "img" / f"{i}.jpg", seed=n)
        write_sbd_mat(root / "cls" / f"{i}.mat", labels_like(values=(0, 15, 20)))
    (root / "train.txt").write_text("2008_000002\n2008_000003\n2008_000007\n")
    (root / "val.txt").write_text("2008_000003\n")
    ds = build_dataset("sbd", root, "train")
    assert len(ds) == 3 and ds.classes == VOC_CLASSES
    image, mask = ds[0]
    assert image.shape == (3, 6, 8) and mask.dtype == torch.int64
    assert torch.equal(mask, torch.from_numpy(labels_like(values=(0, 15, 20)).astype(np.int64)))
    assert len(SBDSegmentation(root, "val")) == 1

    # the paper's training set: SBD train minus seg11valid, from a VOC tree's list or given ids
    voc = tmp_path / "VOC2011"
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "seg11valid.txt").write_text("2008_000003\n2011_1\n")
    combined = build_dataset("voc_sbd", root, "train", voc_root=voc)
    assert [combined.name(i) for i in range(len(combined))] == ["2008_000002", "2008_000007"]
    assert combined.excluded == ("2008_000003",)
    combined[1]
    assert len(VOCPlusSBD(None, "train", sbd_root=root, exclude_list=["2008_000007"])) == 2
    assert len(VOCPlusSBD(root, "train", exclude_list=())) == 3
    with pytest.raises(DataError, match="exclude_list"):
        VOCPlusSBD(root, "train")
    with pytest.raises(DataError, match=r"seg11valid\.txt does not exist"):
        VOCPlusSBD(root, "train", voc_root=tmp_path)


def test_sbd_mat_struct_forms_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.mat"
    write_sbd_mat(path, np.array([[0, 3, 20]], dtype=np.uint8))  # a 1×3 image stays 2-D
    assert read_sbd_mat(path).tolist() == [[0, 3, 20]]
    squeezed = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
    assert _field(squeezed, "Segmentation").tolist() == [0, 3, 20]
    records = scipy.io.loadmat(path)["GTcls"]
    assert _field(records, "Segmentation").shape == (1, 3)
    other = tmp_path / "inst.mat"
    scipy.io.savemat(other, {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(DataError, match=r"inst\.mat has no GTcls"):
        read_sbd_mat(other)
    no_seg = tmp_path / "noseg.mat"
    scipy.io.savemat(no_seg, {"GTcls": {"Boundaries": np.zeros((2, 2))}})
    with pytest.raises(DataError, match=r"noseg\.mat: GTcls has no Segmentation"):
        read_sbd_mat(no_seg)
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mat is empty"):
        read_sbd_mat(tmp_path / "empty.mat")
    (tmp_path / "text.mat").write_text("not a MATLAB file at all\n" * 20)
    with pytest.raises(DataError, match=r"cannot read SBD mask file .*text\.mat"):
        read_sbd_mat(tmp_path / "text.mat")


def test_cityscapes_fixture(tmp_path: Path) -> None:
    ids = np.array([[7, 26, 0, 33], [24, 1, 11, 23]], dtype=np.uint8)
    for city, stem in [("aachen", "aachen_000000_000019"), ("bochum", "bochum_000000_000313")]:
        write_image(tmp_path / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png", 2, 4)
        gt = tmp_path / "gtFine" / "train" / city
        write_mask(gt / f"{stem}_gtFine_labelIds.png", ids)
        write_mask(gt / f"{stem}_gtFine_instanceIds.png", ids)  # other gtFine files ignored
        write_image(gt / f"{stem}_gtFine_color.png", 2, 4)
    ds = build_dataset("cityscapes", tmp_path, "train")
    assert [ds.name(i) for i in range(len(ds))] == ["aachen_000000_000019", "bochum_000000_000313"]
    assert ds.classes == CITYSCAPES_CLASSES and ds.num_classes == 19
    _, mask = ds[0]
    # 7 road → 0, 26 car → 13, 0 unlabeled → 255, 33 bicycle → 18, 24 person → 11,
    # 1 ego vehicle → 255, 11 building → 2, 23 sky → 10
    assert mask.tolist() == [[0, 13, 255, 18], [11, 255, 2, 10]]
    (tmp_path / "gtFine" / "train" / "bochum" / "bochum_000000_000313_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match=r"images without .*bochum/bochum_000000_000313"):
        Cityscapes(tmp_path, "train")
    with pytest.raises(DataError, match=r"leftImg8bit/val does not exist"):
        Cityscapes(tmp_path, "val")
    bad = tmp_path / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    write_mask(bad, np.full((2, 4), 40))
    (tmp_path / "gtFine" / "train" / "bochum").rename(tmp_path / "gone")
    (tmp_path / "leftImg8bit" / "train" / "bochum").rename(tmp_path / "gone2")
    with pytest.raises(DataError, match=r"aachen_000000_000019_gtFine_labelIds\.png.*\[40\]"):
        Cityscapes(tmp_path, "train")[0]


def test_ade20k_fixture(tmp_path: Path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    raw = np.array([[0, 1, 150], [12, 3, 0]], dtype=np.uint8)
    for split, stem in [("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")]:
        write_image(base / "images" / split / f"{stem}.jpg", 2, 3)
        write_mask(base / "annotations" / split / f"{stem}.png", raw)
    ds = build_dataset("ade20k", base, "training")
    assert ds.classes == ADE20K_CLASSES and len(ds.palette) == 150 and ds.reduce_zero_label
    assert ds[0][1].tolist() == [[255, 0, 149], [11, 2, 255]]  # 0 → ignore, k → k - 1
    assert ds.name(0) == "ADE_train_00000001"
    full = ADE20K(tmp_path, "val", reduce_zero_label=False)  # parent folder and alias accepted
    assert full.num_classes == 151 and full.classes[0] == "other" and full.split == "validation"
    assert full[0][1].tolist() == raw.tolist()
    write_mask(base / "annotations" / "training" / "ADE_train_00000001.png", raw + 100)
    with pytest.raises(DataError, match=r"ADE_train_00000001\.png has raw values \[250\]"):
        ds[0]
    with pytest.raises(
        DataError, match=r"unknown split .* for ADE20K; .*splits: training, validation"
    ):
        ADE20K(base, "test")


def test_voc_list_file_override(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "VOC2011", {"val": ["a", "b", "c"], "seg11valid": ["b", "c"]})
    assert len(VOCSegmentation(root, "val")) == 3
    for list_file in ["seg11valid.txt", root / "ImageSets" / "Segmentation" / "seg11valid.txt"]:
        ds = VOCSegmentation(root, "val", list_file=list_file)
        assert [ds.name(i) for i in range(len(ds))] == ["b", "c"]
    assert set(torch.unique(ds[0][1]).tolist()) == {0, 15, 255}
    with pytest.raises(DataError, match=r"Segmentation/test\.txt does not exist.*seg11valid"):
        VOCSegmentation(root, "test")
    with pytest.raises(DataError, match="JPEGImages"):
        VOCSegmentation(tmp_path, "val")


def test_folder_pairs_options(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ["s10", "s2", "s1"], values=(0, 255, 1))
    meta = tmp_path / "meta.yaml"
    meta.write_text(
        "classes: [bg, fg]\npalette: [[0, 0, 0], [9, 9, 9]]\nmask_values: {0: 0, 1: 1, 255: 255}\n"
    )
    ds = FolderPairs(root, "all", meta=meta)
    assert [ds.name(i) for i in range(3)] == ["s1", "s2", "s10"]
    assert ds.palette == ((0, 0, 0), (9, 9, 9)) and ds.meta()["ignore_index"] == 255
    assert set(torch.unique(ds[0][1]).tolist()) == {0, 1, 255}
    with_values = FolderPairs(root, "all", meta=TWO_CLASSES, mask_values={0: 0, 1: 1, 255: 1})
    assert set(torch.unique(with_values[0][1]).tolist()) == {0, 1}
    assert with_values.palette == default_palette(2)
    (tmp_path / "fold0.txt").write_text("s2\n# comment\n\ns10\n")
    assert len(FolderPairs(root, "fold0", meta=meta)) == 2  # root/<split>.txt
    assert len(FolderPairs(root, "all", meta=meta, list_file="fold0.txt")) == 2
    assert len(FolderPairs(root, str(tmp_path / "fold0.txt"), meta=meta)) == 2
    with pytest.raises(DataError, match=r"no split .train.*holdout=5"):
        FolderPairs(root, "train", meta=meta)
    with pytest.raises(DataError, match="needs meta="):
        FolderPairs(root, "all")
    with pytest.raises(DataError, match=r"unknown FolderPairs meta 'nope'.*horse.*isbi2012"):
        FolderPairs(root, "all", meta="nope")
    with pytest.raises(DataError, match=r"unknown keys \['clases'\]"):
        FolderPairs(root, "all", meta={"clases": ["a"]})
    with pytest.raises(DataError, match="mask_values map to"):
        FolderPairs(root, "all", meta=TWO_CLASSES, mask_values={0: 0, 1: 5})
    assert {"horse", "isbi2012"} <= set(available_meta())
    isbi = load_meta("isbi2012")
    assert isbi.mask_values == {0: 0, 255: 1} and (isbi.images, isbi.masks) == ("image", "label")


@pytest.mark.parametrize("seed", [None, 3])
def test_folder_pairs_folds(tmp_path: Path, seed: int | None) -> None:
    """k-fold splits: the val folds are disjoint and cover every sample, train is the rest, and
    the val of fold k is the k-th block of the (natural or seeded-permuted) order."""
    stems = [f"s{i}" for i in range(11)]  # natural order s0, s1, ..., s10
    root = make_folder(tmp_path, stems)
    options = {"meta": TWO_CLASSES, "folds": 4, "fold_seed": seed}
    order = list(range(11)) if seed is None else np.random.default_rng(seed).permutation(11)
    blocks = [sorted(int(i) for i in b) for b in np.array_split(order, 4)]  # sizes 3, 3, 3, 2
    seen: list[str] = []
    for k in range(4):
        val = FolderPairs(root, "val", fold=k, **options)
        train = FolderPairs(root, "train", fold=k, **options)
        val_ids = [val.name(i) for i in range(len(val))]
        train_ids = [train.name(i) for i in range(len(train))]
        assert val_ids == [f"s{i}" for i in blocks[k]]
        assert sorted(train_ids + val_ids) == sorted(stems) and not set(train_ids) & set(val_ids)
        assert kfold_indices(11, 4, k, seed) == (
            [i for i in range(11) if i not in blocks[k]],
            blocks[k],
        )
        seen += val_ids
    assert sorted(seen) == sorted(stems)  # disjoint val folds covering every sample
    if seed is None:
        assert blocks == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10]]  # contiguous blocks
    assert len(FolderPairs(root, "all", fold=1, **options)) == 11  # "all" ignores folds
    with pytest.raises(DataError, match="holdout and folds"):
        FolderPairs(root, "val", holdout=5, **options)
    with pytest.raises(DataError, match=r"fold must be in 0\.\.3, got 4"):
        FolderPairs(root, "val", fold=4, **options)
    with pytest.raises(DataError, match="folds must be between 2 and the 11 samples"):
        FolderPairs(root, "val", meta=TWO_CLASSES, folds=12)


def test_shipped_cv_configs_split_isbi_by_blocks(shared_path: SharedPath) -> None:
    """The benchmark configs' folds: ISBI slices 6k..6k+5 held out in fold k."""
    from fcnseg.config import load_config

    root = shared_path("data", "isbi2012-em")
    cfg = load_config("unet_isbi2012-cv", [f"data.root={root}", "data.options.fold=2"])
    val = build_dataset(cfg.data.dataset, cfg.data.root, cfg.data.val_split, **cfg.data.options)
    train = build_dataset(cfg.data.dataset, cfg.data.root, "train", **cfg.data.options)
    assert [val.name(i) for i in range(len(val))] == [str(i) for i in range(12, 18)]
    assert len(train) == 24


def test_datasets_pickle_for_worker_processes(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ["a", "b"], values=(0, 255))
    ds = FolderPairs(root, "all", meta="isbi2012", images="images", masks="masks")
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone) == 2 and torch.equal(clone[1][1], ds[1][1])
    assert set(torch.unique(clone[0][1]).tolist()) == {0, 1}


def test_transforms_applied(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ["a"])
    ds = FolderPairs(root, "all", transforms=lambda i, m: (i.float(), m + 1), meta=TWO_CLASSES)
    image, mask = ds[0]
    assert image.dtype == torch.float32 and mask.min() == 1


# --- error paths --------------------------------------------------------------------------


def test_unreadable_files_raise_data_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png is empty \(0 bytes\)"):
        read_image(empty)
    with pytest.raises(DataError, match=r"missing\.png does not exist"):
        read_mask(tmp_path / "missing.png")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG\n")
    with pytest.raises(DataError, match=r"notes\.jpg is not an image"):
        read_image(text)
    full = tmp_path / "full.png"
    write_image(full, 64, 64)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.png.*truncated"):
        read_image(truncated)
    with pytest.raises(DataError, match=r"truncated\.png"):
        read_mask(truncated)
    with pytest.raises(DataError, match=r"is not a regular file"):
        read_image(tmp_path)


def test_rgb_mask_suggests_palette_conversion(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    colours = np.array([[VOC_PALETTE[0], VOC_PALETTE[15]], [(224, 224, 192), VOC_PALETTE[1]]])
    Image.fromarray(colours.astype(np.uint8)).save(path)
    with pytest.raises(DataError, match=r"colour\.png holds colours .*palette.*colors_to_indices"):
        read_mask(path)
    Image.fromarray(colours.astype(np.uint8)).convert("RGBA").save(path)
    with pytest.raises(DataError, match=r"mode RGBA"):
        read_mask(path)
    table = {**dict(zip(VOC_PALETTE, range(21), strict=True)), (224, 224, 192): 255}
    assert colors_to_indices(colours, table).tolist() == [[0, 15], [255, 1]]
    with pytest.raises(DataError, match=r"colour\.png has colours not in the palette: \(224, 2"):
        colors_to_indices(colours, VOC_PALETTE, source=path)
    assert colors_to_indices(colours[:1], VOC_PALETTE).dtype == np.int64
    with pytest.raises(ValueError, match="is given for indices 6 and 48"):
        colors_to_indices(colours, ADE20K_PALETTE)  # (140, 140, 140) twice upstream


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ["a"])
    write_mask(root / "masks" / "a.png", labels_like(5, 8))
    with pytest.raises(DataError, match=r"masks/a\.png is 8×5 .*images/a\.png is 8×6"):
        FolderPairs(root, "all", meta=TWO_CLASSES)[0]
    write_mask(root / "masks" / "a.png", labels_like(8, 6))
    with pytest.raises(DataError, match="transposed"):
        FolderPairs(root, "all", meta=TWO_CLASSES)[0]


def test_out_of_range_labels_named(tmp_path: Path) -> None:
    root = make_folder(tmp_path, ["a"], values=(0, 1, 7, 200))
    with pytest.raises(DataError, match=r"masks/a\.png has labels \[7, 200\] outside the allowed"):
        FolderPairs(root, "all", meta=TWO_CLASSES)[0]
    with pytest.raises(DataError, match=r"a\.png has raw values \[7, 200\]"):
        FolderPairs(root, "all", meta=TWO_CLASSES, mask_values={0: 0, 1: 1})[0]
    image = torch.zeros(3, 1, 3, dtype=torch.uint8)
    check_pair(image, torch.tensor([[0, 1, 255]]), 2, 255, "i.png", "m.png")
    with pytest.raises(DataError, match=r"m\.png has labels \[-1, 255\]"):
        check_pair(image, torch.tensor([[-1, 1, 255]]), 2, None, "i.png", "m.png")


def test_empty_splits_and_missing_ids(tmp_path: Path) -> None:
    voc = make_voc(tmp_path / "voc", {"train": ["a", "b"], "empty": [], "bad": ["a", "x1", "x2"]})
    with pytest.raises(DataError, match=r"empty: .*empty\.txt lists no samples"):
        VOCSegmentation(voc, "empty")
    for i in ("x1", "x2"):
        (voc / "JPEGImages" / f"{i}.jpg").unlink()
    with pytest.raises(DataError, match=r"bad\.txt names missing files.*2 without an .*\[x1, x2\]"):
        VOCSegmentation(voc, "bad")
    (tmp_path / "folder" / "images").mkdir(parents=True)
    (tmp_path / "folder" / "masks").mkdir()
    with pytest.raises(DataError, match=r"split is empty: no images .*folder/images"):
        FolderPairs(tmp_path / "folder", "all", meta=TWO_CLASSES)
    folder = make_folder(tmp_path / "folder", ["a", "b"])
    (folder / "list.txt").write_text("a\nzz\n")
    with pytest.raises(DataError, match=r"list\.txt names missing files.*without an image.*\[zz\]"):
        FolderPairs(folder, "list", meta=TWO_CLASSES)
    (folder / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.txt lists no samples"):
        FolderPairs(folder, "empty", meta=TWO_CLASSES)


def test_camvid_pairing_errors(tmp_path: Path) -> None:
    for split, stems in [("train", ["f1", "f2", "f3"]), ("trainannot", ["f1", "f3", "f4"])]:
        for stem in stems:
            if split == "train":
                write_image(tmp_path / split / f"{stem}.png")
            else:
                write_mask(tmp_path / split / f"{stem}.png", labels_like(values=(0, 11, 10)))
    with pytest.raises(DataError, match=r"1 image\(s\) .*\[f2\].*1 mask\(s\) .*\[f4\]"):
        CamVid(tmp_path, "train")
    (tmp_path / "trainannot" / "f4.png").rename(tmp_path / "trainannot" / "f2.png")
    ds = CamVid(tmp_path, "train")
    assert len(ds) == 3 and set(torch.unique(ds[0][1]).tolist()) == {0, 10, 255}
    write_image(tmp_path / "train" / "f1.jpg")
    with pytest.raises(DataError, match=r"several files per stem.*f1"):
        CamVid(tmp_path, "train")
    with pytest.raises(DataError, match=r"needs folders .*val and .*valannot"):
        CamVid(tmp_path, "val")
    (tmp_path / "test").mkdir()
    (tmp_path / "testannot").mkdir()
    with pytest.raises(DataError, match=r"split is empty: no images .*test"):
        CamVid(tmp_path, "test")


def test_label_map_and_root_errors(tmp_path: Path) -> None:
    lm = LabelMap({0: 0, 255: 1}, name="ISBI table")
    assert lm(torch.tensor([[0, 255]])).tolist() == [[0, 1]]
    with pytest.raises(DataError, match=r"x\.png has raw values \[128, 300\] that the ISBI table"):
        lm(torch.tensor([[0, 128, 300]]), "x.png")
    with pytest.raises(DataError, match="needs a root"):
        CamVid(None)
    with pytest.raises(DataError, match="is not an existing folder"):
        VOCSegmentation(tmp_path / "nowhere")


# --- image and mask modes -----------------------------------------------------------------


def test_image_modes(tmp_path: Path) -> None:
    grey = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    out = read_image(tmp_path / "l.png")
    assert out.shape == (3, 2, 2) and out.dtype == torch.uint8
    assert all(out[c].tolist() == grey.tolist() for c in range(3))

    rgba = np.array([[[10, 20, 30, 0], [40, 50, 60, 255]]], dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")  # alpha dropped, colours kept (even where alpha 0)
    assert out[:, 0, 0].tolist() == [10, 20, 30] and out[:, 0, 1].tolist() == [40, 50, 60]

    write_mask(tmp_path / "p.png", np.array([[0, 1, 15]]), palette=True)
    out = read_image(tmp_path / "p.png")
    assert [tuple(out[:, 0, x].tolist()) for x in range(3)] == [VOC_PALETTE[i] for i in (0, 1, 15)]

    sixteen = np.array([[0, 257 * 100, 65535, 1000]], dtype=np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "i16.png")
    assert Image.open(tmp_path / "i16.png").mode == "I;16"
    assert read_image(tmp_path / "i16.png")[0].tolist() == [[0, 100, 255, 4]]  # v·255/65535
    Image.fromarray(sixteen.astype(np.int32)).save(tmp_path / "i32.tif")
    assert read_image(tmp_path / "i32.tif")[1].tolist() == [[0, 100, 255, 4]]
    Image.fromarray(np.array([[-5, 70000]], dtype=np.int32)).save(tmp_path / "wide.tif")
    with pytest.raises(DataError, match=r"wide\.tif is a 32-bit integer image"):
        read_image(tmp_path / "wide.tif")
    Image.fromarray(np.zeros((2, 2), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"f\.tif has unsupported mode 'F'"):
        read_image(tmp_path / "f.tif")

    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    red = read_image(tmp_path / "cmyk.jpg")[:, 2, 2].tolist()
    assert red[0] > 240 and red[1] < 15 and red[2] < 15

    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png").tolist() == [[[1]], [[2]], [[3]]]
    Image.new("L", (1, 1), 4).save(tmp_path / "one_mask.png")
    assert read_mask(tmp_path / "one_mask.png").tolist() == [[4]]


def test_exif_orientation_applied(tmp_path: Path) -> None:
    """Orientation 6: the stored image is shown rotated 90° clockwise (stored left → top)."""
    stored = np.zeros((16, 32, 3), dtype=np.uint8)  # H=16, W=32: red left half, blue right
    stored[:, :16] = (255, 0, 0)
    stored[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(tmp_path / "rotated.jpg")
    assert out.shape == (3, 32, 16)  # display orientation: W×H swapped
    top, bottom = out[:, :12].float().mean((1, 2)), out[:, 20:].float().mean((1, 2))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


def test_mask_modes(tmp_path: Path) -> None:
    write_mask(tmp_path / "p.png", np.array([[0, 15, 255]]), palette=True)
    assert Image.open(tmp_path / "p.png").mode == "P"
    assert read_mask(tmp_path / "p.png").tolist() == [[0, 15, 255]]  # indices, not colours
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.uint16)).save(tmp_path / "i16.png")
    mask = read_mask(tmp_path / "i16.png")
    assert mask.dtype == torch.int64 and mask.tolist() == [[0, 1000, 65535]]
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bits.png")
    assert read_mask(tmp_path / "bits.png").tolist() == [[1, 0]]
    Image.new("LA", (2, 2)).save(tmp_path / "la.png")
    with pytest.raises(DataError, match=r"la\.png has unsupported mode 'LA'"):
        read_mask(tmp_path / "la.png")


def test_max_pixels_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "big.png", 20, 20)
    with pytest.raises(
        DataError, match=r"big\.png is 20×20 = 400 pixels, more than max_pixels=399"
    ):
        read_image(tmp_path / "big.png", max_pixels=399)
    assert read_image(tmp_path / "big.png", max_pixels=400).shape == (3, 20, 20)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL's own limit: errors above 200 px
    with pytest.raises(DataError, match=r"big\.png is too large for max_pixels=100"):
        read_image(tmp_path / "big.png")  # default: PIL's limit
    assert read_image(tmp_path / "big.png", max_pixels=10_000).shape == (3, 20, 20)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored after the temporary raise


# --- palettes -----------------------------------------------------------------------------


def test_palettes() -> None:
    assert len(VOC_CLASSES) == len(VOC_PALETTE) == 21
    assert VOC_PALETTE[:4] == ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
    assert VOC_PALETTE[15] == (192, 128, 128) and voc_colormap()[255] == (224, 224, 192)
    assert len(CAMVID_CLASSES) == len(CAMVID_PALETTE) == 11 and CAMVID_PALETTE[0] == (128, 128, 128)
    assert len(CITYSCAPES_CLASSES) == len(CITYSCAPES_PALETTE) == 19
    assert CITYSCAPES_CLASSES[13] == "car" and CITYSCAPES_PALETTE[0] == (128, 64, 128)
    assert sorted(CITYSCAPES_ID_TO_TRAINID) == list(range(34))
    assert sorted(v for v in CITYSCAPES_ID_TO_TRAINID.values() if v != 255) == list(range(19))
    assert len(ADE20K_CLASSES) == len(ADE20K_PALETTE) == 150
    assert ADE20K_CLASSES[:5] == ("wall", "building", "sky", "floor", "tree")
    assert ADE20K_CLASSES[-1] == "flag" and len(set(ADE20K_CLASSES)) == 150
    assert len(set(default_palette(300))) == 300


def test_every_error_message_has_no_bare_pil_exception(tmp_path: Path) -> None:
    """Garbage of several kinds always surfaces as DataError naming the file."""
    samples = {
        "zeros.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "header.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 10,
        "random.bmp": bytes(range(256)),
    }
    for name, content in samples.items():
        (tmp_path / name).write_bytes(content)
        for reader in (read_image, read_mask):
            with pytest.raises(DataError, match=re.escape(name)):
                reader(tmp_path / name)
