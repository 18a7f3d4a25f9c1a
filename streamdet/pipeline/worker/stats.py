"""Counters of one stats interval: per camera (published, drops, latency) and per stage (time, batches)."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamdet.pipeline.ring.layout import RingStatus

STAGES = ("gather", "preprocess", "inference", "postprocess", "publish", "track")
"""``track``: the tracker's step (``CameraTracks.step``) of each published frame; it runs inside the
publish stage but is timed apart, and ``publish`` excludes it, so the stages' times add up."""


LATENCY_BUCKETS_MS = (10, 25, 50, 100, 150, 200, 300, 500, 1000, 2000)
"""Upper edges (ms) of the stats message's latency histogram; the +Inf bucket is its ``count``."""


def latency_histogram(latencies_ms: np.ndarray) -> dict[str, Any]:
    """Cumulative histogram of one interval's latencies: ``counts[i]`` frames took at most
    ``le[i]`` ms; ``count`` is the +Inf bucket. Fixed edges, so intervals and workers add up."""
    ordered = np.sort(latencies_ms)
    counts = np.searchsorted(ordered, np.asarray(LATENCY_BUCKETS_MS, dtype=np.float64), side="right")
    return {"le": list(LATENCY_BUCKETS_MS), "counts": [int(c) for c in counts],
            "sum": round(float(ordered.sum()), 3), "count": int(ordered.size)}


@dataclass
class CameraStats:
    """Per-camera counters over one stats interval."""

    published: int = 0
    overwritten: int = 0  # frames the ring overwrote before the worker took them
    unsent: int = 0  # frames inferred but not published (the message could not be built or sent)
    objects: int = 0  # detections in the published messages (objects per frame = objects / published)
    torn: int = 0  # frames the decoder rewrote while the device feed copied them (dropped)
    tracked_only: int = 0  # frames published with the tracker's boxes, without the detector (detect_every)
    latencies_ms: list[float] = field(default_factory=list)  # per frame inferred or tracked only, sent or not

    def summary(self, interval_s: float, ring_delta: dict[str, int]) -> dict[str, Any]:
        """The stats-message entry; ``ring_delta`` holds the decoder counters' growth this interval."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        latency: dict[str, float | None] = (
            {k: round(float(np.percentile(lat, q)), 2) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}
            if lat.size else {"p50": None, "p95": None, "p99": None}
        )
        latency["max"] = round(float(lat.max()), 2) if lat.size else None
        drops = {"overwritten": self.overwritten, "max_fps": ring_delta["skipped"], "behind": ring_delta["behind"],
                 "unsent": self.unsent, "torn": self.torn}
        decoded = ring_delta["decoded"]
        return {
            "fps": round(self.published / interval_s, 2) if interval_s > 0 else 0.0,
            "inferred": int(lat.size) - self.tracked_only,
            "tracked_only": self.tracked_only,
            "published": self.published,
            "objects": self.objects,
            "dropped": sum(drops.values()),
            "drops": drops,
            "decoded": decoded,
            "decode_ms": round(ring_delta["decode_ns"] / decoded / 1e6, 3) if decoded else None,
            "latency_ms": latency,
            "latency_hist_ms": latency_histogram(lat),
        }


def ring_counters(status: RingStatus) -> dict[str, int]:
    return {"decoded": status.frames_decoded, "skipped": status.frames_skipped, "behind": status.frames_behind,
            "decode_ns": status.decode_ns}


def final_counters(final: dict[str, Any]) -> dict[str, int]:
    """A released camera's decoder counters, as its live settings give them (see ring_counters)."""
    return {k: int(final.get(k) or 0) for k in ("decoded", "skipped", "behind", "decode_ns")}


class StageTimer:
    """Seconds spent per stage, and batches/frames inferred, over one stats interval (thread-safe:
    the stages run in different threads, inference in several)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.seconds = dict.fromkeys(STAGES, 0.0)
            self.batches = 0
            self.frames = 0
            self.batch_sizes: dict[int, int] = {}  # frames per inferred batch -> batches of that size
            self.tracked_frames = 0  # frames stepped through a camera's tracker (the "track" stage)

    def add(self, stage: str, seconds: float, frames: int = 0, tracked: int = 0) -> None:
        """Time spent in ``stage``; ``frames`` > 0 also counts one inferred batch of that many frames,
        ``tracked`` the frames a ``track`` time covers (for its cost per frame)."""
        with self._lock:
            self.seconds[stage] += seconds
            self.tracked_frames += tracked
            if frames:
                self.batches += 1
                self.frames += frames
                self.batch_sizes[frames] = self.batch_sizes.get(frames, 0) + 1

    def summary(self) -> dict[str, Any]:
        with self._lock:
            n = self.batches
            return {
                "batches": n,
                "frames": self.frames,
                "batch_size_mean": round(self.frames / n, 3) if n else None,
                "batch_size_max": max(self.batch_sizes) if self.batch_sizes else None,
                "batch_sizes": {str(size): self.batch_sizes[size] for size in sorted(self.batch_sizes)},
                "stage_ms": {k: (round(v * 1000.0 / n, 3) if n else None) for k, v in self.seconds.items()},
                "tracked_frames": self.tracked_frames,
                "track_ms_per_frame": (round(self.seconds["track"] * 1000.0 / self.tracked_frames, 4)
                                       if self.tracked_frames else None),
            }


def gpu_memory(device: str) -> dict[str, int] | None:
    """torch's allocated and reserved bytes on a CUDA ``device``; None on any other device, and
    while torch has not initialised CUDA in this process (asking would create a CUDA context)."""
    if not device.startswith("cuda"):
        return None
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return {"allocated": int(torch.cuda.memory_allocated(device)), "reserved": int(torch.cuda.memory_reserved(device))}


