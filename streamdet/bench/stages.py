"""Per-stage costs from the daemon's own stats messages, read defensively.

The worker's stats carry (when the daemon is new enough) ``msg["worker"]`` with batch counts and
mean milliseconds per batch of each stage, the tracker's mean milliseconds per tracked frame
(``track_ms_per_frame`` over ``tracked_frames``; the ``track`` stage is not part of ``publish``),
and per camera ``decoded``, ``decode_ms`` and per-reason ``drops``. Intervals are combined weighted
by their batches (worker), tracked frames (tracker) or decoded frames (camera).
A figure no message carried is reported as ``"n/a"``, so an older daemon still gives a report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

NA = "n/a"
STAGES = ("gather", "preprocess", "inference", "postprocess", "publish", "track")


def _num(value: Any) -> float | None:
    """A finite int/float (not bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


class _Weighted:
    """Weighted mean accumulator."""

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def add(self, value: float | None, weight: float | None) -> None:
        if value is not None and weight is not None and weight > 0:
            self.total += value * weight
            self.weight += weight

    def mean(self) -> float | str:
        return round(self.total / self.weight, 3) if self.weight > 0 else NA


def summarize_stats(stats_msgs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine stats messages into ``{"workers": [...], "cameras": {...}}`` (see module docstring)."""
    workers: dict[str, dict[str, Any]] = {}
    cameras: dict[str, dict[str, Any]] = {}
    for msg in stats_msgs:
        w = msg.get("worker")
        if isinstance(w, Mapping):
            name = str(w.get("name") or msg.get("source") or "worker")
            acc = workers.setdefault(name, {"device": NA, "backend": NA, "batches": 0, "frames": 0,
                                            "batch_size": _Weighted(), "track_frame": _Weighted(),
                                            "tracked_frames": 0,
                                            "stage": defaultdict(_Weighted), "seen_batches": False})
            for key in ("device", "backend"):
                if isinstance(w.get(key), str):
                    acc[key] = w[key]
            batches = _num(w.get("batches"))
            frames = _num(w.get("frames"))
            if batches is not None:
                acc["batches"] += int(batches)
                acc["seen_batches"] = True
            if frames is not None:
                acc["frames"] += int(frames)
            acc["batch_size"].add(_num(w.get("batch_size_mean")), batches)
            tracked = _num(w.get("tracked_frames"))
            if tracked is not None:
                acc["tracked_frames"] += int(tracked)
                acc["track_frame"].add(_num(w.get("track_ms_per_frame")), tracked)
            stage_ms = w.get("stage_ms")
            if isinstance(stage_ms, Mapping):
                for stage in STAGES:
                    acc["stage"][stage].add(_num(stage_ms.get(stage)), batches)
        for cam, entry in (msg.get("cameras") or {}).items():
            if not isinstance(entry, Mapping):
                continue
            c = cameras.setdefault(cam, {"decoded": 0, "decode_ms": _Weighted(), "drops": defaultdict(int),
                                         "seen_decoded": False})
            decoded = _num(entry.get("decoded"))
            if decoded is not None:
                c["decoded"] += int(decoded)
                c["seen_decoded"] = True
            c["decode_ms"].add(_num(entry.get("decode_ms")), decoded)
            drops = entry.get("drops")
            if isinstance(drops, Mapping):
                for reason, value in drops.items():
                    v = _num(value)
                    if v is not None:
                        c["drops"][str(reason)] += int(v)
    return {
        "workers": [
            {"name": name, "device": a["device"], "backend": a["backend"],
             "batches": a["batches"] if a["seen_batches"] else NA, "frames": a["frames"] if a["seen_batches"] else NA,
             "batch_size_mean": a["batch_size"].mean(),
             "tracked_frames": a["tracked_frames"], "track_ms_per_frame": a["track_frame"].mean(),
             "stage_ms": {s: a["stage"][s].mean() if s in a["stage"] else NA for s in STAGES}}
            for name, a in workers.items()
        ],
        "cameras": {
            cam: {"decoded": c["decoded"] if c["seen_decoded"] else NA, "decode_ms": c["decode_ms"].mean(),
                  "drops": dict(c["drops"]) if c["drops"] else NA}
            for cam, c in sorted(cameras.items())
        },
    }


def decode_ms_mean(summary: Mapping[str, Any]) -> float | str:
    """Mean decode milliseconds per frame over all cameras of a ``summarize_stats`` result."""
    acc = _Weighted()
    for c in summary.get("cameras", {}).values():
        acc.add(_num(c.get("decode_ms")), _num(c.get("decoded")))
    return acc.mean()
