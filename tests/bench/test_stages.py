"""Per-stage costs from stats messages: weighted means, and "n/a" for what an older daemon lacks."""

from __future__ import annotations

import pytest

from streamdet.bench.stages import NA, decode_ms_mean, summarize_stats


def stats(batches: int, inference: float, decode_ms: float, decoded: int, overwritten: int) -> dict:
    return {
        "type": "stats", "ts": 0.0, "source": "worker-cpu", "interval_s": 1.0,
        "worker": {"name": "worker-cpu", "device": "cpu", "backend": "onnxruntime", "batches": batches,
                   "frames": 2 * batches, "batch_size_mean": 2.0,
                   "stage_ms": {"gather": 1.0, "preprocess": 2.0, "inference": inference, "postprocess": 0.5}},
        "cameras": {"cam0": {"decoded": decoded, "decode_ms": decode_ms,
                             "drops": {"overwritten": overwritten, "max_fps": 4, "behind": 0}}},
    }


def test_weighted_by_batches_and_decoded_frames() -> None:
    s = summarize_stats([stats(10, 30.0, 2.0, 20, 1), stats(30, 50.0, 4.0, 60, 2)])
    (w,) = s["workers"]
    assert w["name"] == "worker-cpu" and w["backend"] == "onnxruntime" and w["device"] == "cpu"
    assert w["batches"] == 40 and w["frames"] == 80 and w["batch_size_mean"] == 2.0
    assert w["stage_ms"]["inference"] == pytest.approx((10 * 30 + 30 * 50) / 40)
    assert w["stage_ms"]["publish"] == NA  # no message carried it
    cam = s["cameras"]["cam0"]
    assert cam["decoded"] == 80 and cam["decode_ms"] == pytest.approx((20 * 2 + 60 * 4) / 80)
    assert cam["drops"] == {"overwritten": 3, "max_fps": 8, "behind": 0}
    assert decode_ms_mean(s) == pytest.approx(3.5)


def test_an_older_daemon_gives_n_a() -> None:
    old = {"type": "stats", "ts": 0.0, "source": "worker-cpu", "interval_s": 1.0,
           "cameras": {"cam0": {"fps": 5.0, "published": 5, "dropped": 0, "latency_ms": {}, "state": "streaming"}}}
    s = summarize_stats([old])
    assert s["workers"] == []
    assert s["cameras"]["cam0"] == {"decoded": NA, "decode_ms": NA, "drops": NA}
    assert decode_ms_mean(s) == NA


def test_malformed_fields_are_ignored() -> None:
    bad = {"worker": {"name": "w", "batches": "many", "stage_ms": {"inference": None}, "batch_size_mean": True},
           "cameras": {"cam0": "oops", "cam1": {"decoded": 3, "decode_ms": float("nan"), "drops": {"x": "y"}}}}
    s = summarize_stats([bad])
    assert s["workers"][0]["batches"] == NA and s["workers"][0]["stage_ms"]["inference"] == NA
    assert "cam0" not in s["cameras"]
    assert s["cameras"]["cam1"]["decoded"] == 3 and s["cameras"]["cam1"]["decode_ms"] == NA


def test_the_tracker_cost_is_weighted_by_tracked_frames() -> None:
    a, b = stats(10, 30.0, 2.0, 20, 0), stats(30, 50.0, 4.0, 60, 0)
    a["worker"] |= {"tracked_frames": 20, "track_ms_per_frame": 0.2}
    b["worker"] |= {"tracked_frames": 60, "track_ms_per_frame": 0.6}
    a["worker"]["stage_ms"]["track"] = 0.4
    (w,) = summarize_stats([a, b])["workers"]
    assert w["tracked_frames"] == 80
    assert w["track_ms_per_frame"] == pytest.approx((20 * 0.2 + 60 * 0.6) / 80)
    assert w["stage_ms"]["track"] == pytest.approx(0.4)  # only the first message carried it (per batch)
    (old,) = summarize_stats([stats(10, 30.0, 2.0, 20, 0)])["workers"]  # no tracker figures
    assert old["tracked_frames"] == 0 and old["track_ms_per_frame"] == NA and old["stage_ms"]["track"] == NA
