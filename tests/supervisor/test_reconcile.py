"""Reload as a diff, with stand-in children: what is restarted, what is only told, what is untouched."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from streamdet.supervisor.runtime import segments_of
from tests.supervisor.helpers import Running, fake_supervisor, write_config

CAMS = "  - {id: keep, url: a.mp4}\n  - {id: gone, url: b.mp4}\n  - {id: moved, url: c.mp4}"


def _seen(sup) -> dict:
    """What the stand-in worker last read from its live settings."""
    path = sup.workdir / "worker-cpu.live.seen.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _pids(run: Running) -> dict[str, int | None]:
    return {name: run.pid(name) for name in list(run.sup.children)}


def test_reload_applies_a_diff(tmp_path: Path, fixtures_dir: Path, monkeypatch, caplog) -> None:
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, fixtures_dir, cameras=CAMS)
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready and _seen(sup).get("cameras"), 30, "ready")
        before = _pids(run)
        assert set(_seen(sup)["cameras"]) == {"keep", "gone", "moved"}

        # one camera added, one removed, one re-pointed, a threshold and a max_fps changed
        write_config(tmp_path, fixtures_dir, model_extra=", conf_thres: 0.6", cameras=(
            "  - {id: keep, url: a.mp4, max_fps: 2}\n  - {id: moved, url: d.mp4}\n  - {id: added, url: b.mp4}"))
        sup.request_reload()
        run.wait(lambda: set(_seen(sup).get("cameras", ())) == {"keep", "moved", "added"}, 20, "worker told")
        run.wait(lambda: run.pid("decoder-moved") not in (None, before["decoder-moved"])
                 and run.pid("decoder-added") is not None and "decoder-gone" not in sup.children, 20, "decoders")
        after = _pids(run)
        assert after["decoder-keep"] == before["decoder-keep"]  # untouched
        assert after["worker-cpu"] == before["worker-cpu"]  # told, not restarted
        assert _seen(sup)["nms"]["conf_thres"] == 0.6
        assert _seen(sup)["pid"] == before["worker-cpu"]
        run.wait(lambda: sup.rings["keep"].status().last_error == "max_fps=2", 5, "live max_fps")
        assert set(sup.rings) == {"keep", "moved", "added"}
        names = segments_of(os.getpid())
        assert names == sorted(f"streamdet_{os.getpid()}_{c}" for c in ("added", "keep", "moved"))
        assert "reloaded" in caplog.text and "removed: gone" in caplog.text and "restarted: moved" in caplog.text

        # a model change restarts the worker only
        write_config(tmp_path, fixtures_dir, model_extra=", conf_thres: 0.6, img_size: 320", cameras=(
            "  - {id: keep, url: a.mp4, max_fps: 2}\n  - {id: moved, url: d.mp4}\n  - {id: added, url: b.mp4}"))
        sup.request_reload()
        run.wait(lambda: run.pid("worker-cpu") not in (None, after["worker-cpu"]), 20, "worker restarted")
        for name in ("decoder-keep", "decoder-moved", "decoder-added"):
            assert run.pid(name) == after[name]
        assert sup.children["worker-cpu"].restart_count == 0  # a planned restart is not a failure
    assert run.result == [0]
    assert segments_of(os.getpid()) == []


def test_invalid_and_unchanged_reloads_touch_nothing(tmp_path: Path, fixtures_dir: Path, monkeypatch,
                                                     caplog) -> None:
    caplog.set_level(logging.INFO)
    path = write_config(tmp_path, fixtures_dir, cameras=CAMS)
    good = path.read_text()
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready and _seen(sup).get("cameras"), 30, "ready")
        before, generation = _pids(run), _seen(sup)["generation"]
        path.write_text(good.replace("id: gone", 'id: "bad id!"'))
        sup.request_reload()
        run.wait(lambda: "reload rejected" in caplog.text, 10, "rejection")
        assert "cameras[1].id" in caplog.text and "line" in caplog.text  # the usual located error
        path.write_text(good)
        sup.request_reload()
        run.wait(lambda: "reloaded" in caplog.text, 10, "reload")
        assert "restarted 0 unchanged 3" in caplog.text
        assert _pids(run) == before
        assert _seen(sup)["generation"] == generation  # the worker was not even told
    assert run.result == [0]


def test_a_ring_change_restarts_everything_with_new_rings(tmp_path: Path, fixtures_dir: Path, monkeypatch) -> None:
    path = write_config(tmp_path, fixtures_dir, cameras=CAMS)
    sup = fake_supervisor(path, monkeypatch)
    with Running(sup) as run:
        run.wait(lambda: sup._ready, 30, "ready")
        before = _pids(run)
        assert sup.rings["keep"].slots == 3
        write_config(tmp_path, fixtures_dir, cameras=CAMS, extra="ring: {slots: 5}")
        sup.request_reload()
        run.wait(lambda: all(run.pid(n) not in (None, before[n]) for n in before), 30, "every child restarted")
        assert {cam: ring.slots for cam, ring in sup.rings.items()} == {"keep": 5, "gone": 5, "moved": 5}
        assert len(segments_of(os.getpid())) == 3
    assert run.result == [0]
    assert segments_of(os.getpid()) == []
