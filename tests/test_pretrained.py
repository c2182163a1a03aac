"""Pretrained weights: the registry's entries, download (once, resumed, checked) from a local
HTTP server, offline failure in seconds, local files in either layout, and the CLI's --weights.
Nothing here uses the network: every URL is 127.0.0.1."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_caffe import _reference_state

from fcnseg.cli import main
from fcnseg.data.palettes import VOC_CLASSES
from fcnseg.download import Checksum, partial_path
from fcnseg.inference import Predictor
from fcnseg.models import FCN, MODELS, build_backbone
from fcnseg.models.caffe import CAFFE_PREPROCESS, caffe_key_map, load_caffe_weights
from fcnseg.models.pretrained import (
    LAYOUTS,
    PRETRAINED,
    PretrainedWeights,
    cached_file,
    load_pretrained,
    pretrained_state,
)
from fcnseg.weights import WeightsUnavailableError

# --- a tiny reference-layout FCN, served over HTTP ------------------------------------------


def tiny_fcn(*, num_classes: int) -> FCN:
    """FCN-8s in the reference's Caffe layout at 1/16 of VGG16's width (a test model)."""
    backbone = build_backbone("vgg16", mode="caffe", width=1 / 16)
    return FCN(backbone, num_classes, skips=2, mode="caffe", learnable_upsampling=False)


def _payload() -> tuple[bytes, dict[str, torch.Tensor]]:
    state = _reference_state(tiny_fcn(num_classes=3), flat_fc6=False)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue(), state


PAYLOAD, REFERENCE_STATE = _payload()
MD5 = hashlib.md5(PAYLOAD).hexdigest()


class Server:
    """Files over HTTP on 127.0.0.1, with optional Range support and a way to drop a
    response part-way (once); records each request's path and Range header."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut: dict[str, int] = {}
        self.content_type = "application/octet-stream"
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.ranges:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.cut.pop(self.path, None)
                self.wfile.write(body[start : start + cut] if cut is not None else body[start:])
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torch's hub cache in a temporary folder."""
    folder = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(folder))
    return folder


@pytest.fixture
def tiny_entry(server: Server, hub: Path, monkeypatch: pytest.MonkeyPatch) -> PretrainedWeights:
    """A registry entry ``test/tiny`` for the tiny FCN's reference-layout file on ``server``."""
    monkeypatch.setitem(MODELS, "tiny_fcn", tiny_fcn)
    server.files["/tiny.pth"] = PAYLOAD
    base = PRETRAINED["reference/fcn8s_voc"]
    entry = dataclasses.replace(
        base,
        name="test/tiny",
        url=f"{server.url}/tiny.pth",
        checksum=Checksum("md5", MD5),
        filename="tiny_from_caffe.pth",
        model={"name": "tiny_fcn", "num_classes": 3},
        classes=("background", "a", "b"),
        palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)),
        size_bytes=len(PAYLOAD),
        note="",
    )
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    return entry


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


IMAGE = torch.randint(0, 256, (1, 3, 29, 35), generator=torch.Generator().manual_seed(2),
                      dtype=torch.uint8)  # fmt: skip


def _expected_logits() -> torch.Tensor:
    """The tiny FCN given the served weights through the reference loader, on BGR − mean."""
    model = tiny_fcn(num_classes=3).eval()
    load_caffe_weights(model, REFERENCE_STATE)
    mean = torch.tensor(CAFFE_PREPROCESS["mean"]).view(1, 3, 1, 1)
    with torch.no_grad():
        return model(IMAGE.flip(1).float() - mean)


# --- the registry ---------------------------------------------------------------------------


def test_registry_entries_are_complete_and_agree_with_their_sources() -> None:
    """Every entry names its file, the checksum its source publishes, a registered layout and a
    buildable model of 21 VOC classes; torchvision's entries agree with torchvision's own
    metadata (URL, SHA-256 prefix in the file name, metrics, size)."""
    from torchvision.models.segmentation import FCN_ResNet50_Weights, FCN_ResNet101_Weights

    names = {"torchvision/fcn_resnet50_coco", "torchvision/fcn_resnet101_coco",
             "reference/fcn32s_voc", "reference/fcn16s_voc", "reference/fcn8s_voc",
             "reference/fcn8s-atonce_voc"}  # fmt: skip
    assert names <= set(PRETRAINED)
    for name in names:
        e = PRETRAINED[name]
        assert e.layout in LAYOUTS and e.published is not None and e.published.source
        assert list(e.classes) == list(VOC_CLASSES) and len(e.palette) == 21
        if name.startswith("reference/"):
            assert e.checksum.algorithm == "md5" and len(e.checksum.digest) == 32
            assert e.preprocess == CAFFE_PREPROCESS and e.model["mode"] == "caffe"
            assert e.model.get("at_once", False) == name.endswith("atonce_voc")
            continue
        assert e.checksum.algorithm == "sha256" and f"-{e.checksum.digest}.pth" in e.url
        tv = (FCN_ResNet50_Weights if "50" in name.split("resnet")[1][:2] else
              FCN_ResNet101_Weights).COCO_WITH_VOC_LABELS_V1  # fmt: skip
        metrics = tv.meta["_metrics"]["COCO-val2017-VOC-labels"]
        assert e.url == tv.url and e.size_mb == tv.meta["_file_size"]
        assert (e.published.mean_iu, e.published.pixel_accuracy) == (
            metrics["miou"],
            metrics["pixel_acc"],
        )
        assert e.model["depth"] == (50 if "resnet50" in name else 101)


@pytest.mark.skipif("fcn_resnet" not in MODELS, reason="fcnseg.models.fcn_resnet not present")
def test_torchvision_entries_build() -> None:
    from fcnseg.models.pretrained.layouts import check_fits

    for name in ("torchvision/fcn_resnet50_coco", "torchvision/fcn_resnet101_coco"):
        spec = PRETRAINED[name].model
        with torch.device("meta"):
            state = MODELS["fcn_resnet"](**{k: v for k, v in spec.items() if k != "name"})
        check_fits(state.state_dict(), spec, name)


def test_unknown_name_suggests_the_nearest() -> None:
    with pytest.raises(ValueError, match=r"did you mean 'reference/fcn8s_voc'"):
        pretrained_state("reference/fcn8s")


# --- download -------------------------------------------------------------------------------


def test_download_once_check_and_load(tiny_entry: PretrainedWeights, server: Server) -> None:
    """Downloaded into the hub cache, checked, converted: the model's logits on an RGB image
    are the reference loader's on the BGR mean-subtracted image; a second load reads the cache."""
    model = load_pretrained("test/tiny", progress=False)
    assert cached_file(tiny_entry).is_file()
    assert not partial_path(cached_file(tiny_entry)).exists()
    assert model.classes == ["background", "a", "b"]
    with torch.no_grad():
        logits = model(model.preprocess(IMAGE))
    torch.testing.assert_close(logits, _expected_logits(), rtol=1e-5, atol=1e-4)
    predictor = Predictor.from_pretrained("test/tiny", device="cpu")
    assert predictor.classes == ["background", "a", "b"] and len(server.requests) == 1
    assert predictor.predict(IMAGE[0]).shape == IMAGE.shape[-2:]


def test_concurrent_downloads_take_turns(tiny_entry: PretrainedWeights, server: Server) -> None:
    """Processes (here threads) fetching one file at once: one downloads, the rest wait on the
    lock and find it — one request, a verified file (appending to one partial file would
    corrupt it)."""
    from fcnseg.download import download

    dest = cached_file(tiny_entry)
    results: list[Path | BaseException] = []

    def fetch_one() -> None:
        try:
            results.append(download(tiny_entry.url, dest, tiny_entry.checksum, progress=False))
        except BaseException as err:  # reported below
            results.append(err)

    threads = [threading.Thread(target=fetch_one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [dest] * 3
    assert len(server.requests) == 1 and dest.read_bytes() == PAYLOAD


@pytest.mark.parametrize("ranges", [True, False])
def test_interrupted_download_resumes(
    tiny_entry: PretrainedWeights, server: Server, ranges: bool
) -> None:
    """A transfer cut part-way keeps its partial file and says to run again; the next run asks
    for the rest (HTTP Range) and, when the server ignores that, starts over; either way the
    file ends up complete and checked."""
    server.ranges = ranges
    half = len(PAYLOAD) // 2
    server.cut["/tiny.pth"] = half
    with pytest.raises(WeightsUnavailableError, match=r"interrupted.*resume"):
        pretrained_state("test/tiny", progress=False)
    part = partial_path(cached_file(tiny_entry))
    assert part.stat().st_size == half
    ckpt = pretrained_state("test/tiny", progress=False)
    assert server.requests == [("/tiny.pth", None), ("/tiny.pth", f"bytes={half}-")]
    assert hashlib.md5(cached_file(tiny_entry).read_bytes()).hexdigest() == MD5
    assert not part.exists() and ckpt.path == cached_file(tiny_entry)


def test_wrong_checksum_removes_the_file(
    tiny_entry: PretrainedWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = dataclasses.replace(tiny_entry, checksum=Checksum("md5", "0" * 32))
    monkeypatch.setitem(PRETRAINED, bad.name, bad)
    with pytest.raises(WeightsUnavailableError, match=f"checksum mismatch: md5 {MD5}.*removed"):
        pretrained_state("test/tiny", progress=False)
    dest = cached_file(tiny_entry)
    assert not dest.exists() and not partial_path(dest).exists()


def test_truncated_file_is_reported_and_removed(
    tiny_entry: PretrainedWeights, server: Server
) -> None:
    """The server sends a shorter file as if complete: the known size (else the checksum)
    catches it and no data is left in the cache."""
    server.files["/tiny.pth"] = PAYLOAD[: len(PAYLOAD) - 100]
    with pytest.raises(WeightsUnavailableError, match=f"truncated: {len(PAYLOAD) - 100} bytes"):
        pretrained_state("test/tiny", progress=False)
    left = [p.name for p in cached_file(tiny_entry).parent.iterdir()]
    assert left == ["tiny_from_caffe.pth.lock"]  # the (empty) lock file only


def test_a_web_page_instead_of_the_file(tiny_entry: PretrainedWeights, server: Server) -> None:
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(WeightsUnavailableError, match=r"web page.*--weights path/to/tiny"):
        pretrained_state("test/tiny", progress=False)


def test_offline_fails_within_seconds_saying_what_to_fetch(
    hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = PRETRAINED["reference/fcn8s_voc"]
    url = f"http://127.0.0.1:{_closed_port()}/x"
    monkeypatch.setitem(PRETRAINED, entry.name, dataclasses.replace(entry, url=url))
    start = time.monotonic()
    with pytest.raises(WeightsUnavailableError) as info:
        load_pretrained("reference/fcn8s_voc")
    assert time.monotonic() - start < 5
    message = str(info.value)
    for part in (entry.filename, url, entry.checksum.digest, "--weights path/to/fcn8s"):
        assert part in message
    assert not (hub / "checkpoints" / entry.filename).exists()


# --- local files ----------------------------------------------------------------------------


def _shaped_reference_state(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A reference-layout state dict of the model ``spec`` with full-size shapes, every tensor
    one stored zero expanded (a VGG16 FCN's names and shapes without its 0.5 GB)."""
    from fcnseg.models import build_model

    with torch.device("meta"):
        model = build_model(spec)
    own = model.state_dict()
    c = spec["num_classes"]
    state = {}
    for ref, prefix in caffe_key_map(model).items():
        for blob in ("weight", "bias"):
            if f"{prefix}.{blob}" in own:
                shape = own[f"{prefix}.{blob}"].shape
                if ref.startswith("upscore"):
                    shape = (c, c, *shape[2:])  # Caffe's C×C deconvolutions
                state[f"{ref}.{blob}"] = torch.zeros(()).expand(shape)
    final = {"fcn32s": "upscore", "fcn16s": "upscore16", "fcn8s": "upscore8"}[spec["name"]]
    return {k: v for k, v in state.items() if not k.startswith("upscore") or
            k.startswith((final + ".", "upscore2.", "upscore_pool4."))}  # fmt: skip


def test_unregistered_reference_file_is_read_from_its_tensors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file in the reference layout that the registry does not know: the net (by its skip
    layers) and the number of classes (score_fr's shape) come from its tensors, the log says
    which layout was detected, the preprocessing is the reference's."""
    path = tmp_path / "my_fcn16s.pth"
    spec = {"name": "fcn16s", "num_classes": 3, "mode": "caffe"}
    torch.save(_shaped_reference_state(spec), path)
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        ckpt = pretrained_state(path)
    assert "reference layout" in caplog.text and "fcn16s with 3 classes" in caplog.text
    assert ckpt.model["name"] == "fcn16s" and ckpt.model["num_classes"] == 3
    assert ckpt.model["mode"] == "caffe" and ckpt.preprocess == CAFFE_PREPROCESS
    assert ckpt.classes == ["class 0", "class 1", "class 2"] and ckpt.metrics == {}
    assert ckpt.state_dict["backbone.stages.fc6.0.weight"].shape == (4096, 512, 7, 7)


def test_local_copy_of_a_registered_file_keeps_its_entry(tmp_path: Path) -> None:
    """A local copy named as published takes the entry's model, classes and published metric:
    at-once FCN-8s, which no tensor tells apart from the staged one."""
    entry = PRETRAINED["reference/fcn8s-atonce_voc"]
    path = tmp_path / entry.filename
    torch.save(_shaped_reference_state({**entry.model, "num_classes": 21}), path)
    ckpt = pretrained_state(path)
    assert ckpt.model["at_once"] is True and ckpt.classes == list(VOC_CLASSES)
    assert ckpt.metrics["published"]["mean_iu"] == 65.4


def test_unknown_layout_names_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"no known layout.*reference.*torchvision"):
        pretrained_state(path)


@pytest.mark.skipif("fcn_resnet" not in MODELS, reason="fcnseg.models.fcn_resnet not present")
def test_torchvision_file_gives_torchvisions_logits(tmp_path: Path) -> None:
    """A torchvision ``fcn_resnet50`` state dict (aux head, 4 classes) saved to a file: detected
    as torchvision's layout, depth/classes/aux read from it, and the loaded model gives
    torchvision's own output on the same normalised image."""
    from torchvision.models.segmentation import fcn_resnet50
    from torchvision.transforms.v2.functional import normalize

    torch.manual_seed(0)
    tv = fcn_resnet50(weights=None, weights_backbone=None, num_classes=4, aux_loss=True).eval()
    for m in tv.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "fcn_resnet50_mine.pth"
    torch.save(tv.state_dict(), path)
    model = load_pretrained(path)
    image = IMAGE[:, :, :24, :32]
    with torch.no_grad():
        ours = model(model.preprocess(image))
        theirs = tv(normalize(image / 255.0, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    torch.testing.assert_close(ours, theirs["out"], rtol=1e-4, atol=1e-4)
    assert len(model.classes) == 4


# --- command line ---------------------------------------------------------------------------


def _image(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(IMAGE[0].permute(1, 2, 0).numpy()).save(path)
    return path


def test_cli_predict_and_export_with_weights(
    tiny_entry: PretrainedWeights, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = _image(tmp_path)
    out = tmp_path / "out"
    args = ["predict", "--weights", "test/tiny", str(photo), str(photo), "-o", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert (out / "photo.png").is_file()
    assert main(["export", "--weights", "test/tiny", "--format", "torchscript", "-o",
                 str(tmp_path / "m.pt")]) == 0  # fmt: skip
    assert (tmp_path / "m.pt").is_file()


def test_cli_eval_with_weights_on_the_configs_data(
    tiny_entry: PretrainedWeights,
    server: Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`fcnseg eval --weights NAME --config CFG`: the weights' model on the config's data."""
    import json

    from fcnseg.data.datasets.synthetic import SyntheticShapes

    classes = SyntheticShapes.classes
    state = _reference_state(tiny_fcn(num_classes=len(classes)), flat_fc6=False)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    server.files["/tiny6.pth"] = buffer.getvalue()
    entry = dataclasses.replace(
        tiny_entry,
        url=f"{server.url}/tiny6.pth",
        checksum=Checksum("md5", hashlib.md5(buffer.getvalue()).hexdigest()),
        size_bytes=None,
        model={"name": "tiny_fcn", "num_classes": len(classes)},
        classes=tuple(classes),
        palette=tuple((i * 40, 0, 0) for i in range(len(classes))),
    )
    monkeypatch.setitem(PRETRAINED, entry.name, entry)
    out = tmp_path / "eval"
    data = ["--set", "data.options={num_images: 4, size: [40, 48]}"]
    argv = ["eval", "--weights", "test/tiny", "--config", "fcn8s_resnet18_synthetic", *data]
    assert main([*argv, "-o", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_class_iu"]) == set(classes)
    assert metrics["checkpoint"] == str(cached_file(entry))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve"], "give a checkpoint .* or --weights"),
        (["export", "run", "--weights", "test/tiny", "-o", "m.onnx"], "not both"),
        (["eval", "--weights", "test/tiny"], "--weights carry no data config"),
        (["predict", "photo.png", "-o", "out"], "give a checkpoint"),
    ],
)
def test_cli_needs_exactly_one_model_source(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert str(info.value).startswith(f"fcnseg {argv[0]}: ")
    assert "\n" not in str(info.value)
    assert re.search(message, str(info.value))


def test_cli_offline_is_one_line(hub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = PRETRAINED["torchvision/fcn_resnet50_coco"]
    url = f"http://127.0.0.1:{_closed_port()}/{entry.filename}"
    monkeypatch.setitem(PRETRAINED, entry.name, dataclasses.replace(entry, url=url))
    with pytest.raises(SystemExit) as info:
        main(["serve", "--weights", entry.name])
    text = str(info.value)
    assert text.startswith("fcnseg serve: torchvision/fcn_resnet50_coco: cannot reach")
    assert "sha256 1167a1af" in text and "--weights path/to/fcn_resnet50_coco-1167a1af.pth" in text


def test_init_from_a_registry_name_fine_tunes(
    tiny_entry: PretrainedWeights, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``model.init_from: test/tiny`` (downloaded from the local server) starts a 6-class run:
    every class-independent tensor is the file's, the class layers start fresh."""
    from fcnseg.config import load_config
    from fcnseg.engine.build import build_train_model

    cfg = load_config(
        "fcn8s_resnet18_synthetic",
        ["model={name: tiny_fcn, init_from: test/tiny}", "data.options={size: [48, 64]}"],
    )
    with caplog.at_level(logging.WARNING, logger="fcnseg"):
        model = build_train_model(cfg, num_classes=6)
    source = pretrained_state("test/tiny").state_dict
    state = model.state_dict()
    kept = [k for k in source if state[k].shape == source[k].shape]
    assert kept and all(torch.equal(state[k], source[k]) for k in kept)
    reset = [k for k in source if state[k].shape != source[k].shape]
    assert reset and all("score" in k for k in reset)  # score layers and their upsamplers
    assert "has 3 classes, this run 6" in caplog.text
    # The reference weights keep their own input: BGR, 0–255, the ILSVRC mean (not ImageNet's).
    assert model.preprocess.to_dict() == CAFFE_PREPROCESS
