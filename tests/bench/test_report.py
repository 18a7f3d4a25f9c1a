"""Ratios, the table and the plot, from hand-made result dicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamdet.bench import runner
from streamdet.bench.options import BenchSettings
from streamdet.bench.report import compute_ratios, format_table, rate_key, write_plot


def cap(capacity: int, p99: float, complete: bool = True) -> dict:
    trials = [{"n": n, "drop_pct": 0.0 if n <= capacity else 12.5, "passed": n <= capacity,
               "latency_ms": {"p99": p99 * n}} for n in (1, 2, 4)]
    return {"capacity": capacity, "complete": complete, "trials": trials}


RESULT = {
    "settings": {"width": 320, "height": 240, "img_size": 256, "device": "cpu", "latency_ms": 200.0},
    "streamdet": {"unpaced": {"fps": 60.0, "frames_lost": 0}, "capacity": {"5": cap(4, 20.0), "25": cap(2, 30.0)}},
    "naive": {"unpaced": {"fps": 24.0, "detect_ms_per_batch": 80.0},
              "capacity": {"5": cap(1, 50.0), "25": cap(0, 90.0, False)}},
}


def test_ratios_are_the_quotients() -> None:
    r = compute_ratios(RESULT)
    assert r["unpaced_fps"] == pytest.approx(60.0 / 24.0)
    assert r["capacity_5fps"] == pytest.approx(4.0)
    assert r["capacity_25fps"] is None  # naive held nothing: no finite ratio
    assert list(r) == ["unpaced_fps", "capacity_5fps", "capacity_25fps"]


def test_ratios_with_a_skipped_system() -> None:
    only = {"streamdet": RESULT["streamdet"], "naive": {}}
    assert all(v is None for v in compute_ratios(only).values())


def test_table_shows_both_systems_and_flags_an_incomplete_search() -> None:
    table = format_table(RESULT | {"ratios": compute_ratios(RESULT)})
    lines = table.splitlines()
    assert "streamdet" in lines[0] and "naive" in lines[0]
    row = next(line for line in lines if line.startswith("unpaced frames/s"))
    assert row.split()[-3:] == ["60.0", "24.0", "2.50x"]
    assert any(line.startswith("cameras held @ 5 fps") and line.split()[-3:] == ["4", "1", "4.00x"] for line in lines)
    assert "naive @ 25 fps" in table  # stopped by the budget


def test_rate_key() -> None:
    assert rate_key(5.0) == "5" and rate_key(12.5) == "12.5"


def test_plot_without_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runner, "plot_available", lambda: False)
    rc = runner.bench_main(BenchSettings(workdir=tmp_path, plot_path=tmp_path / "p.png"))
    assert rc == 2
    assert "matplotlib" in capsys.readouterr().err
    assert not (tmp_path / "clips").exists()


def test_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_plot(RESULT, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def stages(track: float | None, tracked: int) -> dict:
    stage_ms = {"gather": 0.5, "preprocess": 2.0, "inference": 20.0, "postprocess": 4.0, "publish": 1.0,
                "track": 0.25 if tracked else "n/a"}
    return {"workers": [{"name": "worker-cpu", "stage_ms": stage_ms, "tracked_frames": tracked,
                         "track_ms_per_frame": track}]}


TRACKED = RESULT | {
    "streamdet": RESULT["streamdet"] | {"unpaced": {"fps": 60.0, "frames_lost": 0, "stages": stages("n/a", 0)}},
    "tracking": {
        "1": {"detect_every": 1, "unpaced": {"fps": 57.0, "frames_lost": 0, "tracked_only": 0,
                                             "stages": stages(0.0312, 600)},
              "capacity": {"5": cap(4, 20.0), "25": cap(2, 30.0)}},
        "3": {"detect_every": 3, "unpaced": {"fps": 120.0, "frames_lost": 0, "tracked_only": 400,
                                             "stages": stages(0.0205, 600)},
              "capacity": {"5": cap(4, 20.0, complete=False), "25": cap(5, 30.0)}},
    },
}


def test_tracking_ratios_against_the_naive_loop_and_detect_every_1() -> None:
    r = compute_ratios(TRACKED)
    assert r["tracking_de3_unpaced_fps"] == pytest.approx(120.0 / 24.0)
    assert r["tracking_de1_capacity_5fps"] == pytest.approx(4.0) and r["tracking_de3_capacity_25fps"] is None
    assert r["tracking_de3_vs_de1_capacity_25fps"] == pytest.approx(5 / 2)
    assert r["tracking_de3_vs_de1_capacity_5fps"] == pytest.approx(1.0)
    assert "tracking_de1_vs_de1_capacity_5fps" not in r
    assert {k for k in compute_ratios(RESULT)} == {k for k in r if not k.startswith("tracking_")}


def test_tracking_rows_in_the_table() -> None:
    table = format_table(TRACKED | {"ratios": compute_ratios(TRACKED)})
    lines = table.splitlines()
    at_25 = next(i for i, line in enumerate(lines) if line.startswith("cameras held @ 25 fps"))
    rows = {line.strip().rsplit(None, 3)[0]: line.split()[-3:] for line in lines[at_25:at_25 + 7]}
    assert rows["+ tracking, detect_every 1"] == ["2", "0", "-"]  # the naive loop (untracked) beside it
    assert rows["+ tracking, detect_every 3"] == ["5", "0", "-"]
    assert rows["detect_every 3 / detect_every 1"] == ["-", "-", "2.50x"]
    unpaced = next(line for line in lines if line.startswith("tracking, detect_every 3: unpaced frames/s"))
    assert unpaced.split()[-3:] == ["120.0", "24.0", "5.00x"]
    assert next(line for line in lines if "tracked only" in line and "400" in line)
    per_frame = [line.split()[-3] for line in lines if "track ms/frame" in line]
    assert per_frame == ["0.031", "0.021"]  # three decimals, one per tracked run
    assert sum("track ms/batch" in line for line in lines) == 2  # the untracked run has no track row
    assert "streamdet + tracking, detect_every 3 @ 5 fps" in table  # stopped by the budget
    assert "naive loop does not track" in table


def test_no_tracking_rows_without_tracking() -> None:
    table = format_table(RESULT | {"ratios": compute_ratios(RESULT)})
    assert "tracking" not in table and "track" not in table


def test_plot_with_tracking_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_plot(TRACKED, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
