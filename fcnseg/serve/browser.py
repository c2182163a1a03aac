"""Drive the web page in headless Chromium (selenium + Debian's chromium and chromedriver):
used by the end-to-end test and ``tools/screenshot_serve.py``; handy to smoke-test a deployment.

    with headless_chromium() as driver:
        driver.get("http://127.0.0.1:8000/")
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["CHROMIUM_FLAGS", "find_chromium", "headless_chromium", "wait_for_state"]

#: Headless, sandbox-free (containers run as root), and no background traffic of its own.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def find_chromium() -> tuple[str, str] | None:
    """Paths of the Chromium binary and its chromedriver, or ``None`` if either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@contextlib.contextmanager
def headless_chromium(window: tuple[int, int] = (1280, 900)) -> Iterator[Any]:
    """A selenium ``webdriver.Chrome`` on the system's Chromium (never downloads a browser)."""
    found = find_chromium()
    if found is None:
        raise RuntimeError(
            "chromium and chromedriver are not installed (Debian: apt-get install chromium "
            "chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window[0]},{window[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for_state(driver: Any, states: set[str], timeout: float = 90) -> str:
    """Wait until the page's ``body[data-state]`` is one of ``states``; return it."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = driver.execute_script("return document.body.dataset.state")
        if state in states:
            return state
        time.sleep(0.1)
    raise TimeoutError(f"page state {state!r} after {timeout} s; waited for {sorted(states)}")
