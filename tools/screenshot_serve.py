"""Screenshot of the `fcnseg serve` page after segmenting an image (for the README).

    .venv/bin/python tools/screenshot_serve.py CHECKPOINT IMAGE -o docs/images/serve.png

Starts the service in-process on a free loopback port, uploads IMAGE in headless Chromium,
waits for the overlay and saves the window.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn

from fcnseg.inference import Predictor
from fcnseg.serve import create_app
from fcnseg.serve.browser import headless_chromium, wait_for_state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("image")
    parser.add_argument("-o", "--out", default="docs/images/serve.png")
    parser.add_argument("--opacity", type=int, default=55, help="overlay opacity, percent")
    parser.add_argument("--window", default="1100x640", help="browser window WxH")
    args = parser.parse_args()

    app = create_app(Predictor.from_checkpoint(args.checkpoint, device="cpu"))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    width, height = (int(v) for v in args.window.split("x"))
    with headless_chromium(window=(width, height)) as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for_state(driver, {"ready"})
        driver.find_element("id", "file").send_keys(str(Path(args.image).resolve()))
        if wait_for_state(driver, {"done", "error"}) != "done":
            raise SystemExit(driver.find_element("id", "status").text)
        driver.execute_script(
            "const s = document.getElementById('opacity');"
            "s.value = arguments[0]; s.dispatchEvent(new Event('input'));",
            args.opacity,
        )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    server.should_exit = True
    thread.join(10)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
