"""Headless Chromium for the live view: what the browser test and the README screenshot share.

    driver = open_browser(width=1280, height=800)       # Debian's chromium + chromium-driver
    driver.get(url); wait_until_live(driver, ["door", "lobby"])
    signature(driver, "door")                            # a hash of the picture as shown now
    driver.save_screenshot("docs/web-view.png")

Selenium drives /usr/bin/chromium through /usr/bin/chromedriver (a Service path: Selenium never
downloads a driver). Chromium runs headless with a fresh profile in a temporary directory and
without network side activity, so it works as root and offline.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")

# JavaScript: the shown picture of one camera card drawn into a canvas, reduced to a checksum
_SIGNATURE_JS = """
const img = document.querySelector('section[data-camera="' + arguments[0] + '"] img');
if (!img || !img.naturalWidth) return null;
const c = document.createElement('canvas'); c.width = 64; c.height = 36;
const g = c.getContext('2d'); g.drawImage(img, 0, 0, 64, 36);
const d = g.getImageData(0, 0, 64, 36).data; let h = 0;
for (let i = 0; i < d.length; i++) { h = (h * 31 + d[i]) >>> 0; }
return h;
"""

_STATE_JS = """
const out = {};
for (const el of document.querySelectorAll('section[data-camera]')) {
  const img = el.querySelector('img');
  const waiting = el.querySelector('.nopic');
  out[el.dataset.camera] = {natural: img ? img.naturalWidth : 0, fps: el.querySelector('.fps').textContent,
                            waiting: !!waiting && getComputedStyle(waiting).display !== 'none'};
}
return out;
"""


def missing() -> str | None:
    """Why a browser cannot be opened here (None: it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install selenium)"
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if shutil.which(path) is None:
            return f"{path} is missing (apt-get install {pkg})"
    return None


def open_browser(width: int = 1280, height: int = 800) -> Any:
    """A headless Chromium WebDriver; quit it (``driver.quit()``), which also removes its profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="streamdet-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    # the page's own size, whatever the window's decorations take (screenshots are exactly this)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    quit_driver = driver.quit

    def quit_and_clean() -> None:
        try:
            quit_driver()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver


def page_state(driver: Any) -> dict[str, dict[str, Any]]:
    """camera -> {natural: the picture's naturalWidth, fps: the fps text shown}."""
    return dict(driver.execute_script(_STATE_JS))


def _fps(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def wait_until_live(driver: Any, cameras: Sequence[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    """Wait until every camera's picture has loaded (naturalWidth > 0), its "waiting" note is
    gone and its fps shows a number above 0; returns the page state. TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    state: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        state = page_state(driver)
        if all(cam in state and state[cam]["natural"] > 0 and _fps(state[cam]["fps"]) > 0
               and not state[cam].get("waiting") for cam in cameras):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"cameras not live after {timeout:.0f} s: {state}")


def signature(driver: Any, camera: str) -> int | None:
    """A checksum of the camera's picture as the page shows it now (None: no picture)."""
    value = driver.execute_script(_SIGNATURE_JS, camera)
    return None if value is None else int(value)


def picture_changes(driver: Any, camera: str, within: float = 2.0) -> bool:
    """Whether the camera's picture on the page changes within ``within`` seconds."""
    first = signature(driver, camera)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = signature(driver, camera)
        if now is not None and now != first:
            return True
    return False


def screenshot(url: str, out: str, width: int = 1280, height: int = 800, timeout: float = 120.0,
               settle_s: float = 3.0) -> dict[str, dict[str, Any]]:
    """Open the live view at ``url``, wait until every camera on it is live, and save a PNG."""
    driver = open_browser(width, height)
    try:
        driver.get(url)
        deadline = time.monotonic() + timeout
        cameras: list[str] = []
        while not cameras and time.monotonic() < deadline:
            cameras = list(page_state(driver))
            time.sleep(0.2)
        state = wait_until_live(driver, cameras, max(1.0, deadline - time.monotonic()))
        time.sleep(settle_s)  # a few pictures later: boxes drawn, numbers filled in
        driver.save_screenshot(out)
        return state
    finally:
        driver.quit()


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Screenshot of a running daemon's live view (the README's picture).")
    ap.add_argument("url", help="the live view, e.g. http://127.0.0.1:8080/")
    ap.add_argument("out", help="PNG file to write, e.g. docs/web-view.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    a = ap.parse_args()
    why = missing()
    if why:
        raise SystemExit(f"web_browser: {why}")
    print(screenshot(a.url, a.out, a.width, a.height))
