"""Supervisor behaviour with stand-in children: crash loops exit 1, hung children are killed and
restarted, stale rings of a dead supervisor are removed, rings are unlinked on the way out."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from streamdet import supervisor as sup_mod
from streamdet.config import parse_config
from streamdet.supervisor import Child, Supervisor, cleanup_stale_segments


def crash_at_once() -> None:
    raise SystemExit(3)


def hang_forever() -> None:
    while True:
        time.sleep(1)


def beat_until_stopped(stop, heartbeat) -> None:
    while not stop.is_set():
        heartbeat.value = time.time()
        time.sleep(0.05)


@pytest.fixture
def config(tmp_path: Path, fixtures_dir: Path):
    (tmp_path / "clip.mp4").write_bytes(b"")  # never opened: the test replaces the children
    text = f"""
model: {{weights: "{fixtures_dir / 'yolov5' / 'yolov5n_random.pt'}"}}
publish: {{endpoint: "ipc://{tmp_path}/pub.sock"}}
supervisor: {{restart_limit: 2, restart_window_s: 60, hang_timeout_s: 5.0, stop_timeout_s: 2}}
cameras:
  - {{id: cam1, url: clip.mp4}}
"""
    return parse_config(text, tmp_path)


def _supervisor(config, monkeypatch, children) -> Supervisor:
    monkeypatch.setattr(sup_mod, "BACKOFF_INITIAL_S", 0.05)
    sup = Supervisor(config)

    def plan(ring_names, internal):
        sup.children.extend(children(sup))

    monkeypatch.setattr(sup, "_plan_children", plan)
    return sup


def _run_in_thread(sup: Supervisor) -> tuple[threading.Thread, list[int]]:
    result: list[int] = []
    # signal.signal only works in the main thread; the test thread stands in for it.
    t = threading.Thread(target=lambda: result.append(sup.run()), daemon=True)
    return t, result


def test_crash_loop_exits_1_and_unlinks_rings(config, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    sup = _supervisor(config, monkeypatch, lambda s: [Child("crasher", crash_at_once, (), ())])
    monkeypatch.setattr(signal, "signal", lambda *a: signal.SIG_DFL)
    assert sup.run() == 1
    assert "giving up" in caplog.text and "exited with status 3" in caplog.text
    assert sup.children[0].restart_count == 3  # restart_limit 2: the third restart gives up
    assert not list(Path("/dev/shm").glob(f"streamdet_{os.getpid()}_*"))


def test_hung_child_is_killed_and_restarted(config, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(signal, "signal", lambda *a: signal.SIG_DFL)

    def children(s: Supervisor) -> list[Child]:
        hb = s.ctx.Value("d", 0.0, lock=False)
        healthy = s.ctx.Value("d", 0.0, lock=False)
        return [Child("hanger", hang_forever, (), (), heartbeat=hb),
                Child("healthy", beat_until_stopped, (s.stop_event, healthy), (), heartbeat=healthy)]

    sup = _supervisor(config, monkeypatch, children)
    t, result = _run_in_thread(sup)
    t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (sup.children and sup.children[0].restart_count >= 1):
        time.sleep(0.1)
    sup.request_stop()
    t.join(20)
    assert result == [0]
    hanger, healthy = sup.children
    assert hanger.restart_count >= 1 and healthy.restart_count == 0
    assert "hanger" in caplog.text and "sent no heartbeat" in caplog.text


def test_cleanup_stale_segments(tmp_path: Path) -> None:
    dead_pid = 2**22 + 12345  # above the default pid_max: never a live process
    stale = tmp_path / f"streamdet_{dead_pid}_0"
    live = tmp_path / f"streamdet_{os.getpid()}_0"
    other = tmp_path / "someone_else"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert cleanup_stale_segments(tmp_path) == [stale.name]
    assert not stale.exists() and live.exists() and other.exists()


def test_decoder_with_ended_file_is_not_hung(config) -> None:
    from streamdet.pipeline.ring import FrameRing

    sup = Supervisor(config)
    names = sup._create_rings()
    try:
        ring = sup.rings["cam1"]
        child = Child("decoder-cam1", crash_at_once, (), ("cam1",))
        child.started_at = time.time() - 100  # longer ago than hang_timeout_s
        other = FrameRing.attach(names["cam1"])
        other.heartbeat()
        other.set_state("streaming")
        time.sleep(0.01)
        assert not sup._is_hung(child, time.time())
        assert sup._is_hung(child, time.time() + 10)  # no beat for 10 s while streaming: hung
        other.set_state("ended")  # a file without loop finished: it beats no more, and is fine
        assert not sup._is_hung(child, time.time() + 1000)
        other.close()
    finally:
        for ring in sup.rings.values():
            ring.close()
            ring.unlink()
