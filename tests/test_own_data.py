"""Your own data: a folder surveyed into classes and a config, inspected, trained with one
command; README's "Train on your own data" commands run literally on horse photos with 0/255
masks and learn the horse."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import load_config
from fcnseg.config.own_data import folder_config, train_size
from fcnseg.data.base import DataError
from fcnseg.data.survey import survey_folder

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FCNSEG_SHARED", REPO.parent / "shared"))
HORSE = SHARED / "data" / "weizmann-horse"
sys.path.insert(0, str(REPO / "benchmarks"))
from own_data import horse_folder, readme_commands  # noqa: E402


def _write(root: Path, masks: list[np.ndarray], *, palette: list[int] | None = None) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i, mask in enumerate(masks):
        h, w = mask.shape
        Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "images" / f"p{i}.jpg")
        im = Image.fromarray(mask.astype(np.uint8))
        if palette is not None:
            im = im.convert("P")
            im.putpalette(palette)
        im.save(root / "masks" / f"p{i}.png")
    return root


def _blob(h: int, w: int, value: int, background: int = 0) -> np.ndarray:
    mask = np.full((h, w), background, np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = value
    return mask


def test_binary_0_255_masks_become_two_classes(tmp_path: Path) -> None:
    root = _write(tmp_path / "d", [_blob(20, 30, 255) for _ in range(6)])
    survey = survey_folder(root)
    assert survey.pairs == 6 and survey.mask_kind == "grey"
    assert survey.classes == ["background", "foreground"]
    assert survey.mask_values == {0: 0, 255: 1} and "binary" in survey.mapping
    assert set(survey.values) == {0, 255}
    raw = folder_config(survey)
    assert raw["data"]["options"]["mask_values"] == {0: 0, 255: 1}
    assert raw["data"]["options"]["holdout"] == 5
    cfg = load_config_from(raw)
    from fcnseg.engine.build import build_split

    train, val = build_split(cfg, "train"), build_split(cfg, "val")
    assert (len(train), len(val)) == (4, 2)  # pairs 0 and 5 are val
    assert set(np.unique(train[0][1].numpy())) == {0, 1}


def load_config_from(raw: dict):
    from fcnseg.config import config_from_data

    return config_from_data(raw, [], "test")


def test_indices_with_ignore_border_and_class_names(tmp_path: Path) -> None:
    masks = [_blob(16, 16, 1), _blob(16, 16, 2)]
    masks[0][0, :] = 255  # a VOC-style ignore border
    root = _write(tmp_path / "d", masks)
    (root / "classes.txt").write_text("sky\nroad\ncar\n")
    survey = survey_folder(root)
    assert survey.classes == ["sky", "road", "car"]
    assert survey.mask_values is None and survey.ignore_index == 255
    assert "class indices 0..2" in survey.mapping and "255 = ignore" in survey.mapping
    (root / "classes.txt").write_text("sky\nroad\n")
    with pytest.raises(DataError, match="names 2 classes but the masks hold 3"):
        survey_folder(root)


def test_grey_levels_are_mapped_in_order(tmp_path: Path) -> None:
    masks = [_blob(16, 16, 128), _blob(16, 16, 255, background=128)]
    masks[0][0, 0] = 0
    survey = survey_folder(_write(tmp_path / "d", masks))
    assert survey.mask_values == {0: 0, 128: 1, 255: 2}
    assert survey.classes == ["background", "class_1", "class_2"]


def test_palette_masks_take_the_palette(tmp_path: Path) -> None:
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    palette[255 * 3 : 255 * 3 + 3] = [224, 224, 192]
    masks = [_blob(12, 12, 2), _blob(12, 12, 1)]
    masks[1][0, 0] = 255
    survey = survey_folder(_write(tmp_path / "d", masks, palette=palette))
    assert survey.mask_kind == "palette" and survey.mask_values is None
    assert survey.palette == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert "index 255 = ignore" in survey.mapping


def test_split_folders_are_the_split(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "train", [_blob(16, 24, 1)] * 3)
    _write(tmp_path / "d" / "val", [_blob(16, 24, 1)] * 2)
    survey = survey_folder(tmp_path / "d")
    assert {k: len(v) for k, v in survey.splits.items()} == {"train": 3, "val": 2}
    raw = folder_config(survey)
    assert "holdout" not in raw["data"]["options"]
    from fcnseg.engine.build import build_split

    cfg = load_config_from(raw)
    assert (len(build_split(cfg, "train")), len(build_split(cfg, "val"))) == (3, 2)


def test_folder_mistakes_are_clear(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a data folder: expected images/ and masks/"):
        survey_folder(tmp_path / "empty")
    root = _write(tmp_path / "one", [np.zeros((8, 8), np.uint8)] * 2)
    with pytest.raises(DataError, match="at least two classes"):
        survey_folder(root)
    noisy = [np.arange(0, 255, 3, dtype=np.uint8).reshape(5, 17)]  # 85 scattered grey levels
    with pytest.raises(DataError, match="85 scattered grey levels"):
        survey_folder(_write(tmp_path / "noisy", noisy))


def test_train_size_keeps_aspect_and_never_upscales() -> None:
    assert train_size({(480, 640): 3}) == [160, 224]  # 3:4 at ≈160×224 pixels
    assert train_size({(64, 96): 1, (80, 96): 2}) == [80, 96]  # small images: not enlarged
    assert train_size({(1000, 1000): 1}) == [192, 192]


def test_inspect_and_save_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _write(tmp_path / "d", [_blob(24, 32, 255) for _ in range(5)])
    assert main(["inspect", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    expected = ["5 image/mask pairs", "0 → class 0, 255 → class 1", "1 foreground"]
    expected += ["train split: 4 samples", "of labelled pixels", "random initialisation"]
    assert all(e in out for e in expected), out
    saved = tmp_path / "my.yaml"
    args = ["train", str(root), "--save-config", str(saved), "--set", "train.iterations=7"]
    assert main(args) == 0
    assert "edit it, then: fcnseg train" in capsys.readouterr().out
    cfg = load_config(saved)
    assert cfg.train.iterations == 7 and cfg.data.options["mask_values"] == {0: 0, 255: 1}
    assert not (tmp_path / "runs").exists()  # --save-config trains nothing


def test_inspect_a_config_reports_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The shipped horse config pointed at a 0/255 folder: inspect names the fix, and training
    refuses in one line before any step (it used to train on nothing and report mean IU 1.0)."""
    root = _write(tmp_path / "d", [_blob(24, 32, 255) for _ in range(5)])
    point = ["--set", f"data.root={root}", "--set", "model.backbone_weights=null"]
    assert main(["inspect", "fcn8s_vgg16_horse", "--no-progress", *point]) == 0
    out = capsys.readouterr().out
    assert "ERROR: the train masks hold only 0 and 255" in out
    assert "mask_values={0: 0, 255: 1}" in out
    run = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"0 and 255.*mask_values=\{0: 0, 255: 1\}"):
        main(["train", "fcn8s_vgg16_horse", "-o", str(run), "--no-progress", *point])
    assert not (run / "checkpoints").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(not HORSE.is_dir(), reason="needs ../shared/data/weizmann-horse")
def test_readme_own_data_section_runs_literally(tmp_path: Path) -> None:
    """Each command of README's section in a shell, in a folder holding ``my_data`` (40 horse
    photos, 0/255 masks) and ``.venv`` (this interpreter's). ``serve`` gets a free ``--port``
    and is stopped after answering a prediction. The horse must be learned: its val IoU present
    and the mean IU above the all-background baseline."""
    commands = readme_commands()
    assert commands[0] == "source .venv/bin/activate" and len(commands) == 5
    horse_folder(tmp_path / "my_data", SHARED)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for command in commands[1:-1]:
        proc = subprocess.run(["bash", "-c", f"{commands[0]} && {command}"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=1500)  # fmt: skip
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr
        if command.startswith("fcnseg inspect"):
            assert "0 → class 0, 255 → class 1" in proc.stdout and "ERROR" not in proc.stdout

    saved = load_config(tmp_path / "runs/my_data/config.yaml")  # the inferred config, kept
    assert saved.data.options["mask_values"] == {0: 0, 255: 1}
    metrics = json.loads((tmp_path / "runs/my_data/metrics.json").read_text())
    horse_iou = metrics["per_class_iu"]["foreground"]
    val = [np.array(Image.open(p)) for p in sorted((tmp_path / "my_data/masks").iterdir())[::5]]
    background = float(np.mean([(m == 0).mean() for m in val]))
    assert metrics["in_ground_truth"]["foreground"] and horse_iou > 0.3
    assert metrics["mean_iu"] > background / 2 + 0.15  # all-background: (bg IoU + 0) / 2
    panels = sorted((tmp_path / "predictions").glob("*_panel.png"))
    assert len(panels) == 40
    label = Image.open(tmp_path / "predictions" / "horse001.png")
    assert label.size == Image.open(tmp_path / "my_data/images/horse001.jpg").size

    port = _free_port()
    serve = subprocess.Popen(["bash", "-c", f"{commands[0]} && exec {commands[-1]} --port {port}"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5):
                    break
            except OSError:
                time.sleep(0.5)
        image = (tmp_path / "my_data/images/horse001.jpg").read_bytes()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict?format=json",
            data=image,
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert "foreground" in json.dumps(answer)
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_survey_refuses_what_it_would_get_wrong(tmp_path: Path) -> None:
    soft = _blob(40, 40, 255)
    soft[10, 10:30] = 128  # a few anti-aliased edge pixels
    with pytest.raises(DataError, match=r"anti-aliased.*threshold them"):
        survey_folder(_write(tmp_path / "soft", [soft, _blob(40, 40, 255)]))
    _write(tmp_path / "half" / "train", [_blob(16, 24, 1)] * 2)
    with pytest.raises(DataError, match="not val/: give both train/ and val/"):
        survey_folder(tmp_path / "half")
    single = survey_folder(_write(tmp_path / "single", [_blob(16, 24, 255)]))
    with pytest.raises(DataError, match="at least 2 are needed"):
        folder_config(single)


def test_one_based_indices_keep_255_as_ignore(tmp_path: Path) -> None:
    masks = [_blob(16, 16, 2, background=1), _blob(16, 16, 3, background=1)]
    masks[0][0, :] = 255
    survey = survey_folder(_write(tmp_path / "d", masks))
    assert survey.mask_values is None and len(survey.classes) == 4
    assert any("class 0 (background) never occurs" in n for n in survey.notes)


def test_own_data_run_resumes_evaluates_and_reads_masks_like_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 0/255 table (data.options.mask_values) survives the checkpoint's JSON: the run
    resumes with nothing refused, eval rebuilds its data, predict --masks reads 255 as class 1."""
    root = _write(tmp_path / "d", [_blob(24, 32, 255) for _ in range(5)])
    run = tmp_path / "run"
    tiny = ["--set", "train.iterations=2", "--set", "train.eval_every=2", "--no-progress"]
    assert main(["train", str(root), "-o", str(run), *tiny]) == 0
    more = ["--set", "train.iterations=3", "--set", "train.eval_every=2", "--no-progress"]
    assert main(["train", str(root), "-o", str(run), *more, "--resume"]) == 0
    assert json.loads((run / "metrics.json").read_text())["iteration"] == 3
    assert main(["eval", str(run), "-o", str(tmp_path / "eval"), "--no-progress"]) == 0
    out = tmp_path / "pred"
    args = ["predict", str(run), str(root / "images"), "-o", str(out), "--no-progress"]
    assert main([*args, "--masks", str(root / "masks")]) == 0
    capsys.readouterr()
    panel = np.array(Image.open(out / "p0_panel.png").convert("RGB"))
    # The ground-truth column shows the foreground colour, not the "ignore" grey of 255.
    from fcnseg.data.palettes import default_palette

    assert (panel == np.array(default_palette(2)[1], np.uint8)).all(-1).any()
