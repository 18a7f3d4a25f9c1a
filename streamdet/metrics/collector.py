"""The Prometheus collector: builds every ``streamdet_*`` metric family at scrape time.

Sources, each read when Prometheus scrapes (nothing is pushed): the rings' headers (decoder state
and counters, via a callable the supervisor provides), the totals of the workers' stats messages
(:class:`~streamdet.metrics.totals.StatsTotals`), the supervisor's children (restarts, phase) and
the publish proxy's rejected CurveZMQ handshakes. A source that fails is left out of that scrape
(one warning), the others are still served. Labels carry camera ids, worker and child names only,
never a URL. docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from streamdet.metrics.totals import Histogram, TotalsSnapshot
from streamdet.pipeline.ring.layout import DECODER_STATES
from streamdet.pipeline.worker.contract import PHASES

log = logging.getLogger("streamdet.metrics")

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)

T = TypeVar("T")


@dataclass(frozen=True)
class ChildInfo:
    """What the supervisor tells the collector about one child process (None: not known)."""

    restarts: int = 0
    phase: str | None = None  # workers: "loading", "warming_up" or "serving"; None for decoders
    alive: bool | None = None
    parked: bool | None = None  # given up on until a reload
    kind: str | None = None  # "decoder" or "worker"

    @classmethod
    def of(cls, value: ChildInfo | Mapping[str, Any]) -> ChildInfo:
        """A ChildInfo, or one made of a mapping with the same keys (unknown keys are ignored)."""
        if isinstance(value, ChildInfo):
            return value
        return cls(restarts=int(value.get("restarts") or 0), phase=value.get("phase"), alive=value.get("alive"),
                   parked=value.get("parked"), kind=value.get("kind"))


class DaemonCollector:
    """A ``prometheus_client`` custom collector over the daemon's sources (see the module docstring).

    ``totals`` returns the stats totals; ``rings`` maps camera id -> RingStatus (``state``,
    ``frames_decoded``, ``frames_skipped``, ``frames_behind``, ``frames_converted``, ``decode_ns``,
    ``reconnects``); ``children`` maps child name -> :class:`ChildInfo` (or a dict of its fields);
    ``rejected`` counts the CurveZMQ handshakes the publish proxy refused. Every source but
    ``totals`` is optional.
    """

    def __init__(self, totals: Callable[[], TotalsSnapshot],
                 rings: Callable[[], Mapping[str, Any]] | None = None,
                 children: Callable[[], Mapping[str, ChildInfo | Mapping[str, Any]]] | None = None,
                 rejected: Callable[[], int] | None = None) -> None:
        self.totals = totals
        self.rings = rings
        self.children = children
        self.rejected = rejected
        self._failed: set[str] = set()

    def _read(self, name: str, source: Callable[[], T] | None, default: T) -> T:
        if source is None:
            return default
        try:
            value = source()
        except Exception as exc:  # one broken source must not take the whole scrape down
            if name not in self._failed:
                self._failed.add(name)
                log.warning("metrics: could not read %s: %s", name, exc)
            return default
        self._failed.discard(name)
        return value

    def _children(self) -> dict[str, ChildInfo]:
        out: dict[str, ChildInfo] = {}
        given: Mapping[str, ChildInfo | Mapping[str, Any]] = self._read("children", self.children, {})
        for name, value in dict(given).items():
            try:
                out[str(name)] = ChildInfo.of(value)
            except (TypeError, ValueError, AttributeError) as exc:
                if f"child {name}" not in self._failed:
                    self._failed.add(f"child {name}")
                    log.warning("metrics: bad child info for %s: %s", name, exc)
        return out

    def describe(self) -> list[Metric]:
        """Nothing to declare up front: the registry then never calls collect() at registration."""
        return []

    def collect(self) -> Iterator[Metric]:
        totals = self._read("stats totals", self.totals, TotalsSnapshot())
        ring_status: Mapping[str, Any] = self._read("ring status", self.rings, {})
        rings = dict(ring_status)
        children = self._children()
        families = [*_ring_families(rings, totals), *_camera_families(totals), *_worker_families(totals, children),
                    *_child_families(children)]
        if self.rejected is not None:
            rejected = self._read("rejected handshakes", self.rejected, None)
            if rejected is not None:
                families.append(CounterMetricFamily(
                    "streamdet_publish_rejected_handshakes_total",
                    "CurveZMQ handshakes the public endpoint refused (unknown or bad client key)", value=rejected))
        yield from (f for f in families if f.samples)  # a family without samples is left out


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _one_hot(family: GaugeMetricFamily, owner: str, current: str, known: tuple[str, ...]) -> None:
    """An enum as gauges: one sample per known value (1 for ``current``, else 0), and ``current``
    too when it is not a known one."""
    for value in (known if current in known else (*known, current)):
        family.add_metric([owner, value], 1.0 if value == current else 0.0)


def _ring_families(rings: Mapping[str, Any], totals: TotalsSnapshot) -> list[Metric]:
    cam = ["camera"]
    up = _gauge("streamdet_camera_up", "1 while the camera's decoder is streaming", cam)
    state = _gauge("streamdet_camera_state", "The camera's decoder state: 1 for the current one", ["camera", "state"])
    decoded = _counter("streamdet_camera_frames_decoded_total", "Frames decoded from the source", cam)
    skipped = _counter("streamdet_camera_frames_skipped_total", "Frames skipped by the camera's max_fps", cam)
    behind = _counter("streamdet_camera_frames_behind_total",
                      "Frames of a paced file decoded but not used because the decoder was behind schedule", cam)
    converted = _counter("streamdet_camera_frames_converted_total",
                         "Frames whose pixel format or size the decoder had to convert", cam)
    decode_s = _counter("streamdet_camera_decode_seconds_total", "Time the decoder spent decoding and copying", cam)
    reconnects = _counter("streamdet_camera_reconnects_total", "Times the source was reopened", cam)
    drops = _counter("streamdet_camera_drops_total", "Frames not published, by reason: overwritten (the worker was "
                     "behind), max_fps, behind (a paced file's decoder was behind), unsent (inferred, not sent), "
                     "torn (rewritten during the device feed's copy)",
                     ["camera", "reason"])
    for name, s in rings.items():
        up.add_metric([name], 1.0 if s.state == "streaming" else 0.0)
        _one_hot(state, name, str(s.state), DECODER_STATES)
        decoded.add_metric([name], s.frames_decoded)
        skipped.add_metric([name], s.frames_skipped)
        behind.add_metric([name], s.frames_behind)
        converted.add_metric([name], s.frames_converted)
        decode_s.add_metric([name], s.decode_ns / 1e9)
        reconnects.add_metric([name], s.reconnects)
        drops.add_metric([name, "max_fps"], s.frames_skipped)
        drops.add_metric([name, "behind"], s.frames_behind)
    for name, c in sorted(totals.cameras.items()):
        drops.add_metric([name, "overwritten"], c.overwritten)
        drops.add_metric([name, "unsent"], c.unsent)
        drops.add_metric([name, "torn"], c.torn)
    return [up, state, decoded, skipped, behind, converted, decode_s, reconnects, drops]


def _camera_families(totals: TotalsSnapshot) -> list[Metric]:
    cam = ["camera"]
    inferred = _counter("streamdet_camera_frames_inferred_total", "Frames that went through the detector", cam)
    tracked = _counter("streamdet_camera_frames_tracked_only_total", "Frames published with the tracker's predicted "
                       "boxes, without the detector (detect_every)", cam)
    published = _counter("streamdet_camera_published_total", "Detection messages published", cam)
    dropped = _counter("streamdet_camera_dropped_total", "Frames not published, for any reason", cam)
    fps = _gauge("streamdet_camera_fps", "Messages published per second over the last stats interval", cam)
    latency = HistogramMetricFamily("streamdet_camera_latency_seconds",
                                    "Capture-to-publish latency (ts_publish - ts_capture) of inferred frames",
                                    labels=cam)
    for name, c in sorted(totals.cameras.items()):
        inferred.add_metric([name], c.inferred)
        tracked.add_metric([name], c.tracked_only)
        published.add_metric([name], c.published)
        dropped.add_metric([name], c.dropped)
        if c.fps is not None:
            fps.add_metric([name], c.fps)
        if c.latency_ms is not None:
            latency.add_metric([name], _buckets(c.latency_ms, scale=1e-3), c.latency_ms.total / 1000.0)
    return [inferred, tracked, published, dropped, fps, latency]


def _buckets(h: Histogram, scale: float = 1.0) -> list[tuple[str, float]]:
    return [*((floatToGoString(e * scale), n) for e, n in zip(h.edges, h.counts, strict=True)), ("+Inf", h.count)]


def _batch_histogram(sizes: Mapping[int, int]) -> Histogram:
    counts = [sum(n for size, n in sizes.items() if size <= edge) for edge in BATCH_SIZE_BUCKETS]
    return Histogram(tuple(map(float, BATCH_SIZE_BUCKETS)), counts, float(sum(s * n for s, n in sizes.items())),
                     sum(sizes.values()))


def _worker_families(totals: TotalsSnapshot, children: Mapping[str, ChildInfo]) -> list[Metric]:
    w = ["worker"]
    batch = HistogramMetricFamily("streamdet_worker_batch_size", "Frames per inferred batch", labels=w)
    stage = _counter("streamdet_worker_stage_seconds_total",
                     "Time spent per stage (stages overlap in the pipelined worker)", ["worker", "stage"])
    queue = _gauge("streamdet_worker_queue_depth", "Frames waiting in the worker's hand-off queues, at its last "
                   "stats message", ["worker", "queue"])
    gpu = _gauge("streamdet_worker_gpu_memory_bytes", "torch's CUDA memory on the worker's device, at its last "
                 "stats message (CUDA workers only)", ["worker", "kind"])
    phase = _gauge("streamdet_worker_phase", "The worker's phase: 1 for the current one", ["worker", "phase"])
    feed = _gauge("streamdet_worker_feed_info", "1, labelled with the worker's feed: preprocess (cpu or cuda), "
                  "pinned rings (yes, no, n/a) and CUDA graphs (graphs, eager, n/a)",
                  ["worker", "preprocess", "pinned", "graphs"])
    seen = _gauge("streamdet_worker_last_stats_timestamp_seconds",
                  "UNIX time the worker's last stats message was received", w)
    phases = {name: c.phase for name, c in children.items() if c.phase}  # the supervisor knows best
    for name, f in sorted(totals.workers.items()):
        if f.batch_sizes:
            h = _batch_histogram(f.batch_sizes)
            batch.add_metric([name], _buckets(h), h.total)
        for key, s in sorted(f.stage_seconds.items()):
            stage.add_metric([name, key], s)
        for key, n in sorted(f.queue_depth.items()):
            queue.add_metric([name, key], n)
        for key, n in sorted(f.gpu_memory_bytes.items()):
            gpu.add_metric([name, key], n)
        seen.add_metric([name], f.last_seen)
        if f.feed:
            feed.add_metric([name, f.feed["preprocess"], f.feed["pinned"], f.feed["graphs"]], 1.0)
        if f.phase is not None:
            phases.setdefault(name, f.phase)
    for name, current in sorted(phases.items()):
        _one_hot(phase, name, current, PHASES)
    return [batch, stage, queue, gpu, phase, feed, seen]


def _child_families(children: Mapping[str, ChildInfo]) -> list[Metric]:
    restarts = _counter("streamdet_child_restarts_total", "Restarts of a supervised child process", ["child"])
    up = _gauge("streamdet_child_up", "1 while the child process is running", ["child"])
    parked = _gauge("streamdet_child_parked", "1 while the supervisor has given up on the child (until a reload)",
                    ["child"])
    for name, c in sorted(children.items()):
        restarts.add_metric([name], c.restarts)
        if c.alive is not None:
            up.add_metric([name], 1.0 if c.alive else 0.0)
        if c.parked is not None:
            parked.add_metric([name], 1.0 if c.parked else 0.0)
    return [restarts, up, parked]
