"""tools/gpu_verify_search.py and the e2e stage around it: which daemon run comes next (grow, bisect,
compare, mixed) as a pure function of the runs so far, what a window of messages says, the
daemon's configuration per run, and the stage's loop (resumed from an earlier call) with the
daemon replaced by a model of a GPU that keeps up with a known number of cameras."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(TOOLS))

import gpu_verify_common  # noqa: E402
import gpu_verify_e2e  # noqa: E402
import gpu_verify_media  # noqa: E402
from gpu_verify_search import (  # noqa: E402
    COMPARE,
    GROW,
    MIXED,
    Ladder,
    Limits,
    Step,
    bounds,
    next_grow,
    plan_next,
    verdict,
)

LADDER = Ladder(start=160, step=64, max_cameras=320, resolution=16)


def measured(step: Step, capacity: int, run_s: float = 50.0) -> dict[str, Any]:
    """A run record of a GPU that keeps up with ``capacity`` cameras (latency explodes beyond)."""
    ok = step.cameras <= capacity
    return {"phase": step.phase, "cameras": step.cameras, "cpu_decoded": step.cpu_decoded,
            "preprocess": step.preprocess, "cameras_publishing": step.cameras,
            "latency_ms": {"p50": 40.0, "p99": 120.0 if ok else 900.0}, "drop_fraction": 0.0 if ok else 0.2,
            "share_over_p99_limit": 0.0 if ok else 0.4, "run_s": run_s, "fps_total": 30.0 * step.cameras,
            "daemon_cores": 3.0 if step.preprocess == "cuda" else 9.0}


def search(capacity: int, left_s: float = 10_000.0, run_s: float = 50.0, **kw: Any) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    while (step := plan_next(runs, left_s=left_s, run_s=run_s, fast="cuda", compare="cpu", ladder=LADDER,
                             **kw)) is not None:
        runs.append(measured(step, capacity, run_s))
        left_s -= run_s
        assert len(runs) < 30, runs
    return runs


def test_verdict_names_what_failed() -> None:
    good = {"cameras": 8, "cameras_publishing": 8, "latency_ms": {"p99": 150.0}, "drop_fraction": 0.005,
            "share_over_p99_limit": 0.004}
    assert verdict(good) is None
    assert verdict({**good, "cameras_publishing": 7}) == "7 of 8 cameras published"
    assert "p99 201 ms" in str(verdict({**good, "latency_ms": {"p99": 201.0}}))
    assert "daemon histogram" in str(verdict({**good, "share_over_p99_limit": 0.02}))
    assert "drops 1.10%" in str(verdict({**good, "drop_fraction": 0.011}))
    assert verdict({**good, "drop_fraction": None}) == "no drop count"
    assert verdict({**good, "error": "RuntimeError: boom"}) == "error: RuntimeError: boom"
    assert verdict({"cameras": 8, "skipped": "no shm"}) == "skipped: no shm"
    assert verdict({**good, "latency_ms": {"p99": 150.0}}, Limits(p99_ms=100.0)) is not None


@pytest.mark.parametrize("capacity", [0, 20, 100, 150, 160, 175, 200, 224, 250, 300, 500])
def test_the_search_finds_the_capacity_to_the_resolution(capacity: int) -> None:
    runs = search(capacity)
    grow = [r for r in runs if r["phase"] == GROW]
    lo, hi = bounds(runs)
    assert lo <= capacity
    if capacity >= LADDER.max_cameras:
        assert hi is None and lo == LADDER.max_cameras
    else:
        assert hi is not None and hi > capacity and hi - lo <= LADDER.resolution
    assert [r["cameras"] for r in grow][0] == LADDER.start
    assert len({r["cameras"] for r in grow}) == len(grow)  # no N measured twice
    compare = [r for r in runs if r["phase"] == COMPARE]
    assert len(compare) == 1 and compare[0]["preprocess"] == "cpu"
    assert compare[0]["cameras"] == (lo or min(r["cameras"] for r in grow))
    mixed = [r for r in runs if r["phase"] == MIXED]
    if lo and hi is not None:
        assert len(mixed) == 1 and mixed[0]["cameras"] == lo + 32 and mixed[0]["cpu_decoded"] == 32
        assert runs[-1] is mixed[0]
    else:
        assert not mixed
    assert all(r["preprocess"] == "cuda" for r in runs if r["phase"] != COMPARE)


def test_growth_then_bisection_order() -> None:
    assert [r["cameras"] for r in search(200) if r["phase"] == GROW] == [160, 224, 192, 208]
    assert [r["cameras"] for r in search(100) if r["phase"] == GROW] == [160, 80, 112, 96]


def test_time_is_kept_for_the_compare_run() -> None:
    runs = [measured(Step(GROW, 160, "cuda"), 500)]
    assert plan_next(runs, left_s=99, run_s=50, fast="cuda", compare="cpu", ladder=LADDER) == Step(COMPARE, 160,
                                                                                                   "cpu")
    assert plan_next(runs, left_s=100, run_s=50, fast="cuda", compare="cpu", ladder=LADDER) == Step(GROW, 224,
                                                                                                    "cuda")
    assert plan_next(runs, left_s=49, run_s=50, fast="cuda", compare="cpu", ladder=LADDER) is None
    # few runs fit: the budget decides, and the compare run is always among them
    runs = search(10_000, left_s=160, run_s=50)
    assert [(r["phase"], r["cameras"]) for r in runs] == [(GROW, 160), (GROW, 224), (COMPARE, 224)]


def test_no_compare_and_no_mixed_when_turned_off() -> None:
    runs = search(200, do_compare=False, do_mixed=False)
    assert {r["phase"] for r in runs} == {GROW}


def test_an_errored_grow_run_is_followed_by_the_compare_run_at_its_n() -> None:
    runs = [{"phase": GROW, "cameras": 160, "error": "RuntimeError: the daemon exited 3 during warm-up"}]
    assert plan_next(runs, left_s=500, run_s=50, fast="cuda", compare="cpu", ladder=LADDER) == Step(COMPARE, 160,
                                                                                                   "cpu")
    runs.append(measured(Step(COMPARE, 160, "cpu"), 500))
    assert plan_next(runs, left_s=500, run_s=50, fast="cuda", compare="cpu", ladder=LADDER) == Step(GROW, 80, "cuda")


def test_next_grow_reads_only_grow_runs() -> None:
    runs = [measured(Step(GROW, 160, "cuda"), 500), measured(Step(COMPARE, 160, "cpu"), 0)]
    assert next_grow(runs, LADDER) == 224
    assert next_grow([measured(Step(GROW, 320, "cuda"), 500)], LADDER) is None  # the ladder's top passed


# -- what a window of messages says ------------------------------------------------------------------


def _stats(ts: float, interval: float, cams: dict[str, tuple[int, int, int, int]], worker: dict | None = None) -> dict:
    """A stats message; per camera (published, dropped, frames <= 200 ms, frames)."""
    le = [10, 25, 50, 100, 150, 200, 300, 500, 1000, 2000]
    entries = {cam: {"published": p, "dropped": d,
                     "latency_hist_ms": {"le": le, "counts": [0] * 5 + [under] * 5, "count": n}}
               for cam, (p, d, under, n) in cams.items()}
    msg = {"type": "stats", "ts": ts, "interval_s": interval, "source": "worker-cuda0", "cameras": entries}
    if worker is not None:
        msg["worker"] = worker
    return msg


def test_stats_figures_count_only_intervals_inside_the_window() -> None:
    msgs = [_stats(104.0, 4.0, {"a": (1000, 500, 0, 1000)}),  # began at 100: warm-up, left out
            _stats(108.0, 4.0, {"a": (100, 1, 99, 100), "b": (100, 0, 100, 100)}),
            _stats(112.0, 4.0, {"a": (100, 1, 97, 100), "b": (98, 0, 98, 98)})]
    got = gpu_verify_e2e.stats_figures(msgs, start_wall=104.2, limit_ms=200)
    assert got["stats_intervals"] == 2
    assert (got["stats_published"], got["stats_dropped"]) == (398, 2)
    assert got["stats_drop_fraction"] == pytest.approx(2 / 400)
    assert got["share_over_p99_limit"] == pytest.approx(1 - 394 / 398, abs=1e-5)
    none = gpu_verify_e2e.stats_figures(msgs, start_wall=104.2, limit_ms=250)  # not a bucket edge
    assert none["share_over_p99_limit"] is None and none["stats_published"] == 398
    assert gpu_verify_e2e.stats_figures([], 0.0, 200)["stats_drop_fraction"] is None


def test_worker_figures_keep_the_data_path_and_add_up_torn() -> None:
    w = {"device": "cuda:0", "preprocess": "cuda", "pinned": True, "graphs": "graphs", "torn": 2, "stage_ms": {}}
    msgs = [_stats(104.0, 4.0, {}, {**w, "torn": 50}), _stats(108.0, 4.0, {}, w),
            _stats(112.0, 4.0, {}, {**w, "torn": 1, "graphs": "eager"})]
    got = gpu_verify_e2e.worker_figures(msgs, start_wall=104.0)
    entry = got["worker-cuda0"]
    assert (entry["preprocess"], entry["pinned"], entry["graphs"], entry["torn"]) == ("cuda", True, "eager", 1)
    assert entry["torn_sum"] == 3
    assert entry["backend"] is None  # a key the worker did not send is recorded as missing
    assert gpu_verify_e2e.worker_figures(msgs, start_wall=200.0) == {}


def test_window_figures_from_detection_messages() -> None:
    got = gpu_verify_e2e.window_figures({"a": 300, "b": 270}, dropped=30, latency_ms=[10.0] * 99 + [500.0],
                                        elapsed_s=10.0, target_fps=30)
    assert (got["fps_per_camera_mean"], got["fps_per_camera_min"], got["fps_total"]) == (28.5, 27.0, 57.0)
    assert got["cameras_below_90pct"] == 0 and got["msg_drop_fraction"] == pytest.approx(30 / 600)
    assert got["latency_ms"]["p50"] == 10.0 and got["latency_ms"]["max"] == 500.0 and got["latency_ms"]["p99"] > 10
    empty = gpu_verify_e2e.window_figures({"a": 0}, 0, [], 5.0, 30)
    assert empty["latency_ms"]["p99"] is None and empty["msg_drop_fraction"] is None


# -- the daemon's configuration ----------------------------------------------------------------------


def test_daemon_config_per_step(tmp_path: Path) -> None:
    from streamdet.config.loader import parse_config

    clip, weights = tmp_path / "clip.mp4", tmp_path / "w.pt"
    clip.write_bytes(b"x")
    weights.write_bytes(b"x")
    gpu = gpu_verify_media.GPU
    cfg = gpu_verify_e2e.daemon_config(gpu, weights, clip, Step(MIXED, 10, "cuda", cpu_decoded=3), "ipc:///tmp/x")
    assert [c["decode"] for c in cfg["cameras"]] == ["nvdec"] * 7 + ["cpu"] * 3
    assert cfg["model"]["preprocess"] == "cuda" and cfg["devices"] == ["cuda:0"] and cfg["model"]["half"]
    known = gpu_verify_e2e.preprocess_key_known()
    if not known:
        cfg["model"].pop("preprocess")
    config = parse_config(yaml.safe_dump(cfg), tmp_path)  # the daemon would accept it
    assert len(config.cameras) == 10 and config.batching.max_batch == gpu.max_batch
    if known:
        assert config.model.preprocess == "cuda"
    smoke = gpu_verify_media.CPU_SMOKE
    cfg = gpu_verify_e2e.daemon_config(smoke, weights, clip, Step(COMPARE, 2, smoke.compare_preprocess), "ipc://x")
    assert "preprocess" not in cfg["model"] and {c["decode"] for c in cfg["cameras"]} == {"cpu"}


# -- the stage's loop ------------------------------------------------------------------------------


def _stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capacity: int, prior: dict | None = None,
           budget: float = 1000.0) -> tuple[dict[str, Any], list[Step]]:
    done: list[Step] = []

    def fake_run(ctx: Any, p: Any, clip: Path, step: Step) -> dict[str, Any]:
        done.append(step)
        return measured(step, capacity, run_s=20.0)

    monkeypatch.setattr(gpu_verify_e2e, "run_daemon", fake_run)
    monkeypatch.setattr(gpu_verify_e2e, "ensure_clip", lambda work, p: work / "clip.mp4")
    ctx = gpu_verify_common.StageContext(name="e2e", budget_s=budget, out=tmp_path, work=tmp_path, cpu_smoke=True,
                                         e2e_ladder=(4, 4, 16, 2), prior=prior)
    return gpu_verify_e2e.e2e_stage(ctx), done


def test_the_stage_runs_the_plan_and_sums_it_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, done = _stage(monkeypatch, tmp_path, capacity=9)
    assert [(s.phase, s.cameras) for s in done] == [(GROW, 4), (GROW, 8), (GROW, 12), (GROW, 10), (COMPARE, 8)]
    assert all(s.preprocess is None for s in done)  # the CPU profile never writes model.preprocess
    assert result["largest_passing_cameras"] == 8
    assert [r["verdict"] == "pass" for r in result["runs"]] == [True, True, False, False, True]
    assert result["ratios"]["cores_host_over_device"] == pytest.approx(1.0)
    assert result["headline"].startswith("largest passing N 8")


def test_a_resumed_stage_continues_the_search(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    earlier = [{**measured(Step(GROW, n, None), 9), "verdict": "x"} for n in (4, 8, 12)]
    result, done = _stage(monkeypatch, tmp_path, capacity=9, prior={"stage": "e2e", "status": "timeout",
                                                                    "runs": earlier})
    assert [(s.phase, s.cameras) for s in done] == [(GROW, 10), (COMPARE, 8)]
    assert [r.get("earlier_call", False) for r in result["runs"]] == [True, True, True, False, False]
    result, done = _stage(monkeypatch, tmp_path, capacity=9, prior={"stage": "e2e", "status": "ok", "runs": earlier})
    assert done[0] == Step(GROW, 4, None)  # an ok record is never resumed into: the parent skips the stage


def test_two_errors_end_the_stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Step] = []

    def broken(ctx: Any, p: Any, clip: Path, step: Step) -> dict[str, Any]:
        calls.append(step)
        return {"phase": step.phase, "cameras": step.cameras, "error": "RuntimeError: no", "run_s": 5.0}

    monkeypatch.setattr(gpu_verify_e2e, "run_daemon", broken)
    monkeypatch.setattr(gpu_verify_e2e, "ensure_clip", lambda work, p: work / "clip.mp4")
    ctx = gpu_verify_common.StageContext(name="e2e", budget_s=1000, out=tmp_path, work=tmp_path, cpu_smoke=True)
    result = gpu_verify_e2e.e2e_stage(ctx)
    assert [(s.phase, s.cameras) for s in calls] == [(GROW, 1), (COMPARE, 1)]
    assert result["largest_passing_cameras"] is None and all(r["verdict"].startswith("error") for r in result["runs"])


def test_the_stage_stops_for_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    result, done = _stage(monkeypatch, tmp_path, capacity=100, budget=0.0)
    assert done == [] and result["runs"] == [] and result["largest_passing_cameras"] is None
