"""Stage 4: the worker, one process per device.

Consumes: the newest unread frame of each of its cameras, from their shared-memory rings.
Produces: one wire message per frame (detections in the frame's own pixels) and a stats message
every ``stats_interval_s``, sent to the supervisor's publish proxy.
Runs in: a worker process (spawn context), the only kind of process that imports torch.

Batching: each round takes at most one frame per camera (the newest; older unread frames are
counted as dropped by the ring), starting from a rotating camera so that with more cameras than
``max_batch`` every camera is served in turn. A round waits up to ``max_wait_ms`` after its first
frame for more cameras to deliver, then runs the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized

import numpy as np

from streamdet.pipeline.ring import Frame, FrameRing
from streamdet.stopflag import StopFlag

log = logging.getLogger("streamdet.worker")

IDLE_POLL_S = 0.002
EXIT_BAD_MODEL = 78  # EX_CONFIG: the model cannot be loaded; restarting would not help


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, picklable for the spawn context."""

    name: str
    device: str
    ring_names: dict[str, str]
    weights: str
    img_size: int
    conf_thres: float
    iou_thres: float
    max_det: int
    classes: tuple[int, ...] | None
    half: bool
    max_batch: int
    max_wait_ms: float
    publish_endpoint: str
    stats_interval_s: float
    warmup_shape: tuple[int, int] = (720, 1280)


@dataclass
class CameraStats:
    """Per-camera counters over one stats interval."""

    published: int = 0
    dropped: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self, interval_s: float) -> dict:
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        latency = (
            {"p50": round(float(np.percentile(lat, 50)), 2), "p95": round(float(np.percentile(lat, 95)), 2),
             "max": round(float(lat.max()), 2)}
            if lat.size
            else {"p50": None, "p95": None, "max": None}
        )
        return {
            "fps": round(self.published / interval_s, 2) if interval_s > 0 else 0.0,
            "published": self.published,
            "dropped": self.dropped,
            "latency_ms": latency,
        }


class BatchGatherer:
    """Collects the newest unread frame of each camera into a batch (see module docstring)."""

    def __init__(self, rings: dict[str, FrameRing], max_batch: int, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rings = rings
        self.order = list(rings)
        self.last_seq = {cam: ring.status().latest_seq for cam, ring in rings.items()}
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.sleep = sleep
        self._start = 0

    def _poll(self, batch: list[Frame], taken: set[str]) -> None:
        n = len(self.order)
        for k in range(n):
            if len(batch) >= self.max_batch:
                return
            cam = self.order[(self._start + k) % n]
            if cam in taken:
                continue
            frame = self.rings[cam].read_latest(self.last_seq[cam])
            if frame is not None:
                self.last_seq[cam] = frame.seq
                batch.append(frame)
                taken.add(cam)

    def gather(self, stop: StopFlag | None = None) -> list[Frame]:
        """One batch: empty if no camera has a new frame right now."""
        batch: list[Frame] = []
        taken: set[str] = set()
        self._poll(batch, taken)
        if batch and len(batch) < min(self.max_batch, len(self.order)) and self.max_wait_s > 0:
            deadline = self.clock() + self.max_wait_s
            while len(batch) < min(self.max_batch, len(self.order)) and self.clock() < deadline:
                if stop is not None and stop.is_set():
                    break
                self.sleep(min(IDLE_POLL_S, max(0.0, deadline - self.clock())))
                self._poll(batch, taken)
        if self.order:
            self._start = (self._start + len(batch)) % len(self.order)
        return batch


def worker_main(spec: WorkerSpec, stop: StopFlag, heartbeat: Synchronized) -> None:
    """Process entry point: attach rings, load and warm up the model, then serve until ``stop``."""
    from streamdet.detector import Detector
    from streamdet.errors import ModelError
    from streamdet.pipeline.publish import Publisher

    try:
        detector = Detector(
            spec.weights,
            device=spec.device,
            img_size=spec.img_size,
            half=spec.half,
            conf_thres=spec.conf_thres,
            iou_thres=spec.iou_thres,
            max_det=spec.max_det,
            classes=spec.classes,
        )
    except (ModelError, ValueError) as exc:
        log.error("%s cannot load the model: %s", spec.name, exc)
        raise SystemExit(EXIT_BAD_MODEL) from exc
    rings = {cam: FrameRing.attach(name) for cam, name in spec.ring_names.items()}
    publisher = None
    try:
        t0 = time.monotonic()
        detector.warmup([spec.warmup_shape], min(spec.max_batch, max(1, len(rings))))
        log.info("%s ready on %s: %d cameras, warm-up %.1f s", spec.name, spec.device, len(rings),
                 time.monotonic() - t0)
        publisher = Publisher(spec.publish_endpoint)
        WorkerLoop(spec, rings, detector, publisher, heartbeat).run(stop)
    finally:
        if publisher is not None:
            publisher.close()
        for ring in rings.values():
            ring.close()


class WorkerLoop:
    """The serving loop of one worker, separate from process set-up so tests can drive it."""

    def __init__(self, spec: WorkerSpec, rings: dict[str, FrameRing], detector, publisher,
                 heartbeat: Synchronized | None = None) -> None:
        self.spec = spec
        self.rings = rings
        self.detector = detector
        self.publisher = publisher
        self.heartbeat = heartbeat
        self.gatherer = BatchGatherer(rings, spec.max_batch, spec.max_wait_ms / 1000.0)
        self.stats = {cam: CameraStats() for cam in rings}
        self.names = detector.names
        self._stats_started = time.monotonic()

    def beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.value = time.time()

    def run(self, stop: StopFlag) -> None:
        while not stop.is_set():
            self.beat()
            batch = self.gatherer.gather(stop)
            if batch:
                self.process(batch)
            else:
                time.sleep(IDLE_POLL_S)
            if time.monotonic() - self._stats_started >= self.spec.stats_interval_s:
                self.publish_stats()

    def process(self, batch: list[Frame]) -> None:
        """Detect on one batch and publish one message per frame."""
        from streamdet.errors import WireError
        from streamdet.pipeline.postprocess import detection_records
        from streamdet.wire import detection_message

        dets = self.detector([f.image for f in batch])
        for frame, det in zip(batch, dets, strict=True):
            ring = self.rings[frame.camera]
            sx = frame.src_width / frame.width
            sy = frame.src_height / frame.height
            if sx != 1.0 or sy != 1.0:  # the decoder downscaled an oversize frame; report source pixels
                det[:, [0, 2]] *= sx
                det[:, [1, 3]] *= sy
            ts_publish = time.time()
            stats = self.stats[frame.camera]
            try:  # a non-finite score breaks the contract; one bad message never stops the worker
                msg = detection_message(
                    camera=frame.camera,
                    seq=ring.next_message_seq(),
                    frame=frame.frame_index,
                    pts=frame.pts,
                    ts_capture=frame.ts_capture,
                    ts_publish=ts_publish,
                    width=frame.src_width,
                    height=frame.src_height,
                    dropped=frame.dropped,
                    detections=detection_records(det, self.names),
                )
                sent = self.publisher.send(msg)
            except WireError as exc:
                log.warning("%s: frame %d not published: %s", frame.camera, frame.frame_index, exc)
                sent = False
            if sent:
                stats.published += 1
            stats.dropped += frame.dropped
            stats.latencies_ms.append((ts_publish - frame.ts_capture) * 1000.0)

    def publish_stats(self) -> None:
        from streamdet.wire import stats_message

        now = time.monotonic()
        interval = now - self._stats_started
        cameras = {}
        for cam, ring in self.rings.items():
            status = ring.status()
            entry = self.stats[cam].summary(interval)
            entry["state"] = status.state
            entry["reconnects"] = status.reconnects
            cameras[cam] = entry
        self.publisher.send(stats_message(ts=time.time(), source=self.spec.name, interval_s=round(interval, 3),
                                          cameras=cameras))
        self.stats = {cam: CameraStats() for cam in self.rings}
        self._stats_started = now
