"""The worker's per-batch steps: gather, prepare, infer, postprocess, publish (:class:`WorkerLoop`).

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

import logging
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import numpy as np

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.types import Frame
from streamdet.pipeline.worker.contract import WorkerControl, WorkerLive, WorkerSpec
from streamdet.pipeline.worker.feed import Feed, HostFeed, InferredBatch, PreparedBatch
from streamdet.pipeline.worker.gather import IDLE_POLL_S, BatchGatherer, lane_batch
from streamdet.pipeline.worker.stats import CameraStats, StageTimer, final_counters, gpu_memory, ring_counters
from streamdet.pipeline.worker.tracks import CameraTracks
from streamdet.stopflag import StopFlag

log = logging.getLogger("streamdet.worker")

_NO_DETECTIONS = np.zeros((0, 6), np.float32)


class WorkerLoop:
    """One worker's stages and counters, separate from process set-up so tests can drive it.

    ``stages`` is a :class:`streamdet.pipeline.stages.Stages` (preprocessor, backend,
    postprocessor); ``publisher`` has ``send(msg) -> bool`` and is used from one thread only.
    """

    def __init__(self, spec: WorkerSpec, rings: dict[str, FrameRing], stages: Any, publisher: Any,
                 heartbeat: Synchronized | None = None, control: WorkerControl | None = None,
                 feed: Feed | None = None) -> None:
        self.spec = spec
        self.feed: Feed = feed if feed is not None else HostFeed(stages)
        self.tracks = CameraTracks()
        self.rings = rings  # replaced, never mutated: other threads may iterate the old dict
        self.stages = stages
        self.publisher = publisher
        self.heartbeat = heartbeat
        self.control = control
        self._live = control.live.reader(WorkerLive.from_json, spec.name) if control and control.live else None
        self._unsent: dict[str, int] = {}  # camera -> frames not published since its last message
        self._retired: list[tuple[float, FrameRing]] = []  # detached rings, closed once no batch can use them
        # cameras that finished for good, whose ring the supervisor released: their final status
        # (from the live settings), reported in the stats messages in place of a ring's
        self.finished: dict[str, dict[str, Any]] = {}
        self.gatherer = BatchGatherer(rings, lane_batch(spec.batching.max_batch, len(rings), len(stages.backends)),
                                      spec.batching.max_wait_ms / 1000.0, take=self._take)
        self.names = stages.names
        self.stats = {cam: CameraStats() for cam in rings}
        self.timer = StageTimer()
        self._torn_reported = 0  # the feed's torn count at the last stats message
        self._ring_base = {cam: ring_counters(ring.status()) for cam, ring in rings.items()}
        self._stats_started = time.monotonic()

    # -- live changes from the supervisor (reload) ----------------------------------------------

    def apply_live_changes(self) -> bool:
        """Apply the supervisor's live settings if they changed (feeder thread); True if applied.

        Cameras: rings to attach or detach (the others are not touched, their seq keeps counting).
        NMS settings: swapped whole, effective from the next batch. Tracking: per camera, the
        tracks kept. Finished cameras: their final status in the stats messages.
        """
        live = self._live.poll() if self._live is not None else None
        if live is None:
            return False
        post = getattr(self.stages, "postprocessor", None)
        if post is not None:
            post.settings = live.nms
        self.tracks.configure(live.tracking)
        self.finished = dict(live.finished)
        self._apply_cameras(dict(live.cameras))
        return True

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
            self._ring_base[cam] = ring_counters(ring.status())
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
                self.feed.forget(ring)
                ring.close()
            else:
                keep.append((t, ring))
        self._retired = keep

    def close_rings(self) -> None:
        for ring in self.rings.values():
            self.feed.forget(ring)
            ring.close()
        self.close_retired(0.0)

    def beat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.value = time.time()

    # -- the stages, one method each -----------------------------------------------------------

    def _take(self, camera: str, ring: FrameRing, after_seq: int) -> Frame | None:
        """The gatherer's pick: the feed's take, told whether the detector will run on the frame
        (``detect_every``; a frame it skips is taken without its pixels), marked with that."""
        detect = self.tracks.will_detect(camera)
        frame = self.feed.take(camera, ring, after_seq, detect)
        if frame is not None:
            frame.detect = self.tracks.detect(camera)  # the same answer, and the camera's count moves on
        return frame

    def gather(self, stop: StopFlag | None = None) -> list[Frame]:
        """Stage 2 -> 3 hand-off: the next batch of frames (empty when none is ready)."""
        self.apply_live_changes()
        t0 = time.perf_counter()
        frames = self.gatherer.gather(stop)
        if frames:
            self.timer.add("gather", time.perf_counter() - t0)
        return frames

    def prepare(self, frames: list[Frame]) -> PreparedBatch:
        """Stage 3: the model-input batch of the frames the detector runs on (the feed letterboxes;
        colour conversion happens here). The others (``detect_every``) ride along as ``tracked_only``;
        frames the decoder rewrote while the device feed copied them come back as ``torn``."""
        t0 = time.perf_counter()
        detect = [f for f in frames if f.detect]
        skipped = [f for f in frames if not f.detect]
        prepared = self.feed.prepare(detect) if detect else PreparedBatch([], None, [])
        if skipped:
            self.feed.skip(skipped)
            prepared.tracked_only = skipped
        self.timer.add("preprocess", time.perf_counter() - t0)
        return prepared

    def infer(self, prepared: PreparedBatch, lane: int = 0) -> InferredBatch:
        """Stage 4: the backend's raw predictions for the batch (on inference lane ``lane``)."""
        t0 = time.perf_counter()
        if prepared.frames:
            inferred = self.feed.infer(prepared, lane)
            self.timer.add("inference", time.perf_counter() - t0, frames=len(prepared.frames))
        else:
            inferred = InferredBatch([], [], None)
        inferred.torn = prepared.torn
        inferred.tracked_only = prepared.tracked_only
        return inferred

    def postprocess(self, inferred: InferredBatch) -> list[np.ndarray]:
        """Stage 5: NMS and each frame's boxes in its source pixels (host arrays)."""
        t0 = time.perf_counter()
        dets = self.feed.detections(inferred)
        self.timer.add("postprocess", time.perf_counter() - t0)
        return dets

    def publish(self, inferred: InferredBatch) -> None:
        """Stage 5 (:meth:`postprocess`) and stage 6 (:meth:`send`): one message per frame."""
        for frame in inferred.torn:  # dropped, never published: counted here, in the camera's order
            stats = self.stats.get(frame.camera) or self.stats.setdefault(frame.camera, CameraStats())
            stats.torn += 1
            stats.overwritten += frame.dropped
            self._unsent[frame.camera] = self._unsent.get(frame.camera, 0) + frame.dropped + frame.skipped + 1
        dets: list[np.ndarray | None] = list(self.postprocess(inferred)) if inferred.frames else []
        frames = inferred.frames + inferred.tracked_only
        if frames:
            self.send(frames, dets + [None] * len(inferred.tracked_only))

    def send(self, frames: list[Frame], dets: list[np.ndarray | None]) -> None:
        """Stage 6: one wire message per frame, in order; counts what was published and what was not.
        ``None`` in ``dets``: a frame the detector skipped (its camera's tracker predicts its boxes)."""
        from streamdet.errors import WireError
        from streamdet.wire import DetectionMessage

        t1 = time.perf_counter()
        track_s, n_tracked = 0.0, 0  # the tracker's share, timed apart ("track") and left out of "publish"
        rings, all_stats = self.rings, self.stats
        for frame, det in zip(frames, dets, strict=True):
            ring = rings.get(frame.camera)
            if ring is None:
                continue  # the camera was removed by a reload while this batch was in flight
            stats = all_stats.get(frame.camera) or all_stats.setdefault(frame.camera, CameraStats())
            # every frame of this camera not published since its previous message, whatever the reason
            dropped = frame.dropped + frame.skipped + self._unsent.pop(frame.camera, 0)
            t_step = time.perf_counter()
            tracked = self.tracks.step(frame, ring.name, det)
            if tracked is not None:
                track_s += time.perf_counter() - t_step
                n_tracked += 1
            ts_publish = time.time()
            try:  # a non-finite score breaks the contract; one bad message never stops the worker
                msg = DetectionMessage.build(
                    camera=frame.camera,
                    seq=ring.next_message_seq(),
                    frame=frame.frame_index,
                    pts=frame.pts,
                    ts_capture=frame.ts_capture,
                    ts_publish=ts_publish,
                    width=frame.src_width,
                    height=frame.src_height,
                    dropped=dropped,
                    det=(tracked.det if tracked is not None else det if det is not None else _NO_DETECTIONS),
                    names=self.names,
                    track_ids=None if tracked is None else tracked.track_ids,
                    inferred=None if tracked is None else tracked.inferred,
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
            if det is None:
                stats.tracked_only += 1
            stats.latencies_ms.append((ts_publish - frame.ts_capture) * 1000.0)
        self.timer.add("publish", time.perf_counter() - t1 - track_s)
        if n_tracked:
            self.timer.add("track", track_s, tracked=n_tracked)

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
            counters = ring_counters(status)
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
                  "threads": self.spec.threads, "lanes": len(self.stages.backends), **self._feed_stats(),
                  **self.timer.summary()}
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

    def _feed_stats(self) -> dict[str, Any]:
        """The feed's fields for the stats message, ``torn`` over this interval (the feed counts since start)."""
        feed = dict(self.feed.stats())
        total = int(feed.get("torn") or 0)
        feed["torn"], self._torn_reported = max(0, total - self._torn_reported), total
        return feed

    def _final_entry(self, cam: str, final: dict[str, Any], stats: CameraStats | None,
                     interval: float) -> dict[str, Any]:
        """The stats entry of a camera whose ring was released: what this interval still counted,
        and its final state, counters and error."""
        counters = final_counters(final)
        base = self._ring_base.get(cam, counters)
        self._ring_base[cam] = counters
        entry = (stats or CameraStats()).summary(interval, {k: max(0, counters[k] - base[k]) for k in counters})
        entry["state"] = str(final.get("state") or "failed")
        entry["reconnects"] = int(final.get("reconnects") or 0)
        if final.get("last_error"):
            entry["last_error"] = str(final["last_error"])
            entry["last_error_ts"] = round(float(final.get("error_time") or 0.0), 3)
        return entry
