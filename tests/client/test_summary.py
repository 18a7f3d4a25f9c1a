"""``subscribe --summary`` lines: one per camera per stats message, every figure from the stats entry,
missing or malformed optional fields shown as ``-``, the last error only where it explains something."""

from __future__ import annotations

import time
from typing import Any

from streamdet import wire
from streamdet.client.summary import camera_line, summary_lines

TS = 1_700_000_000.0


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def entry(**changes: Any) -> dict[str, Any]:
    """A full per-camera stats entry as the worker sends it."""
    base: dict[str, Any] = {
        "fps": 24.96, "published": 250, "objects": 300, "dropped": 3,
        "drops": {"overwritten": 2, "max_fps": 1, "behind": 0, "unsent": 0},
        "latency_ms": {"p50": 38.4, "p95": 47.0, "p99": 51.2, "max": 77.0},
        "state": "streaming", "reconnects": 0,
    }
    base.update(changes)
    return base


def stats(cameras: dict[str, dict[str, Any]], ts: float = TS, interval_s: float = 10.0) -> dict[str, Any]:
    """A stats message as a subscriber decodes it (through the real encoder and validator)."""
    return wire.decode(wire.encode(wire.stats_message(source="worker-0 cpu", interval_s=interval_s, cameras=cameras,
                                                      ts=ts)))


def test_a_full_entry_gives_every_figure() -> None:
    line = camera_line("door", entry(), TS, 10.0)
    assert line == (f"{clock(TS)} door: 25.0 fps, latency p50 38 ms p99 51 ms, 1.20 objects/frame, "
                    "2 dropped (overwritten 2), 1 skipped by max_fps, streaming")


def test_missing_and_malformed_optional_fields_print_a_dash() -> None:
    old = {"fps": 5.0, "published": 50, "dropped": 0, "latency_ms": {"p50": None, "p95": None, "max": None},
           "state": "connecting", "reconnects": 1}  # an 0.1 daemon: no objects, drops, p99
    assert camera_line("yard", old, TS, 10.0) == (f"{clock(TS)} yard: 5.0 fps, latency p50 - p99 -, "
                                                  "- objects/frame, 0 dropped, connecting")
    junk = entry(objects="many", drops=["overwritten"], latency_ms=None, fps=True, last_error=7)
    assert camera_line("yard", junk) == ("--:--:-- yard: - fps, latency p50 - p99 -, - objects/frame, "
                                         "3 dropped, streaming")
    idle = entry(published=0, objects=0, fps=0.0)
    assert "- objects/frame" in camera_line("yard", idle)  # nothing published: no ratio, no division by zero


def test_drops_by_reason_list_the_nonzero_ones_including_unknown_reasons() -> None:
    line = camera_line("door", entry(dropped=9, drops={"overwritten": 0, "unsent": 4, "newreason": 5}))
    assert "9 dropped (unsent 4, newreason 5)," in line


def test_the_last_error_shows_while_in_trouble_or_when_it_is_recent() -> None:
    err = {"last_error": "connection refused", "last_error_ts": TS - 100.0}
    for state in ("backoff", "failed", "connecting"):
        line = camera_line("door", entry(state=state, **err), TS, 10.0)
        assert line.endswith(f", {state} (last error at {clock(TS - 100.0)}: connection refused)")
    # streaming again: an error from long before this interval is history, one within it is news
    assert camera_line("door", entry(**err), TS, 10.0).endswith(", streaming")
    recent = entry(last_error="end of stream", last_error_ts=TS - 4.0)
    assert camera_line("door", recent, TS, 10.0).endswith(
        f", streaming (last error at {clock(TS - 4.0)}: end of stream)")
    no_time = entry(state="failed", last_error="decoder crashed")
    assert camera_line("door", no_time, TS, 10.0).endswith(", failed (last error: decoder crashed)")


def test_one_line_per_camera_sorted_and_filtered() -> None:
    msg = stats({"yard": entry(fps=5.0), "door": entry(), "lobby": entry(fps=12.5)})
    lines = summary_lines(msg)
    assert [line.split()[1] for line in lines] == ["door:", "lobby:", "yard:"]
    assert lines[0] == camera_line("door", msg["cameras"]["door"], TS, 10.0)
    assert [line.split()[1] for line in summary_lines(msg, ["yard", "gate"])] == ["yard:"]
    assert summary_lines(msg, []) == []
    assert summary_lines(stats({})) == []


def test_detection_messages_give_no_line() -> None:
    det = wire.detection_message(camera="door", seq=1, frame=1, pts=0.04, ts_capture=TS, width=64, height=48,
                                 detections=[])
    assert summary_lines(det) == []


def test_worker_stats_through_the_wire_to_a_line() -> None:
    """The worker's own per-interval figures (CameraStats) reach the line unchanged: 4 frames
    published with 6 objects in all are 1.50 objects per frame; p99 of 20/30/40/400 ms interpolates to 389."""
    from streamdet.pipeline.worker.stats import CameraStats

    cam = CameraStats(published=4, objects=6, overwritten=1, latencies_ms=[20.0, 30.0, 40.0, 400.0])
    summary = cam.summary(2.0, {"decoded": 6, "skipped": 1, "behind": 0, "decode_ns": 0})
    summary.update(state="backoff", reconnects=2, last_error="timed out", last_error_ts=TS - 1.0)
    (line,) = summary_lines(stats({"door": summary}, interval_s=2.0))
    assert line == (f"{clock(TS)} door: 2.0 fps, latency p50 35 ms p99 389 ms, 1.50 objects/frame, "
                    f"1 dropped (overwritten 1), 1 skipped by max_fps, "
                    f"backoff (last error at {clock(TS - 1.0)}: timed out)")


def test_frames_skipped_by_max_fps_are_shown_apart_from_losses() -> None:
    """The stats' ``dropped`` counts max_fps skips too (wire.md); a person sees them as intended."""
    line = camera_line("gate", entry(dropped=75, drops={"max_fps": 75, "overwritten": 0}))
    assert ", 0 dropped, 75 skipped by max_fps," in line
    line = camera_line("gate", entry(dropped=80, drops={"max_fps": 75, "behind": 5}))
    assert ", 5 dropped (behind 5), 75 skipped by max_fps," in line
