"""A real daemon with the live view on, shared by the end-to-end and browser tests of this package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "configs" / "demo" / "shapes_yolov5n.pt"
CAMERAS = ("left", "right")


@dataclass
class LiveDaemon:
    daemon: Daemon
    port: int
    cameras: tuple[str, ...]
    clips: dict[str, Path]

    def config(self, web: str, cameras: tuple[str, ...] | None = None) -> str:
        return daemon_config(self.clips, cameras or self.cameras, web)


def daemon_config(clips: dict[str, Path], cameras: tuple[str, ...], web: str) -> str:
    cams = "".join(f'  - {{id: {cam}, url: "{clips[cam]}", loop: true}}\n' for cam in cameras)
    return f"""
model: {{weights: "{WEIGHTS}", backend: torch, img_size: 320, conf_thres: 0.3}}
devices: [cpu]
publish: {{endpoint: "{{endpoint}}", stats_interval_s: 1.0}}
batching: {{max_batch: 2, max_wait_ms: 10}}
web: {web}
cameras:
{cams}"""


def web_port(daemon: Daemon, since: int = 0, timeout: float = 30.0) -> int:
    """The port of the live view from the daemon's log line ``live view on http://host:port/``."""
    line = daemon.wait_log(r"live view on http://", since, timeout)
    assert line is not None, daemon.tail()
    match = re.search(r"live view on http://[^ ]+:(\d+)/", line)
    assert match is not None, line
    return int(match.group(1))


@pytest.fixture(scope="session")
def live_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveDaemon]:
    from streamdet.datasets.shapes import write_clip

    d = tmp_path_factory.mktemp("web_e2e")
    clips = {cam: write_clip(d / f"{cam}.mp4", width=480, height=270, frames=50, seed=seed)
             for cam, seed in zip(CAMERAS, (9101, 9102), strict=True)}
    daemon = Daemon(d, daemon_config(clips, CAMERAS, "{port: 0, max_fps: 5}")).start()
    try:
        daemon.wait_ready()
        yield LiveDaemon(daemon, web_port(daemon), CAMERAS, clips)
    finally:
        daemon.stop()
