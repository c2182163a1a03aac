"""Prediction at scale: every input predicted exactly once across torchrun ranks, outputs
written atomically with a manifest, a rerun resumes (after a kill -9 too) to the same bytes as
an uninterrupted run, and an unreadable image is recorded while the rest finish."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.data.registry import build_dataset
from fcnseg.inference.shard import check_unique_names, shard

SCENES = build_dataset("synthetic", None, "val", num_images=12, size=[40, 56])
COMMON = ["--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [0, 1, 5, 12, 13])
def test_shards_cover_every_input_once(world: int, count: int) -> None:
    paths = [Path(f"d{i % 3}/img{i:03d}.png") for i in range(count)]
    shares = [shard(list(reversed(paths)) + paths[:2], r, world) for r in range(world)]
    together = [p for s in shares for p in s]
    assert sorted(together) == sorted(paths)  # none missed, none twice (duplicates dropped)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="not in a job"):
        shard(paths, world, world)


def test_two_inputs_writing_one_name_are_refused() -> None:
    check_unique_names([Path("a/x.png"), Path("a/x.png"), Path("b/y.jpg")])
    with pytest.raises(ValueError, match=r"would both write x\.png"):
        check_unique_names([Path("a/x.png"), Path("b/x.jpg")])


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, make_fcn_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    return make_fcn_checkpoint(path, classes=list(SCENES.classes), palette=SCENES.palette)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve scenes, two of them a different size (so batches break on size)."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(len(SCENES)):
        image = Image.fromarray(SCENES[i][0].permute(1, 2, 0).numpy())
        if i in (3, 7):
            image = image.resize((48, 36))
        image.save(folder / f"scene{i:02d}.png")
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith("manifest")}  # fmt: skip


def _manifest(folder: Path) -> list[dict]:
    lines = []
    for f in sorted(folder.glob("manifest-rank*.jsonl")):
        lines += [json.loads(line) for line in f.read_text().splitlines()]
    return lines


def test_rerun_skips_finished_images_and_overwrite_redoes_them(
    model: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["predict", str(model), str(images), "-o", str(out), "--probabilities", *COMMON]
    assert main([*args, "--workers", "2"]) == 0
    first = _files(out)
    assert len(first) == 3 * 12 and not (out / ".fcnseg-partial").exists()
    records = _manifest(out)
    assert sorted(r["input"] for r in records) == sorted(str(f) for f in images.iterdir())
    assert all(r["outputs"][0].endswith(".png") and r["classes"] for r in records)
    assert {tuple(r["size"]) for r in records} == {(40, 56), (36, 48)}
    (out / "scene05.png").unlink()
    assert main(args) == 0  # scene05's batch again (the 2nd of 4 images): the same bytes
    again = sorted(Path(r["input"]).name for r in _manifest(out)[12:])
    assert again == ["scene04.png", "scene05.png", "scene06.png", "scene07.png"]
    assert _files(out) == first
    assert main([*args, "--overwrite"]) == 0
    assert len(_manifest(out)) == 12 + 4 + 12 and _files(out) == first


def test_no_overlays_writes_label_maps_only(model: Path, images: Path, tmp_path: Path) -> None:
    """``--no-overlays``: one label map per image, the same bytes as with overlays; a rerun
    with overlays asked for again writes the missing overlays."""
    full, bare = tmp_path / "full", tmp_path / "bare"
    assert main(["predict", str(model), str(images), "-o", str(full), *COMMON]) == 0
    assert main(["predict", str(model), str(images), "-o", str(bare), "--no-overlays",
                 *COMMON]) == 0  # fmt: skip
    labels = {k: v for k, v in _files(full).items() if not k.endswith("_overlay.png")}
    assert _files(bare) == labels and len(labels) == 12
    assert main(["predict", str(model), str(images), "-o", str(bare), *COMMON]) == 0
    assert _files(bare) == _files(full)


def test_unreadable_image_is_recorded_and_the_rest_finish(
    model: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for f in list(images.iterdir())[:4]:
        (folder / f.name).write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    assert main(["predict", str(model), str(folder), "-o", str(out), *COMMON]) == 1
    records = {Path(r["input"]).name: r for r in _manifest(out)}
    assert "is not an image" in records["broken.png"]["error"]
    assert len([r for r in records.values() if "outputs" in r]) == 4
    assert "1 file(s) could not be used" in capsys.readouterr().err
    (folder / "broken.png").unlink()  # gone: its old error record no longer fails the run
    assert main(["predict", str(model), str(folder), "-o", str(out), *COMMON]) == 0


def test_manifest_line_cut_by_a_crash_does_not_swallow_the_next(tmp_path: Path) -> None:
    from fcnseg.inference.outputs import OutputWriter, PredictOutputs, read_manifests

    (tmp_path / "manifest-rank0.jsonl").write_text('{"input": "a.png", "outp')
    writer = OutputWriter(tmp_path, 0, PredictOutputs())
    writer.log({"input": "b.png", "error": "x"})
    writer.close()
    assert [r["input"] for r in read_manifests(tmp_path)] == ["b.png"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _predict_command(model: Path, images: Path, out: Path, nproc: int) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
              "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]  # fmt: skip
    run = ["-m", "fcnseg", "predict", str(model), str(images), "-o", str(out), *COMMON]
    return (
        [*launch, *run, "--batch-size", "2"]
        if nproc > 1
        else [sys.executable, *run[1:], "--batch-size", "2"]
    )


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process


@pytest.mark.slow
def test_torchrun_predict_equals_one_process_and_survives_kill(
    model: Path, images: Path, tmp_path: Path
) -> None:
    """2 processes write exactly what one writes, byte for byte; a 2-process run killed with
    SIGKILL part-way leaves only whole files in OUT and a rerun completes it to the same
    bytes."""
    one, two = tmp_path / "one", tmp_path / "two"
    done = subprocess.run(_predict_command(model, images, one, 1), env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    reference = _files(one)
    assert len(reference) == 2 * 12
    done = subprocess.run(_predict_command(model, images, two, 2), env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert _files(two) == reference
    assert sorted(f.name for f in two.glob("manifest-rank*.jsonl")) == [
        "manifest-rank0.jsonl", "manifest-rank1.jsonl"]  # fmt: skip

    many = tmp_path / "many"  # enough work that a kill lands part-way
    many.mkdir()
    for i in range(40):
        Image.open(images / f"scene{i % 12:02d}.png").resize((128, 96)).save(many / f"{i}.png")
    (many / "zz-broken.png").write_bytes(b"not a png")  # on one rank: reported, others finish
    full = tmp_path / "full"
    done = subprocess.run(_predict_command(model, many, full, 2), env=ENV, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and "1 file(s) could not be used" in done.stderr, done.stderr
    errors = [r for r in _manifest(full) if "error" in r]
    assert [Path(r["input"]).name for r in errors] == ["zz-broken.png"]
    reference = _files(full)
    assert len(reference) == 2 * 40
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_predict_command(model, many, killed, 2), env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_manifest(killed) if killed.exists() else []) < 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _files(killed)
    assert 0 < len(partial) < len(reference), "the kill came too late to test anything"
    for name, data in partial.items():  # whatever is in OUT is whole
        assert data == reference[name], name
    done = subprocess.run(_predict_command(model, many, killed, 2), env=ENV,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]  # zz-broken.png, as before
    assert _files(killed) == reference and not (killed / ".fcnseg-partial").exists()


def test_eval_decodes_in_workers_to_the_same_metrics(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fcnseg eval --workers 2`` (images decoded by DataLoader processes, as predict's
    ``--workers``) reaches the loader and scores exactly what decoding in turn scores."""
    import fcnseg.engine.loaders as loaders

    seen: list[int] = []
    make_loader = loaders.make_loader

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["num_workers"])
        return make_loader(*args, **kwargs)

    monkeypatch.setattr(loaders, "make_loader", spy)
    data = ["--config", "fcn8s_resnet18_synthetic", "--set",
            "data.options={num_images: 6, size: [40, 56]}", *COMMON]  # fmt: skip
    reports = []
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["eval", str(model), "-o", str(out), "--workers", workers, *data]) == 0
        reports.append(json.loads((out / "metrics.json").read_text()))
    assert seen == [0, 2]
    assert reports[0]["mean_iu"] == reports[1]["mean_iu"]
    assert reports[0]["per_class_iu"] == reports[1]["per_class_iu"]
