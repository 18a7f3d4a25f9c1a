"""The live view in a real browser: headless Chromium driven by Selenium against a real daemon."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import LiveDaemon

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))
import web_browser  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

if web_browser.missing():
    pytest.skip(f"no browser for the live-view test: {web_browser.missing()}; tools/setup.sh --test installs it",
                allow_module_level=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = web_browser.open_browser()
    try:
        yield driver
    finally:
        driver.quit()


def test_page_shows_every_camera_live(live_daemon: LiveDaemon, browser: Any) -> None:
    browser.get(f"http://127.0.0.1:{live_daemon.port}/")
    state = web_browser.wait_until_live(browser, live_daemon.cameras, timeout=60)
    assert set(state) == set(live_daemon.cameras)
    for cam in live_daemon.cameras:
        assert state[cam]["natural"] == 480  # the camera's width (the page asks for 960 at most)
        assert web_browser.picture_changes(browser, cam, within=2.0), f"{cam}: the picture did not change in 2 s"
    text = browser.find_element("css selector", f'section[data-camera="{live_daemon.cameras[0]}"]').text
    assert "streaming" in text and "p50" in text


def test_boxes_toggle_restarts_the_pictures_without_boxes(live_daemon: LiveDaemon, browser: Any) -> None:
    browser.get(f"http://127.0.0.1:{live_daemon.port}/")
    web_browser.wait_until_live(browser, live_daemon.cameras, timeout=60)
    browser.find_element("id", "boxes").click()  # without boxes: the streams restart with boxes=0
    srcs = browser.execute_script("return [...document.querySelectorAll('section img')].map(i => i.src)")
    assert srcs and all("boxes=0" in s for s in srcs)
    web_browser.wait_until_live(browser, live_daemon.cameras, timeout=30)
    for cam in live_daemon.cameras:
        assert web_browser.picture_changes(browser, cam, within=2.0)


def test_screenshot_tool_writes_the_page(live_daemon: LiveDaemon, tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "view.png"
    state = web_browser.screenshot(f"http://127.0.0.1:{live_daemon.port}/", str(out), 800, 600, settle_s=0.5)
    assert set(state) == set(live_daemon.cameras)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[:2] == (600, 800)
    assert img.std() > 10  # not a blank page
