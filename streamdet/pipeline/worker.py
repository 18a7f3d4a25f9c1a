"""Stages 3-6 in one process per device: gather frames, preprocess, infer, postprocess, publish.

Consumes: frames of its cameras from their shared-memory rings (the newest unread frame of a live
or paced camera; every frame, in order, of an unpaced file camera).
Produces: one wire message per frame (detections in the frame's source pixels) and a stats message
every ``stats_interval_s``, sent to the supervisor's publish proxy.
Runs in: a worker process (spawn context), the only kind of process that imports torch.

One batch goes through :meth:`WorkerLoop.process`, one stage per line::

    frames = gatherer.gather()          # 2 ring -> frames (at most one per camera)
    prepared = self.prepare(frames)     # 3 preprocess: YUV -> letterboxed RGB uint8 batch
    inferred = self.infer(prepared)     # 4 backend: raw predictions
    self.publish(inferred)              # 5 postprocess (NMS, Transform inverse) + 6 publish

In the daemon the same three calls run pipelined (:class:`PipelinedRunner`): one thread gathers and
preprocesses batch k+1 while another runs inference on batch k and a third postprocesses and
publishes batch k-1. The hand-offs are queues of one batch each, so nothing can pile up: a slow
stage makes the one before it wait, and live cameras then drop at the ring (latest wins) while
unpaced files wait in their decoder (lossless).

Batching: each round takes at most one frame per camera, starting from a rotating camera so that
with more cameras than ``max_batch`` every camera is served in turn. With several inference
lanes a batch holds at most cameras / lanes frames (:func:`lane_batch`), so the lanes take turns
on smaller batches: the same throughput (per-frame cost does not depend on the batch size on
CPU), less waiting per frame. A round waits up to
``max_wait_ms`` after its first frame for more cameras to deliver, then runs the batch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamdet.pipeline.pipelined import PipelinedRunner
from streamdet.pipeline.ring import Frame, FrameRing, RingStatus
from streamdet.stopflag import StopFlag

log = logging.getLogger("streamdet.worker")

IDLE_POLL_S = 0.002
STARTUP_BEAT_LIMIT_S = 600.0  # a model load + export + warm-up longer than this counts as hung
EXIT_CANNOT_START = 78  # EX_CONFIG: model, backend or device unusable; restarting would not help
EXIT_BAD_MODEL = EXIT_CANNOT_START  # the former name
STAGES = ("gather", "preprocess", "inference", "postprocess", "publish")


class ModelSection(Protocol):
    """What a worker reads of the configuration's frozen ``model`` section (streamdet.config's
    ModelConfig; described here so that pipeline/ does not import the configuration package)."""

    @property
    def weights(self) -> Path: ...
    @property
    def img_size(self) -> int | None: ...  # None: the size the checkpoint was trained at, else 640
    @property
    def conf_thres(self) -> float: ...
    @property
    def iou_thres(self) -> float: ...
    @property
    def classes(self) -> tuple[int, ...] | None: ...
    @property
    def max_det(self) -> int: ...
    @property
    def half(self) -> bool: ...
    @property
    def backend(self) -> str: ...
    @property
    def export_cache(self) -> Path | None: ...


class BatchingSection(Protocol):
    """What a worker reads of the configuration's frozen ``batching`` section."""

    @property
    def max_batch(self) -> int: ...
    @property
    def max_wait_ms(self) -> float: ...


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs, picklable for the spawn context: the configuration's
    own frozen sections, plus what the supervisor decided (cameras, device, CPU plan)."""

    name: str
    device: str
    ring_names: dict[str, str]
    model: ModelSection
    batching: BatchingSection
    publish_endpoint: str
    stats_interval_s: float
    warmup_shape: tuple[int, int] = (720, 1280)
    threads: int | None = None  # intra-op inference threads per lane; None = the backend's default
    lanes: int = 1  # batches inferred concurrently, each on its own backend instance
    pipelined: bool = True
    stuck_s: float = 30.0  # one batch inferring this long stops the heartbeat (the supervisor sees a hang)


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
    latencies_ms: list[float] = field(default_factory=list)  # one per inferred frame, published or not

    def summary(self, interval_s: float, ring_delta: dict[str, int]) -> dict[str, Any]:
        """The stats-message entry; ``ring_delta`` holds the decoder counters' growth this interval."""
        lat = np.asarray(self.latencies_ms, dtype=np.float64)
        latency: dict[str, float | None] = (
            {k: round(float(np.percentile(lat, q)), 2) for k, q in (("p50", 50), ("p95", 95), ("p99", 99))}
            if lat.size else {"p50": None, "p95": None, "p99": None}
        )
        latency["max"] = round(float(lat.max()), 2) if lat.size else None
        drops = {"overwritten": self.overwritten, "max_fps": ring_delta["skipped"], "behind": ring_delta["behind"],
                 "unsent": self.unsent}
        decoded = ring_delta["decoded"]
        return {
            "fps": round(self.published / interval_s, 2) if interval_s > 0 else 0.0,
            "inferred": int(lat.size),
            "published": self.published,
            "objects": self.objects,
            "dropped": sum(drops.values()),
            "drops": drops,
            "decoded": decoded,
            "decode_ms": round(ring_delta["decode_ns"] / decoded / 1e6, 3) if decoded else None,
            "latency_ms": latency,
            "latency_hist_ms": latency_histogram(lat),
        }


def _ring_counters(status: RingStatus) -> dict[str, int]:
    return {"decoded": status.frames_decoded, "skipped": status.frames_skipped, "behind": status.frames_behind,
            "decode_ns": status.decode_ns}


def _final_counters(final: dict[str, Any]) -> dict[str, int]:
    """A released camera's decoder counters, as its live settings give them (see _ring_counters)."""
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

    def add(self, stage: str, seconds: float, frames: int = 0) -> None:
        """Time spent in ``stage``; ``frames`` > 0 also counts one inferred batch of that many frames."""
        with self._lock:
            self.seconds[stage] += seconds
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


def lane_batch(max_batch: int, cameras: int, lanes: int) -> int:
    """Frames per batch with ``lanes`` concurrent inference lanes: the cameras split evenly over
    the lanes (each lane's batch, and so each frame's wait, stays short), at most ``max_batch``."""
    return max(1, min(max_batch, math.ceil(cameras / max(1, lanes))))


class BatchGatherer:
    """Collects the next frame of each camera into a batch (see module docstring)."""

    def __init__(self, rings: dict[str, FrameRing], max_batch: int, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rings = rings
        self.order = list(rings)
        self.last_seq = {cam: ring.resume_seq() for cam, ring in rings.items()}
        # per camera: the ring's not-written count at the last frame taken (see Frame.not_written)
        self.last_not_written = {cam: ring.not_written() for cam, ring in rings.items()}
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.clock = clock
        self.sleep = sleep
        self._start = 0

    def set_rings(self, rings: dict[str, FrameRing], max_batch: int) -> None:
        """Serve another set of cameras (live reload); cameras kept keep their position in the ring."""
        kept = {cam for cam in rings if cam in self.last_seq and self.rings.get(cam) is rings[cam]}
        self.last_seq = {cam: self.last_seq[cam] if cam in kept else rings[cam].resume_seq() for cam in rings}
        self.last_not_written = {cam: self.last_not_written[cam] if cam in kept else rings[cam].not_written()
                                 for cam in rings}
        self.rings = rings
        self.order = list(rings)
        self.max_batch = max_batch
        self._start = 0

    def _poll(self, batch: list[Frame], taken: set[str]) -> None:
        n = len(self.order)
        for k in range(n):
            if len(batch) >= self.max_batch:
                return
            cam = self.order[(self._start + k) % n]
            if cam in taken:
                continue
            frame = self.rings[cam].read_next(self.last_seq[cam])
            if frame is not None:
                self.last_seq[cam] = frame.seq
                frame.skipped = max(0, frame.not_written - self.last_not_written.get(cam, frame.not_written))
                self.last_not_written[cam] = frame.not_written
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


@dataclass
class PreparedBatch:
    """Stage 3's output: the frames, their model-input batch and each frame's geometry."""

    frames: list[Frame]
    batch: np.ndarray
    transforms: list[Any]


@dataclass
class InferredBatch:
    """Stage 4's output: the frames, their transforms and the raw predictions."""

    frames: list[Frame]
    transforms: list[Any]
    pred: Any


class StartupBeat:
    """Heartbeats with a negative value (-wall time) while the worker loads, exports and warms up.

    The supervisor reads ``abs(value)`` for hang detection and ``value > 0`` as "serving": a first
    start that exports an ONNX model (tens of seconds on a small CPU) is not mistaken for a hang,
    and file cameras still wait for the real start. Stops by itself after STARTUP_BEAT_LIMIT_S.
    """

    def __init__(self, heartbeat: Synchronized | None, period_s: float = 1.0) -> None:
        self.heartbeat = heartbeat
        self.period_s = period_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-startup-beat", daemon=True)

    def _run(self) -> None:
        end = time.monotonic() + STARTUP_BEAT_LIMIT_S
        while self.heartbeat is not None and time.monotonic() < end:
            self.heartbeat.value = -time.time()
            if self._done.wait(self.period_s):
                return

    def __enter__(self) -> StartupBeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(2)


PHASES = ("loading", "warming_up", "serving")  # WorkerControl.phase values, in order


@dataclass
class WorkerControl:
    """What a worker shares with its supervisor, besides the stop flag (all process-shared).

    ``heartbeat``: wall time of the last sign of life (negative while loading, see StartupBeat).
    ``phase``: index into PHASES; the supervisor applies its hang timeout only while serving.
    ``generation`` and ``live_path``: the supervisor rewrites the JSON file at ``live_path`` (the
    camera rings to serve and the detection thresholds) and then increments ``generation``; the
    worker re-reads the file when the number changes. A file and a counter, not a queue: a
    worker killed in the middle of a read cannot leave a lock held for its successor.
    """

    heartbeat: Synchronized | None = None
    phase: Synchronized | None = None
    generation: Synchronized | None = None
    live_path: str | None = None

    def set_phase(self, name: str) -> None:
        if self.phase is not None:
            self.phase.value = PHASES.index(name)


def worker_main(spec: WorkerSpec, stop: StopFlag, control: WorkerControl) -> None:
    """Process entry point: attach rings, load and warm up the model, then serve until ``stop``."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: idle threads sleep
    control.set_phase("loading")
    with StartupBeat(control.heartbeat):
        ready = _start_worker(spec, control)
    if ready is None:
        return
    stages, rings, publisher = ready
    loop = WorkerLoop(spec, rings, stages, publisher, control.heartbeat, control)
    try:
        control.set_phase("serving")
        if spec.pipelined:
            PipelinedRunner(loop, lanes=len(stages.backends), stuck_s=spec.stuck_s).run(stop)
        else:
            loop.run(stop)
    finally:
        publisher.close()
        stages.close()
        loop.close_rings()


def _start_worker(spec: WorkerSpec, control: WorkerControl) -> tuple[Any, dict[str, FrameRing], Any] | None:
    """Load the stages, attach the rings, warm up, connect the publisher.

    Exits with EXIT_CANNOT_START when a restart cannot help (a bad checkpoint, a missing backend,
    a device that does not exist), after one clear log line.
    """
    from streamdet.errors import ModelError
    from streamdet.model.checkpoint import read_checkpoint
    from streamdet.model.input_size import choose_img_size
    from streamdet.pipeline.backends import DeviceUnavailable, ensure_device
    from streamdet.pipeline.publish import Publisher
    from streamdet.pipeline.registry import RegistryError
    from streamdet.pipeline.stages import build_stages

    try:
        ensure_device(spec.device)
        m = spec.model
        input_size = choose_img_size(m.img_size, read_checkpoint(m.weights).trained_img_size)
        log.info("%s: %s", spec.name, input_size.describe())
        if input_size.warning:
            log.warning("%s: %s", spec.name, input_size.warning)
        stages = build_stages(
            m.weights, device=spec.device, backend=m.backend, img_size=input_size.size, half=m.half,
            conf_thres=m.conf_thres, iou_thres=m.iou_thres, max_det=m.max_det, classes=m.classes,
            threads=spec.threads, cache_dir=Path(m.export_cache) if m.export_cache else None,
            lanes=spec.lanes if spec.pipelined else 1,
        )
    except (ModelError, ValueError, RegistryError, DeviceUnavailable) as exc:
        log.error("%s cannot start: %s", spec.name, exc)
        raise SystemExit(EXIT_CANNOT_START) from exc
    rings = {}
    for cam, name in spec.ring_names.items():
        try:
            rings[cam] = FrameRing.attach(name)
        except FileNotFoundError:  # released since this start was decided (the camera finished for good)
            log.info("%s: camera %s has no ring any more (it finished); not attached", spec.name, cam)
    try:
        control.set_phase("warming_up")
        t0 = time.monotonic()
        stages.warmup([spec.warmup_shape], min(spec.batching.max_batch, max(1, len(rings))))
        log.info("%s ready on %s: %d cameras, backend %s, %d inference lane(s) of %s thread(s), warm-up %.1f s",
                 spec.name, spec.device, len(rings), stages.backend.name, len(stages.backends),
                 spec.threads or "default", time.monotonic() - t0)
        return stages, rings, Publisher(spec.publish_endpoint)
    except BaseException:
        stages.close()
        for ring in rings.values():
            ring.close()
        raise


class WorkerLoop:
    """One worker's stages and counters, separate from process set-up so tests can drive it.

    ``stages`` is a :class:`streamdet.pipeline.stages.Stages` (preprocessor, backend,
    postprocessor); ``publisher`` has ``send(msg) -> bool`` and is used from one thread only.
    """

    def __init__(self, spec: WorkerSpec, rings: dict[str, FrameRing], stages: Any, publisher: Any,
                 heartbeat: Synchronized | None = None, control: WorkerControl | None = None) -> None:
        self.spec = spec
        self.rings = rings  # replaced, never mutated: other threads may iterate the old dict
        self.stages = stages
        self.publisher = publisher
        self.heartbeat = heartbeat
        self.control = control
        self._generation = 0
        self._unsent: dict[str, int] = {}  # camera -> frames not published since its last message
        self._retired: list[tuple[float, FrameRing]] = []  # detached rings, closed once no batch can use them
        # cameras that finished for good, whose ring the supervisor released: their final status
        # (from the live settings), reported in the stats messages in place of a ring's
        self.finished: dict[str, dict[str, Any]] = {}
        self.gatherer = BatchGatherer(rings, lane_batch(spec.batching.max_batch, len(rings), len(stages.backends)),
                                      spec.batching.max_wait_ms / 1000.0)
        self.names = stages.names
        self.stats = {cam: CameraStats() for cam in rings}
        self.timer = StageTimer()
        self._ring_base = {cam: _ring_counters(ring.status()) for cam, ring in rings.items()}
        self._stats_started = time.monotonic()

    # -- live changes from the supervisor (reload) ----------------------------------------------

    def apply_live_changes(self) -> bool:
        """Re-read the supervisor's live settings if they changed (feeder thread); True if applied.

        Cameras: rings to attach or detach (the others are not touched, their seq keeps counting).
        Thresholds: the postprocessor's conf/iou/classes/max_det, effective from the next batch.
        """
        c = self.control
        if c is None or c.generation is None or c.live_path is None or c.generation.value == self._generation:
            return False
        generation = c.generation.value
        try:
            live = json.loads(Path(c.live_path).read_text())
        except (OSError, ValueError) as exc:
            log.error("%s: cannot read live settings %s: %s", self.spec.name, c.live_path, exc)
            self._generation = generation
            return False
        self._generation = generation
        self._apply_thresholds(live.get("thresholds") or {})
        self.finished = dict(live.get("finished") or {})
        self._apply_cameras(dict(live.get("cameras") or {}))
        return True

    def _apply_thresholds(self, t: dict[str, Any]) -> None:
        post = getattr(self.stages, "postprocessor", None)
        if post is None or not t:
            return
        post.conf_thres = float(t["conf_thres"])
        post.iou_thres = float(t["iou_thres"])
        post.classes = list(t["classes"]) if t.get("classes") is not None else None
        post.max_det = int(t["max_det"])

    def _apply_cameras(self, wanted: dict[str, str]) -> None:
        if not wanted and not self.rings:
            return
        current = self.rings
        rings = {cam: ring for cam, ring in current.items() if cam in wanted and ring.name == wanted[cam]}
        now = time.monotonic()
        for cam, ring in current.items():
            if rings.get(cam) is not ring:
                self._retired.append((now, ring))
                log.info("%s: camera %s detached", self.spec.name, cam)
        for cam, name in wanted.items():
            if cam in rings:
                continue
            try:
                ring = FrameRing.attach(name)
            except (OSError, ValueError) as exc:
                log.error("%s: cannot attach camera %s (ring %s): %s", self.spec.name, cam, name, exc)
                continue
            rings[cam] = ring
            self._ring_base[cam] = _ring_counters(ring.status())
            log.info("%s: camera %s attached", self.spec.name, cam)
        self.stats = {cam: self.stats.get(cam) or CameraStats() for cam in [*rings, *self.finished]}
        self.rings = rings
        self.gatherer.set_rings(rings, lane_batch(self.spec.batching.max_batch, len(rings), len(self.stages.backends)))

    def close_retired(self, min_age_s: float = 10.0) -> None:
        """Close detached rings that no batch in flight can still refer to."""
        now = time.monotonic()
        keep = []
        for t, ring in self._retired:
            if now - t >= min_age_s:
                ring.close()
            else:
                keep.append((t, ring))
        self._retired = keep

    def close_rings(self) -> None:
        for ring in self.rings.values():
            ring.close()
        self.close_retired(0.0)

    def beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.value = time.time()

    # -- the stages, one method each -----------------------------------------------------------

    def gather(self, stop: StopFlag | None = None) -> list[Frame]:
        """Stage 2 -> 3 hand-off: the next batch of frames (empty when none is ready)."""
        self.apply_live_changes()
        t0 = time.perf_counter()
        frames = self.gatherer.gather(stop)
        if frames:
            self.timer.add("gather", time.perf_counter() - t0)
        return frames

    def prepare(self, frames: list[Frame]) -> PreparedBatch:
        """Stage 3: letterbox every frame into one model-input batch (colour conversion happens here)."""
        t0 = time.perf_counter()
        images = [f.to_image() for f in frames]
        batch, transforms = self.stages.preprocess(images, [(f.src_height, f.src_width) for f in frames])
        self.timer.add("preprocess", time.perf_counter() - t0)
        return PreparedBatch(frames, batch, transforms)

    def infer(self, prepared: PreparedBatch, lane: int = 0) -> InferredBatch:
        """Stage 4: the backend's raw predictions for the batch (on inference lane ``lane``)."""
        t0 = time.perf_counter()
        pred = self.stages.infer(prepared.batch, lane)
        self.timer.add("inference", time.perf_counter() - t0, frames=len(prepared.frames))
        return InferredBatch(prepared.frames, prepared.transforms, pred)

    def publish(self, inferred: InferredBatch) -> None:
        """Stage 5 (NMS, boxes to source pixels) and stage 6 (one message per frame)."""
        from streamdet.errors import WireError
        from streamdet.pipeline.postprocess import detection_records
        from streamdet.wire import detection_message

        t0 = time.perf_counter()
        dets = self.stages.postprocess(inferred.pred, inferred.transforms)
        t1 = time.perf_counter()
        self.timer.add("postprocess", t1 - t0)
        rings, all_stats = self.rings, self.stats
        for frame, det in zip(inferred.frames, dets, strict=True):
            ring = rings.get(frame.camera)
            if ring is None:
                continue  # the camera was removed by a reload while this batch was in flight
            stats = all_stats.get(frame.camera) or all_stats.setdefault(frame.camera, CameraStats())
            # every frame of this camera not published since its previous message, whatever the reason
            dropped = frame.dropped + frame.skipped + self._unsent.pop(frame.camera, 0)
            ts_publish = time.time()
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
                    dropped=dropped,
                    detections=detection_records(det, self.names),
                )
                sent = self.publisher.send(msg)
            except WireError as exc:
                log.warning("%s: frame %d not published: %s", frame.camera, frame.frame_index, exc)
                sent = False
            if sent:
                stats.published += 1
                stats.objects += len(msg["detections"])
            else:
                stats.unsent += 1
                self._unsent[frame.camera] = dropped + 1  # counted in the camera's next message
            stats.overwritten += frame.dropped
            stats.latencies_ms.append((ts_publish - frame.ts_capture) * 1000.0)
        self.timer.add("publish", time.perf_counter() - t1)

    def process(self, frames: list[Frame]) -> None:
        """The whole per-batch path, sequentially (what the pipelined runner overlaps)."""
        prepared = self.prepare(frames)
        inferred = self.infer(prepared)
        self.publish(inferred)

    # -- loops ---------------------------------------------------------------------------------

    def run(self, stop: StopFlag) -> None:
        """Serve sequentially until ``stop`` (tests; ``pipelined: false``)."""
        while not stop.is_set():
            self.beat()
            frames = self.gather(stop)
            if frames:
                self.process(frames)
            else:
                time.sleep(IDLE_POLL_S)
            self.maybe_publish_stats()

    def maybe_publish_stats(self, queue_depth: Callable[[], dict[str, int]] | None = None) -> None:
        """Send the stats message when the interval is over; ``queue_depth`` (the pipelined
        runner's) tells how many frames wait in its hand-off queues."""
        if time.monotonic() - self._stats_started >= self.spec.stats_interval_s:
            self.publish_stats(queue_depth() if queue_depth is not None else None)

    def publish_stats(self, queue_depth: dict[str, int] | None = None) -> None:
        from streamdet.wire import stats_message

        now = time.monotonic()
        interval = now - self._stats_started
        cameras = {}
        all_stats = self.stats
        for cam, ring in self.rings.items():
            status = ring.status()
            counters = _ring_counters(status)
            base = self._ring_base.get(cam, counters)
            delta = {k: max(0, counters[k] - base[k]) for k in counters}
            self._ring_base[cam] = counters
            entry = (all_stats.get(cam) or CameraStats()).summary(interval, delta)
            entry["state"] = status.state
            entry["reconnects"] = status.reconnects
            if status.last_error:  # already redacted by the decoder; kept until the next error
                entry["last_error"] = status.last_error
                entry["last_error_ts"] = round(status.error_time, 3)
            cameras[cam] = entry
        for cam, final in self.finished.items():
            if cam not in cameras:
                cameras[cam] = self._final_entry(cam, final, all_stats.get(cam), interval)
        worker = {"name": self.spec.name, "device": self.spec.device, "backend": self.stages.backend.name,
                  "threads": self.spec.threads, "lanes": len(self.stages.backends), **self.timer.summary()}
        if queue_depth is not None:
            worker["queue_depth"] = dict(queue_depth)
        memory = gpu_memory(self.spec.device)
        if memory is not None:
            worker["gpu_memory_bytes"] = memory
        self.publisher.send(stats_message(ts=time.time(), source=self.spec.name, interval_s=round(interval, 3),
                                          cameras=cameras, worker=worker))
        self.stats = {cam: CameraStats() for cam in [*self.rings, *self.finished]}
        self.timer.reset()
        self._stats_started = now
        self.close_retired()

    def _final_entry(self, cam: str, final: dict[str, Any], stats: CameraStats | None,
                     interval: float) -> dict[str, Any]:
        """The stats entry of a camera whose ring was released: what this interval still counted,
        and its final state, counters and error."""
        counters = _final_counters(final)
        base = self._ring_base.get(cam, counters)
        self._ring_base[cam] = counters
        entry = (stats or CameraStats()).summary(interval, {k: max(0, counters[k] - base[k]) for k in counters})
        entry["state"] = str(final.get("state") or "failed")
        entry["reconnects"] = int(final.get("reconnects") or 0)
        if final.get("last_error"):
            entry["last_error"] = str(final["last_error"])
            entry["last_error_ts"] = round(float(final.get("error_time") or 0.0), 3)
        return entry
