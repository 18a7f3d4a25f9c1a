"""The daemon subprocess wrapper: always stopped (SIGTERM, then SIGKILL), log tail on failure."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import yaml

from streamdet.bench.daemon import BenchError, DaemonProcess, run_trial
from streamdet.bench.options import DEMO_WEIGHTS
from streamdet.bench.workload import DaemonSettings, cameras_for, clip_path, ensure_clips, write_daemon_config
from streamdet.config import load_config

STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('stubborn up', flush=True); time.sleep(60)")


def wait_for_line(path: Path, text: str, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_a_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "d.log"
    d = DaemonProcess(tmp_path / "unused.yaml", log, stop_timeout_s=0.5, command=[sys.executable, "-c", STUBBORN])
    with d:
        wait_for_line(log, "stubborn up")
        d.check_alive()  # still running: no error
    assert d.proc is not None and d.proc.returncode == -9
    assert "stubborn up" in d.log_tail()


def test_a_process_that_exits_raises_with_its_log_tail(tmp_path: Path) -> None:
    script = "import sys; [print('line', i) for i in range(100)]; sys.exit(3)"
    d = DaemonProcess(tmp_path / "unused.yaml", tmp_path / "d.log", command=[sys.executable, "-c", script])
    with d:
        d.proc.wait(10)
        with pytest.raises(BenchError) as err:
            d.check_alive()
    text = str(err.value)
    assert "status 3" in text and "line 99" in text and "line 10\n" not in text  # only the tail


def test_stop_on_interrupt_in_the_body(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "unused.yaml", tmp_path / "d.log", stop_timeout_s=0.5,
                      command=[sys.executable, "-c", STUBBORN])
    with pytest.raises(KeyboardInterrupt), d:
        raise KeyboardInterrupt
    assert d.proc.poll() is not None


def test_generated_config_is_valid(tmp_path: Path, fixtures_dir: Path) -> None:
    clip = clip_path(tmp_path, 320, 240, 20, 1)
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")  # the config only checks that the file exists
    weights = Path(__file__).resolve().parents[2] / "configs" / "demo" / "shapes_yolov5n.pt"
    settings = DaemonSettings(weights=weights, img_size=256, frame_size=(320, 240), stats_interval_s=0.5)
    cams = cameras_for([clip], 3, realtime=True, loop=True, rate=5)
    path = write_daemon_config(tmp_path / "cfg.yaml", settings, "tcp://127.0.0.1:5999", cams)
    raw = yaml.safe_load(path.read_text())
    assert "backend" not in raw["model"]  # the daemon's own default unless asked for
    config = load_config(path)
    assert [c.id for c in config.cameras] == ["cam0", "cam1", "cam2"]
    assert all(c.max_fps == 5 and c.realtime and c.loop for c in config.cameras)
    assert config.publish.stats_interval_s == 0.5 and config.publish.endpoint == "tcp://127.0.0.1:5999"
    unpaced = cameras_for([clip], 2, realtime=False, loop=False, rate=25)
    assert all(c.max_fps is None for c in unpaced)
    assert "tracking" not in raw and not config.tracking.enabled
    assert all("detect_every" not in c for c in raw["cameras"]) and all(c.detect_every == 1 for c in config.cameras)


@pytest.mark.parametrize("every", [1, 3])
def test_generated_config_with_tracking(tmp_path: Path, every: int) -> None:
    clip = clip_path(tmp_path, 320, 240, 20, 1)
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"")
    settings = DaemonSettings(weights=DEMO_WEIGHTS, img_size=256, frame_size=(320, 240), detect_every=every)
    cams = cameras_for([clip], 3, realtime=True, loop=True, rate=25)
    path = write_daemon_config(tmp_path / "cfg.yaml", settings, "tcp://127.0.0.1:5999", cams)
    raw = yaml.safe_load(path.read_text())
    assert raw["tracking"] == {"enabled": True}
    assert [c["detect_every"] for c in raw["cameras"]] == [every] * 3
    config = load_config(path)  # valid: detect_every > 1 needs tracking, which is on
    assert config.tracking.enabled
    assert all(c.tracking and c.detect_every == every for c in config.cameras)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_real_trial_at_5_fps_counts_no_max_fps_skip_as_a_drop(tmp_path: Path) -> None:
    # one paced looping 25 fps camera at max_fps 5 (20 frames: 4 kept per 0.8 s pass, i.e. 5 fps)
    clips = ensure_clips(tmp_path, 1, 320, 240, 20)
    settings = DaemonSettings(weights=DEMO_WEIGHTS, img_size=256, backend="torch", stats_interval_s=0.5,
                              frame_size=(320, 240))
    r = run_trial(settings, clips, 20, 1, 5.0, tmp_path, seconds=3.0, warmup_s=1.0, latency_ms=1000.0)
    assert r.drop_reasons["stats_max_fps"] > 0  # the decoder did skip frames on purpose
    assert 14 <= r.expected <= 16, r.to_dict()  # due at 5 fps in 3 s, not the source's 75
    assert r.published == r.expected and r.dropped == 0, r.to_dict()
    assert r.drop_reasons["missing_frames"] == 0
