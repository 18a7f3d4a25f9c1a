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
