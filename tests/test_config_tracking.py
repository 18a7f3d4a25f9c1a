"""The ``tracking:`` section and the cameras' ``tracking``/``detect_every``: defaults, checks, the worker plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdet.config import parse_config
from streamdet.errors import ConfigError
from streamdet.pipeline.tracking.bytetrack import TrackerSettings
from streamdet.supervisor.plan import make_plan

BASE = "model: {weights: model.pt}\ndevices: [cpu]\n"
CAMS = "cameras: [{id: a, url: a.mp4, detect_every: 3}, {id: b, url: a.mp4, tracking: false}, {id: c, url: a.mp4}]\n"


@pytest.fixture(autouse=True)
def _files(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "a.mp4").write_bytes(b"video")


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, tmp_path)
    return str(info.value)


def test_off_by_default(tmp_path: Path) -> None:
    config = parse_config(BASE + "cameras: [{id: a, url: a.mp4}]\n", tmp_path)
    assert config.tracking.enabled is False
    assert config.cameras[0].tracking is True and config.cameras[0].detect_every == 1
    assert TrackerSettings(**config.tracking.tracker_settings())  # the worker's settings are valid


def test_detect_every_needs_tracking(tmp_path: Path) -> None:
    msg = error(tmp_path, BASE + "cameras: [{id: a, url: a.mp4, detect_every: 2}]\n")
    assert "cameras[0].detect_every" in msg and "needs tracking" in msg and "tracking.enabled is false" in msg
    msg = error(tmp_path, BASE + "tracking: {enabled: true}\ncameras: [{id: a, url: a.mp4, detect_every: 2, "
                "tracking: false}]\n")
    assert "this camera has tracking: false" in msg


@pytest.mark.parametrize("section, key", [
    ("{enabled: true, low_thresh: 0.7}", "tracking.low_thresh"),
    ("{enabled: true, match_iou: 0}", "tracking.match_iou"),
    ("{enabled: true, lost_frames: -1}", "tracking.lost_frames"),
    ("{enabled: true, min_hits: 0}", "tracking.min_hits"),
    ("{enabled: true, duplicate_iou: 0}", "tracking.duplicate_iou"),
    ("{enabled: true, frames: 3}", "tracking.frames"),
])
def test_bad_tracking_settings_name_the_key(tmp_path: Path, section: str, key: str) -> None:
    assert key in error(tmp_path, BASE + f"tracking: {section}\ncameras: [{{id: a, url: a.mp4}}]\n")


def test_bad_detect_every(tmp_path: Path) -> None:
    assert "cameras[0].detect_every" in error(tmp_path, BASE + "tracking: {enabled: true}\n"
                                              "cameras: [{id: a, url: a.mp4, detect_every: 0}]\n")


def test_the_worker_plan_carries_the_live_tracking_settings(tmp_path: Path) -> None:
    config = parse_config(BASE + "tracking: {enabled: true, lost_frames: 12}\n" + CAMS, tmp_path)
    (worker,) = make_plan(config, 2).workers
    live = worker.tracking()
    assert live is not None and live["cameras"] == {"a": 3, "c": 1}  # b opted out
    assert TrackerSettings(**live["settings"]).lost_frames == 12  # type: ignore[arg-type]
    assert TrackerSettings(**live["settings"]).duplicate_iou == 0.5  # type: ignore[arg-type]
    off = parse_config(BASE + "cameras: [{id: a, url: a.mp4}]\n", tmp_path)
    assert make_plan(off, 2).workers[0].tracking() is None
    # tracking is applied live: changing it does not restart the worker
    changed = parse_config(BASE + "tracking: {enabled: true, lost_frames: 40}\n" + CAMS, tmp_path)
    (other,) = make_plan(changed, 2).workers
    assert other.restart_key() == worker.restart_key() and other.tracking() != worker.tracking()
