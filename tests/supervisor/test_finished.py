"""Cameras that finished for good, with stand-in children: the decoder left without a camera is
not restarted, the camera's ring is released, its final state stays in the worker's live settings
(its stats) and in the metrics, and a reload that changes the camera starts it again."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

from streamdet.supervisor.runtime import ring_name, segments_of
from tests.helpers.rtsp import free_port
from tests.supervisor import fakes
from tests.supervisor.helpers import Running, fake_supervisor, write_config


def cameras(bad_url: str) -> str:
    return f"  - {{id: cam1, url: a.mp4}}\n  - {{id: cam2, url: {bad_url}}}"


def seen(sup: Any) -> dict:
    """What the stand-in worker last read from its live settings (cameras, finished, generation)."""
    return json.loads((sup.workdir / "worker-cpu.live.seen.json").read_text())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_a_camera_failed_for_good_releases_its_decoder_and_ring_and_keeps_its_state(
        tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    (tmp_path / "bad.mp4").write_bytes(b"")
    port = free_port()
    path = write_config(tmp_path, fixtures_dir, cameras=cameras("bad.mp4"), extra=f"metrics: {{port: {port}}}")
    sup = fake_supervisor(path, monkeypatch, decoder=fakes.finishing_decoder)
    with Running(sup) as run:
        # released: its final status recorded, then (by the supervisor loop, a moment later) unlinked
        run.wait(lambda: "cam2" in sup.finished.released and ring_name(os.getpid(), "cam2") not in
                 segments_of(os.getpid()), 30, "cam2's ring released")
        decoder = sup.children["decoder-cam2"]
        assert decoder.finished and decoder.process is None and decoder.restart_count == 0
        assert ring_name(os.getpid(), "cam1") in segments_of(os.getpid())
        final = sup.finished.statuses()["cam2"]
        assert final.state == "failed" and final.last_error == fakes.BAD_ERROR
        # the worker was told: cam2 detached, its final state in its live settings (for its stats)
        run.wait(lambda: "cam2" in seen(sup)["finished"], 10, "the worker's live settings")
        live = seen(sup)
        assert set(live["cameras"]) == {"cam1"}
        assert live["finished"]["cam2"]["state"] == "failed"
        assert live["finished"]["cam2"]["last_error"] == fakes.BAD_ERROR
        text = scrape(port)
        assert 'streamdet_camera_state{camera="cam2",state="failed"} 1.0' in text
        assert 'streamdet_camera_up{camera="cam2"} 0.0' in text
        assert 'streamdet_camera_state{camera="cam1",state="streaming"} 1.0' in text
        assert run.pid("decoder-cam1") is not None and sup.healthy()
        assert "decoder-cam2 finished" in caplog.text and "camera cam2 failed: " + fakes.BAD_ERROR in caplog.text

        # a reload that leaves it unchanged leaves it finished; one that changes it starts it again
        sup.request_reload()
        run.wait(lambda: "reloaded" in caplog.text, 10, "the first reload")
        assert sup.children["decoder-cam2"].finished and "cam2" not in sup.rings
        path.write_text(path.read_text().replace("url: bad.mp4", "url: b.mp4"))
        sup.request_reload()
        run.wait(lambda: "cam2" in sup.rings and sup.rings["cam2"].status().state == "streaming", 30,
                 "cam2 streaming again")
        assert not sup.children["decoder-cam2"].finished and "cam2" not in sup.finished.released
        assert not sup.finished.is_finished("cam2")
        run.wait(lambda: set(seen(sup)["cameras"]) == {"cam1", "cam2"} and not seen(sup)["finished"], 10,
                 "the worker attaching cam2 again")
    assert run.result == [0]
    assert segments_of(os.getpid()) == []


def test_a_group_decoder_keeps_running_for_its_other_camera(tmp_path: Path, fixtures_dir: Path,
                                                            monkeypatch) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"")
    path = write_config(tmp_path, fixtures_dir, cameras=cameras("bad.mp4"),
                        extra="decode: {cameras_per_process: 2}")
    sup = fake_supervisor(path, monkeypatch, decoder=fakes.finishing_decoder)
    with Running(sup) as run:
        run.wait(lambda: "cam2" in sup.finished.released, 30, "cam2's ring released")
        (name,) = [c.name for c in sup.children.values() if c.kind == "decoder"]
        pid = run.pid(name)
        assert pid is not None and not sup.children[name].finished
        assert sup.rings["cam1"].status().state == "streaming"
        # a restart of the group's process leaves the finished camera out
        os.kill(pid, 9)
        run.wait(lambda: run.pid(name) not in (None, pid), 30, "the group decoder restarted")
        run.wait(lambda: sup.rings["cam1"].status().heartbeat > sup.children[name].started_at, 30,
                 "cam1 served by the new process")
        assert "cam2" not in sup.rings and run.pid(name) is not None
    assert run.result == [0]
