"""Running totals accumulated from the workers' stats messages, for the Prometheus collector.

A stats message covers one interval (docs/wire.md); Prometheus wants counters that only grow. So
each message's per-interval counts and histogram buckets are added to running totals here, and
the latest gauges (fps, queue depth, GPU memory, phase) replace the previous ones. Thread-safe:
one thread feeds messages while HTTP threads take snapshots.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("streamdet.metrics")


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}: expected an integer >= 0, got {value!r}")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


@dataclass
class Histogram:
    """Cumulative bucket counts over fixed upper edges, summed over intervals; ``count`` is the
    +Inf bucket. Edges are in the unit of the message (ms for latency)."""

    edges: tuple[float, ...]
    counts: list[int]
    total: float = 0.0
    count: int = 0

    @classmethod
    def parse(cls, obj: object, what: str) -> Histogram:
        """One interval's histogram from a stats message (``{"le", "counts", "sum", "count"}``)."""
        if not isinstance(obj, Mapping):
            raise ValueError(f"{what}: expected an object, got {type(obj).__name__}")
        try:
            edges = tuple(_number(e, f"{what}.le") for e in obj["le"])
            counts = [_count(c, f"{what}.counts") for c in obj["counts"]]
            total, count = _number(obj["sum"], f"{what}.sum"), _count(obj["count"], f"{what}.count")
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{what}: expected le, counts, sum and count ({exc!r})") from None
        if (len(counts) != len(edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False))
                or any(b < a for a, b in zip(counts, counts[1:], strict=False)) or (counts and counts[-1] > count)):
            raise ValueError(f"{what}: expected increasing edges, as many non-decreasing counts, and count >= them")
        return cls(edges, counts, total, count)

    def add(self, other: Histogram) -> Histogram:
        """The sum of both; ``other`` alone when the edges differ (Prometheus sees a counter reset)."""
        if other.edges != self.edges:
            return copy.deepcopy(other)
        return Histogram(self.edges, [a + b for a, b in zip(self.counts, other.counts, strict=True)],
                         self.total + other.total, self.count + other.count)


@dataclass
class CameraFigures:
    """One camera's totals since the collector started, and the latest interval's gauges."""

    inferred: int = 0
    tracked_only: int = 0  # published with the tracker's boxes, without the detector
    published: int = 0
    dropped: int = 0
    overwritten: int = 0
    unsent: int = 0
    torn: int = 0
    fps: float | None = None
    latency_ms: Histogram | None = None


@dataclass
class WorkerFigures:
    """One worker's totals since the collector started, and the latest interval's gauges."""

    stage_seconds: dict[str, float] = field(default_factory=dict)
    batch_sizes: dict[int, int] = field(default_factory=dict)  # frames per batch -> batches
    phase: str | None = None
    queue_depth: dict[str, int] = field(default_factory=dict)
    gpu_memory_bytes: dict[str, int] = field(default_factory=dict)
    feed: dict[str, str] = field(default_factory=dict)  # preprocess (cpu|cuda), pinned, graphs, at the last message
    last_seen: float = 0.0  # UNIX time the collector received its last stats message


@dataclass
class TotalsSnapshot:
    """A consistent copy of the totals, for one scrape."""

    cameras: dict[str, CameraFigures] = field(default_factory=dict)
    workers: dict[str, WorkerFigures] = field(default_factory=dict)


class StatsTotals:
    """Accumulates stats messages (:meth:`observe`); :meth:`snapshot` copies the totals.

    A malformed part of a message (one camera, one worker field) is skipped with one warning per
    distinct problem; the rest of the message still counts.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._cameras: dict[str, CameraFigures] = {}
        self._workers: dict[str, WorkerFigures] = {}
        self._warned: set[str] = set()

    def _warn(self, problem: str) -> None:
        if problem not in self._warned and len(self._warned) < 1000:
            self._warned.add(problem)
            log.warning("metrics: ignored part of a stats message: %s", problem)

    def observe(self, msg: Mapping[str, Any]) -> None:
        """Add one stats message (other message types are ignored)."""
        if not isinstance(msg, Mapping) or msg.get("type") != "stats":
            return
        source = str(msg.get("source", "?"))
        cameras = msg.get("cameras")
        with self._lock:
            for cam, stats in (cameras.items() if isinstance(cameras, Mapping) else ()):
                try:
                    self._observe_camera(str(cam), stats)
                except (ValueError, TypeError, AttributeError) as exc:
                    self._warn(f"{source}: camera {cam}: {exc}")
            worker = msg.get("worker")
            if isinstance(worker, Mapping):
                self._observe_worker(source, worker)

    def _observe_camera(self, cam: str, stats: Mapping[str, Any]) -> None:
        what = f"cameras.{cam}"
        published = _count(stats["published"], f"{what}.published")
        dropped = _count(stats["dropped"], f"{what}.dropped")
        inferred = _count(stats.get("inferred", 0), f"{what}.inferred")
        tracked_only = _count(stats.get("tracked_only", 0), f"{what}.tracked_only")
        overwritten = _count((stats.get("drops") or {}).get("overwritten", 0), f"{what}.drops.overwritten")
        unsent = _count((stats.get("drops") or {}).get("unsent", 0), f"{what}.drops.unsent")
        torn = _count((stats.get("drops") or {}).get("torn", 0), f"{what}.drops.torn")
        fps = _number(stats["fps"], f"{what}.fps")
        hist = stats.get("latency_hist_ms")
        latency = Histogram.parse(hist, f"{what}.latency_hist_ms") if hist is not None else None
        fig = self._cameras.setdefault(cam, CameraFigures())  # only after every field parsed
        fig.published += published
        fig.dropped += dropped
        fig.inferred += inferred
        fig.tracked_only += tracked_only
        fig.overwritten += overwritten
        fig.unsent += unsent
        fig.torn += torn
        fig.fps = fps
        if latency is not None:
            fig.latency_ms = latency if fig.latency_ms is None else fig.latency_ms.add(latency)

    def _observe_worker(self, source: str, worker: Mapping[str, Any]) -> None:
        fig = self._workers.setdefault(source, WorkerFigures())
        fig.last_seen = self._clock()
        parts: list[tuple[str, Callable[[], None]]] = [
            ("stage_ms", lambda: self._add_stage_seconds(fig, worker)),
            ("batch_sizes", lambda: self._add_batch_sizes(fig, worker.get("batch_sizes"))),
            ("phase", lambda: setattr(fig, "phase", _phase(worker["phase"]))),
            ("queue_depth", lambda: setattr(fig, "queue_depth", _counts(worker["queue_depth"], "queue_depth"))),
            ("gpu_memory_bytes",
             lambda: setattr(fig, "gpu_memory_bytes", _counts(worker["gpu_memory_bytes"], "gpu_memory_bytes"))),
            ("preprocess", lambda: setattr(fig, "feed", _feed(worker))),
        ]
        for key, apply in parts:
            if key in worker:
                try:
                    apply()
                except (ValueError, TypeError, AttributeError) as exc:
                    self._warn(f"{source}: worker.{key}: {exc}")

    @staticmethod
    def _add_stage_seconds(fig: WorkerFigures, worker: Mapping[str, Any]) -> None:
        batches = _count(worker.get("batches", 0), "worker.batches")
        stage_ms = worker["stage_ms"]
        seconds = {str(stage): _number(ms, f"worker.stage_ms.{stage}") * batches / 1000.0
                   for stage, ms in stage_ms.items() if ms is not None}
        for stage, s in seconds.items():
            fig.stage_seconds[stage] = fig.stage_seconds.get(stage, 0.0) + s

    @staticmethod
    def _add_batch_sizes(fig: WorkerFigures, sizes: object) -> None:
        if not isinstance(sizes, Mapping):
            raise ValueError(f"expected an object of batch size -> batches, got {type(sizes).__name__}")
        parsed = {int(size): _count(n, f"worker.batch_sizes.{size}") for size, n in sizes.items()}
        if any(size < 1 for size in parsed):
            raise ValueError("batch sizes must be >= 1")
        for size, n in parsed.items():
            fig.batch_sizes[size] = fig.batch_sizes.get(size, 0) + n

    def snapshot(self) -> TotalsSnapshot:
        """A deep copy of the totals now."""
        with self._lock:
            return TotalsSnapshot(copy.deepcopy(self._cameras), copy.deepcopy(self._workers))


def _phase(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a phase name, got {value!r}")
    return value


def _feed(worker: Mapping[str, Any]) -> dict[str, str]:
    """The worker's feed as label values: preprocess, pinned (yes/no/n/a), graphs (graphs/eager/n/a)."""
    preprocess = worker["preprocess"]
    if preprocess not in ("cpu", "cuda"):
        raise ValueError(f"expected cpu or cuda, got {preprocess!r}")
    pinned = worker.get("pinned")
    graphs = worker.get("graphs")
    return {"preprocess": preprocess, "pinned": "n/a" if pinned is None else ("yes" if pinned else "no"),
            "graphs": "n/a" if graphs is None else str(graphs)}


def _counts(value: object, what: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected an object, got {type(value).__name__}")
    return {str(k): _count(v, f"{what}.{k}") for k, v in value.items()}
