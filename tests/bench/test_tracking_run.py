"""`streamdet bench --tracking`: the tracked runs are wired through (fake systems), and the worker's
"track" stage the per-stage table reads (a fake clock, so no timing is asserted)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from streamdet.bench import daemon, runner
from streamdet.bench.accounting import LatencySummary, TrialResult
from streamdet.bench.options import BenchSettings
from streamdet.pipeline.worker import loop as loop_module
from streamdet.pipeline.worker.loop import WorkerLoop
from tests.pipeline.worker.test_loop import FakePublisher, FakeRing, _spec, fake_stages
from tests.pipeline.worker.test_tracks import tracking

HELD = {None: 2, 1: 2, 3: 5}  # cameras each fake daemon holds at any rate, by detect_every


def fake_trial(settings: Any, clips: Any, frames: int, n: int, rate: float, workdir: Path, **kw: Any) -> TrialResult:
    ok = n <= HELD[settings.detect_every]
    return TrialResult(n=n, rate=rate, window_s=1.0, expected=10, published=10 if ok else 5,
                       latency=LatencySummary.from_ms([20.0]))


def test_tracked_runs_use_their_detect_every(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    unpaced: list[int | None] = []

    def fake_unpaced(settings: Any, clips: Any, frames: int, workdir: Path) -> dict[str, Any]:
        unpaced.append(settings.detect_every)
        return {"fps": 40.0 * (settings.detect_every or 1), "frames_lost": 0, "frames_published": 8,
                "tracked_only": 0}

    monkeypatch.setattr(runner, "ensure_clips", lambda *a, **k: [tmp_path / "a.mp4"])
    monkeypatch.setattr(daemon, "run_unpaced", fake_unpaced)
    monkeypatch.setattr(daemon, "run_trial", fake_trial)
    settings = BenchSettings(workdir=tmp_path, rates=(5.0, 25.0), tracking=(1, 3), max_cameras=8,
                             skip=frozenset({"naive"}))
    result = runner.run_bench(settings, log=lambda line: None)
    assert unpaced == [None, 1, 3]
    assert set(result["tracking"]) == {"1", "3"} and result["tracking"]["3"]["unpaced"]["fps"] == 120.0
    for key in ("5", "25"):
        assert result["streamdet"]["capacity"][key]["capacity"] == 2
        assert result["tracking"]["1"]["capacity"][key]["capacity"] == 2
        assert result["tracking"]["3"]["capacity"][key]["capacity"] == 5
        assert result["ratios"][f"tracking_de3_vs_de1_capacity_{key}fps"] == pytest.approx(2.5)


def test_without_tracking_the_result_has_no_tracking_part(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runner, "ensure_clips", lambda *a, **k: [tmp_path / "a.mp4"])
    monkeypatch.setattr(daemon, "run_trial", fake_trial)
    result = runner.run_bench(BenchSettings(workdir=tmp_path, rates=(25.0,), max_cameras=4,
                                            skip=frozenset({"naive", "unpaced"})), log=lambda line: None)
    assert "tracking" not in result and result["streamdet"]["capacity"]["25"]["capacity"] == 2


class SteppedClock:
    """``time`` for the worker loop whose ``perf_counter`` only moves when the tracker steps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def perf_counter(self) -> float:
        return self.now


def test_the_worker_times_the_tracker_apart_from_publish(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = SteppedClock()
    monkeypatch.setattr(loop_module, "time", clock)
    rings = {"a": FakeRing("a"), "b": FakeRing("b")}
    pub = FakePublisher()
    loop = WorkerLoop(_spec(), rings, fake_stages(), pub)
    loop.tracks.configure(tracking(a=3))  # b is not tracked
    step = loop.tracks.step

    def slow_step(*args: Any) -> Any:
        out = step(*args)
        clock.now += 0.004 if out is not None else 1.0  # an untracked camera's call is not the tracker's
        return out

    monkeypatch.setattr(loop.tracks, "step", slow_step)
    for _ in range(6):
        rings["a"].push()
        rings["b"].push()
        loop.process(loop.gatherer.gather())
    loop.publish_stats()
    worker = pub.sent[-1]["worker"]
    assert worker["tracked_frames"] == 6  # camera a's frames, inferred or not; none of b's
    assert worker["track_ms_per_frame"] == pytest.approx(4.0)
    assert worker["stage_ms"]["track"] == pytest.approx(6 * 4.0 / worker["batches"])
    assert worker["stage_ms"]["publish"] == pytest.approx(6 * 1000.0 / worker["batches"])  # b's calls, not a's
    loop.tracks.configure(None)  # tracking off: no tracker figure
    rings["a"].push()
    loop.process(loop.gatherer.gather())
    loop.publish_stats()
    worker = pub.sent[-1]["worker"]
    assert worker["batches"] == 1 and worker["tracked_frames"] == 0 and worker["track_ms_per_frame"] is None
