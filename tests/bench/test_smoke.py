"""`streamdet bench --quick` end to end: both systems measured, invariants of the result hold.

Starts the daemon as a subprocess (2 tiny file cameras, capacity capped at 2); asserts structure
and invariants, never timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamdet.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_quick_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    rc = main(["bench", "--quick", "--workdir", str(tmp_path / "work"), "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(out.read_text())
    settings = result["settings"]
    cameras, frames, max_n = settings["cameras"], settings["frames"], settings["max_cameras"]
    assert (cameras, frames, max_n) == (2, 20, 2)

    naive = result["naive"]["unpaced"]
    assert naive["frames_processed"] == cameras * frames
    assert set(naive["per_camera"].values()) == {frames}

    sd = result["streamdet"]["unpaced"]
    assert sd["frames_expected"] == cameras * frames
    assert sd["frames_lost"] == 0, f"streamdet lost frames of unpaced files: {sd['per_camera']}"
    assert sd["frames_published"] == cameras * frames and sd["complete"]

    for system in ("streamdet", "naive"):
        caps = result[system]["capacity"]
        assert set(caps) == {f"{r:g}" for r in settings["rates"]}
        for cap in caps.values():
            assert 0 <= cap["capacity"] <= max_n
            assert cap["trials"] and all(1 <= t["n"] <= max_n for t in cap["trials"])
            held = [t["n"] for t in cap["trials"] if t["passed"]]
            assert cap["capacity"] == max(held, default=0)
            for t in cap["trials"]:
                assert t["dropped"] == t["expected"] - t["published"] >= 0

    ratios = result["ratios"]
    assert ratios["unpaced_fps"] == pytest.approx(sd["fps"] / naive["fps"])
    for key, cap in result["streamdet"]["capacity"].items():
        n_cap = result["naive"]["capacity"][key]["capacity"]
        expected = cap["capacity"] / n_cap if n_cap else None
        assert ratios[f"capacity_{key}fps"] == (pytest.approx(expected) if expected is not None else None)

    assert "unpaced frames/s" in captured.out and "naive" in captured.out
    logs = sorted((tmp_path / "work").glob("daemon-*.log"))
    assert len(logs) == 1 + len(result["streamdet"]["capacity"][f"{settings['rates'][0]:g}"]["trials"])
    for log in logs:  # every daemon was stopped by SIGTERM and shut down cleanly
        assert "received SIGTERM" in log.read_text(), log.name
