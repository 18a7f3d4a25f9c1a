"""Units of the soak tool (tools/soak_report.py, tools/soak_probe.py): windows, growth, criteria, probes."""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


report = _load("soak_report")
probe = _load("soak_probe")


def _proc(pid: int, role: str, rss: int, fds: int = 10, name: str | None = None) -> dict[str, Any]:
    return {"pid": pid, "ppid": 1, "name": name or f"sd-{role}", "role": role, "rss_kb": rss, "anon_kb": rss,
            "fds": fds}


def _samples(worker_rss: list[int], fds: list[int] | None = None) -> list[dict[str, Any]]:
    """Samples every 10 s of a supervisor (100 MB), one decoder (50 MB) and a worker."""
    out = []
    for i, rss in enumerate(worker_rss):
        procs = [_proc(10, "supervisor", 100_000), _proc(11, "decoder", 50_000),
                 _proc(12, "worker", rss, fds[i] if fds else 20)]
        out.append({"t": 10.0 * i, "processes": procs, "rss_kb": report.role_rss(procs), "shm_segments": 4,
                    "shm_bytes": 4000})
    return out


def test_windows_scale_below_30_minutes_and_stay_5_minutes_above() -> None:
    w30 = report.Windows.for_duration(1800)
    assert (w30.warmup_s, w30.first, w30.last) == (300, (300, 600), (1500, 1800))
    w3 = report.Windows.for_duration(180)
    assert (w3.warmup_s, w3.first, w3.last) == (30, (30, 60), (150, 180))
    w60 = report.Windows.for_duration(3600)
    assert (w60.warmup_s, w60.first, w60.last) == (300, (300, 600), (3300, 3600))


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))
    assert report.percentile(values, 99) == 99
    assert report.percentile(values, 50) == 50
    assert report.percentile([7.0], 99) == 7.0
    assert report.percentile([], 99) is None


def test_rss_growth_compares_the_window_means_per_role() -> None:
    win = report.Windows.for_duration(180)  # first window 30-60 s, last 150-180 s
    worker = [400_000] * 7 + [420_000] * 12  # samples at 0..180 s; the worker grows after 60 s
    growth = report.rss_growth(_samples(worker), win)
    assert growth["worker"]["growth_pct"] == pytest.approx(5.0)
    assert growth["decoder"]["growth_pct"] == 0
    assert growth["total"]["growth_pct"] == pytest.approx(100 * 20_000 / 550_000)
    assert "other" not in growth  # no such process


def test_fd_growth_is_last_sample_against_first_after_warm_up() -> None:
    win = report.Windows.for_duration(180)
    fds = [30, 30, 30, 20, 20, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 21, 22]  # warm-up fds are ignored
    grown = report.fd_growth(_samples([400_000] * 19, fds), win)
    assert grown["sd-worker[12]"] == {"first": 20, "last": 22, "growth": 2}
    assert grown["sd-decoder[11]"]["growth"] == 0


def test_child_pid_changes_name_a_restarted_worker() -> None:
    samples = _samples([400_000] * 4)
    samples[2]["processes"][2] = _proc(13, "worker", 400_000)
    samples[3]["processes"][2] = _proc(13, "worker", 400_000)
    assert report.child_pid_changes(samples) == ["t=20s sd-worker[12] gone", "t=20s sd-worker[13] new"]
    assert report.child_pid_changes(_samples([400_000] * 4)) == []


def test_drop_totals_share_of_behind_and_overwritten() -> None:
    drops = report.DropTotals()
    drops.add({"cameras": {"cam0": {"published": 97, "drops": {"overwritten": 2, "behind": 1, "max_fps": 500}}}})
    drops.add({"cameras": {"cam0": {"published": 100, "drops": {}}, "bad": None}})
    assert drops.cameras["cam0"]["max_fps"] == 500
    assert drops.lost_share() == pytest.approx(3 / 200)


def _good_result() -> dict[str, Any]:
    win = report.Windows.for_duration(180)
    samples = _samples([400_000] * 19)
    return {
        "rss": report.rss_growth(samples, win), "fds": report.fd_growth(samples, win),
        "shm": {"segments_min": 4, "segments_max": 4, "bytes_min": 4000, "bytes_max": 4000},
        "latency": {"first": {"p99": 100.0}, "last": {"p99": 105.0}},
        "cameras": {"cam0": {"messages": 900, "max_gap_s": 0.4}},
        "drops": {"lost_share": 0.0}, "restarts": [],
        "reloads": [{"ok": True}], "metrics_scrapes": {"ok": 19, "total": 19},
        "exit": {"status": 0, "segments_left": [], "children_left": []},
    }


def _judge(result: dict[str, Any]) -> dict[str, bool]:
    crit = report.judge(result, rss_limit_pct=5, p99_tolerance_pct=10, max_gap_s=3, max_lost_pct=1)
    return {c.name: c.ok for c in crit}


@pytest.mark.parametrize(("path", "value", "criterion"), [
    (("latency", "last", "p99"), 111.0, "p99 latency last vs first window"),
    (("shm", "bytes_max"), 8000, "shm segments/bytes constant"),
    (("cameras", "cam0", "max_gap_s"), 3.5, "max gap between messages"),
    (("drops", "lost_share"), 0.02, "load held (behind+overwritten)"),
    (("restarts",), ["t=20s sd-worker[12] gone"], "no unexpected restarts"),
    (("reloads",), [{"ok": True}, {"ok": False}], "reloads applied live"),
    (("metrics_scrapes", "ok"), 18, "metrics endpoint answered"),
    (("exit", "status"), 1, "SIGTERM exit status"),
    (("exit", "segments_left"), ["streamdet_1_cam0"], "no segment or child left"),
])
def test_judge_fails_exactly_the_broken_criterion(path: tuple[str, ...], value: Any, criterion: str) -> None:
    assert all(_judge(_good_result()).values())
    result = copy.deepcopy(_good_result())
    target = result
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    verdict = _judge(result)
    assert not verdict[criterion]
    assert [name for name, ok in verdict.items() if not ok] == [criterion]


def test_judge_fails_rss_and_fd_growth() -> None:
    win = report.Windows.for_duration(180)
    samples = _samples([400_000] * 7 + [425_000] * 12, [20] * 18 + [25])
    result = {**_good_result(), "rss": report.rss_growth(samples, win), "fds": report.fd_growth(samples, win)}
    verdict = _judge(result)
    assert not verdict["RSS growth worker"] and not verdict["fd growth (every process)"]
    assert verdict["RSS growth supervisor"] and verdict["RSS growth total"]  # 25 MB of 550 MB is under 5 %


def test_cpu_by_window_flags_a_busy_machine() -> None:
    win = report.Windows.for_duration(180)
    samples = _samples([400_000] * 19)
    for s in samples:
        busy = 1.5 if s["t"] >= 150 else 0.1  # someone else's job in the last window
        s["cpu_cores"] = {"daemon": 0.8, "worker": 0.6, "decoder": 0.15, "supervisor": 0.05, "soak": 0.05,
                          "other_processes": busy}
    samples[0]["cpu_cores"] = None  # the first sample has no interval
    cpu = report.cpu_by_window(samples, win)
    assert cpu["first"]["other_processes"] == pytest.approx(0.1) and cpu["last"]["other_processes"] == 1.5
    assert cpu["first"]["daemon"] == pytest.approx(0.8)
    assert not cpu["quiet"] and "1.50 CPU cores" in cpu["note"]
    for s in samples[1:]:
        s["cpu_cores"]["other_processes"] = 0.1
    assert report.cpu_by_window(samples, win)["quiet"]


def test_table_lists_every_criterion_with_its_result() -> None:
    text = report.table([report.Criterion("a", "1", "< 2", True), report.Criterion("bb", "3", "< 2", False)])
    lines = text.splitlines()
    assert lines[0].split() == ["criterion", "value", "limit", "result"]
    assert lines[1].split()[-1] == "PASS" and lines[2].split()[-1] == "FAIL"


def test_probe_reads_this_process_and_its_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        seen = {p.pid: p for p in probe.sample_processes(os.getpid())}
        assert seen[os.getpid()].role == "supervisor" and seen[child.pid].role == "other"
        assert seen[os.getpid()].rss_kb > 0 and seen[os.getpid()].fds > 0 and seen[os.getpid()].cpu_s > 0
    finally:
        child.kill()
        child.wait()
    assert probe.role_of("sd-decoder-cam0", False) == "decoder"
    assert probe.role_of("sd-worker-cpu", False) == "worker"


def test_machine_busy_time_grows_at_least_by_our_own_cpu_time() -> None:
    busy, own = probe.machine_busy_s(), probe.own_cpu_s()
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    assert probe.own_cpu_s() - own >= 0.25
    assert probe.machine_busy_s() - busy >= 0.2  # clock ticks: allow their granularity


def test_shm_usage_counts_only_the_supervisors_segments(tmp_path: Path) -> None:
    (tmp_path / "streamdet_42_cam0").write_bytes(b"x" * 100)
    (tmp_path / "streamdet_42_cam1").write_bytes(b"x" * 50)
    (tmp_path / "streamdet_4_cam0").write_bytes(b"x" * 7)
    assert probe.shm_usage(42, tmp_path) == (2, 150)
    assert probe.shm_usage(5, tmp_path) == (0, 0)
