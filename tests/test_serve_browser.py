"""`fcnseg serve` end to end in headless Chromium: upload an image on the page, wait for the
overlay, and check that the mask the page shows (its canvas pixels and its download) equals the
API's answer, the background left transparent unless "tint background" is on. The server
requires a token (``--token-file``): the page asks for it once and keeps it for the session.
Needs Debian's chromium + chromium-driver (``.ci/run`` installs them)."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from fcnseg.serve.browser import find_chromium, headless_chromium, wait_for_state

PALETTE = [[0, 0, 0], [220, 20, 60], [30, 144, 255]]
CLASSES = ["background", "road", "car"]
UNTINTED = 0  # "background": the photo shows through unless "tint background" is on
TOKEN = "page-token-981"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

if find_chromium() is None:
    if os.environ.get("CI"):
        pytest.fail("CI must install chromium and chromium-driver (see .ci/run)")
    pytest.skip("chromium / chromedriver not installed", allow_module_level=True)

pytest.importorskip("selenium.webdriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, make_fcn_checkpoint) -> Iterator[str]:
    """`fcnseg serve` on a saved FCN-8s/ResNet-18 checkpoint, in a subprocess on loopback,
    requiring a token."""
    tmp = tmp_path_factory.mktemp("serve")
    ckpt = make_fcn_checkpoint(tmp / "m.safetensors", classes=CLASSES, palette=PALETTE, std=0.2)
    (tmp / "token").write_text(TOKEN + "\n")
    port = _free_port()
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcnseg", "serve", str(ckpt), "--port", str(port),
         "--device", "cpu", "--token-file", str(tmp / "token")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "ready", timeout=2).status_code == 200:  # model loaded
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(tmp / 'serve.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


# Bytes → base64 in the page, in chunks (String.fromCharCode takes a bounded argument list).
B64 = """
const b64 = (bytes) => {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
};
"""

CANVAS_PIXELS = (
    B64
    + """
const cv = document.getElementById(arguments[0]);
const data = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
return [cv.width, cv.height, b64(data)];
"""
)

FETCH_DOWNLOAD = (
    B64
    + """
const done = arguments[arguments.length - 1];
const a = document.getElementById('download');
fetch(a.href).then(r => r.arrayBuffer()).then(buf => {
  done([a.getAttribute('download'), b64(new Uint8Array(buf))]);
});
"""
)

DROP_CANVAS_IMAGE = """
const done = arguments[arguments.length - 1];
document.getElementById('image-canvas').toBlob(blob => {
  const dt = new DataTransfer();
  dt.items.add(new File([blob], 'dropped.png', {type: 'image/png'}));
  const drop = new DragEvent('drop', {dataTransfer: dt, bubbles: true});
  document.getElementById('drop').dispatchEvent(drop);
  done(true);
}, 'image/png');
"""


def _open(driver: Any, url: str, *, expect_prompt: bool) -> None:
    """Load the page; answer its token prompt (the first load of a session asks)."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    if expect_prompt:
        WebDriverWait(driver, 20).until(expected_conditions.alert_is_present())
        alert = driver.switch_to.alert
        assert "token" in alert.text
        alert.send_keys(TOKEN)
        alert.accept()
    wait_for_state(driver, {"ready"})


def _canvas_rgba(driver: Any, canvas: str) -> np.ndarray:
    w, h, data = driver.execute_script(CANVAS_PIXELS, canvas)
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(h, w, 4)


def _assert_mask_layer(shown: np.ndarray, want: np.ndarray, *, tint_background: bool) -> None:
    """Tinted classes' pixels are their palette colour, opaque; the background's are
    transparent (alpha 0), or with ``tint_background`` its colour too."""
    tinted = np.ones_like(want, bool) if tint_background else want != UNTINTED
    assert shown.shape[:2] == want.shape
    np.testing.assert_array_equal(shown[..., 3], np.where(tinted, 255, 0))
    np.testing.assert_array_equal(shown[..., :3][tinted], np.array(PALETTE, np.uint8)[want[tinted]])


def test_page_shows_the_api_mask(server: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (75, 101, 3), dtype=np.uint8)
    image[20:50, 30:80] = (200, 40, 40)
    path = tmp_path / "street.png"
    Image.fromarray(image).save(path)
    files = {"image": ("street.png", path.read_bytes(), "image/png")}
    assert httpx.post(server + "predict", files=files).status_code == 401  # no token, no answer
    api = httpx.post(server + "predict", files=files, headers=AUTH)
    assert api.status_code == 200
    want = np.array(Image.open(io.BytesIO(api.content)))
    present = sorted(np.unique(want).tolist())
    assert UNTINTED in present and len(present) >= 2, "the model should predict background and more"
    assert httpx.get(server + "classes", headers=AUTH).json()["untinted"] == [UNTINTED]

    browser.get(server + "health")  # the origin, without the page's script
    browser.execute_script("sessionStorage.clear()")
    _open(browser, server, expect_prompt=True)
    assert "3 classes" in browser.find_element(By.ID, "model").text
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert wait_for_state(browser, {"done", "error"}) == "done", browser.find_element(
        By.ID, "status"
    ).text

    # The overlay's mask layer shows exactly the API's classes, in the palette's colours, and
    # leaves the background transparent: the photo shows through unchanged.
    tint = browser.find_element(By.ID, "tint-background")
    assert not tint.is_selected()
    _assert_mask_layer(_canvas_rgba(browser, "mask-canvas"), want, tint_background=False)
    np.testing.assert_array_equal(_canvas_rgba(browser, "image-canvas")[..., :3], image)
    boxes = browser.execute_script(
        "return ['image-canvas', 'mask-canvas'].map(id => {"
        "  const r = document.getElementById(id).getBoundingClientRect();"
        "  return [r.left, r.top, r.width, r.height]; })"
    )
    assert boxes[0] == pytest.approx(boxes[1], abs=0.5), "mask layer must cover the image exactly"
    assert boxes[0][2] > 0 and boxes[0][3] / boxes[0][2] == pytest.approx(75 / 101, rel=0.02)

    # The legend lists the classes present, the background without a coloured swatch; the
    # download is the API's label PNG.
    items = browser.find_elements(By.CSS_SELECTOR, "#legend li")
    assert sorted(int(li.get_attribute("data-index")) for li in items) == present
    assert {li.text.split("\n")[0] for li in items} <= set(CLASSES)
    for li in items:
        plain = int(li.get_attribute("data-index")) == UNTINTED
        assert (li.get_attribute("class") == "untinted") == plain
        assert ("untinted" in li.text) == plain
    name, data = browser.execute_async_script(FETCH_DOWNLOAD)
    assert name == "street_mask.png"
    downloaded = Image.open(io.BytesIO(base64.b64decode(data)))
    assert downloaded.mode == "P"
    np.testing.assert_array_equal(np.array(downloaded), want)
    assert "transparency" not in downloaded.info

    # "Tint background" colours the background too, and lists it with its swatch.
    tint.click()
    assert wait_for_state(browser, {"done", "error"}) == "done"
    _assert_mask_layer(_canvas_rgba(browser, "mask-canvas"), want, tint_background=True)
    assert not browser.find_elements(By.CSS_SELECTOR, "#legend li.untinted")
    tint.click()
    assert wait_for_state(browser, {"done", "error"}) == "done"
    _assert_mask_layer(_canvas_rgba(browser, "mask-canvas"), want, tint_background=False)

    # The opacity slider drives the mask layer.
    slider = browser.find_element(By.ID, "opacity")
    browser.execute_script(
        "arguments[0].value = 25; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    mask_canvas = browser.find_element(By.ID, "mask-canvas")
    assert mask_canvas.value_of_css_property("opacity") == "0.25"

    # Dropping an image (the page's own canvas as PNG) gives the same mask again.
    browser.execute_script("document.body.dataset.state = 'ready'")
    browser.execute_async_script(DROP_CANVAS_IMAGE)
    assert wait_for_state(browser, {"done", "error"}) == "done"
    _assert_mask_layer(_canvas_rgba(browser, "mask-canvas"), want, tint_background=False)
    assert "dropped.png" in browser.find_element(By.ID, "status").text


def test_page_reports_bad_upload(server: str, browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    browser.get(server + "health")  # the origin, without the page's script
    browser.execute_script("sessionStorage.setItem('fcnseg-token', arguments[0])", TOKEN)
    _open(browser, server, expect_prompt=False)  # the session's token: no prompt
    browser.find_element(By.ID, "file").send_keys(str(bad))
    assert wait_for_state(browser, {"done", "error"}) == "error"
    text = browser.find_element(By.ID, "status").text
    assert text.startswith("400") and "broken.png" in text
    assert httpx.get(server + "health").json()["status"] == "ok"
