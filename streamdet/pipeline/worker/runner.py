"""The worker's pipeline: prepare batch k+1 while batches are inferred and batch k-1 is published.

Used by :mod:`streamdet.pipeline.worker.process`; the stage functions themselves live on the worker's
loop object (:class:`StageLoop` is what this module needs of it).

Threads: one feeder (gather + preprocess), one thread per inference *lane*, one publisher
(postprocess + publish + stats); the caller's thread heartbeats and watches them. Lanes run
whole batches concurrently, each on its own backend instance with its own few intra-op
threads: on a small CPU two single-threaded lanes did 1.4x the work of one two-threaded lane
(docs/benchmarks.md), because intra-op parallelism on layers this small loses much of its time
to synchronisation, while separate batches need none.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from streamdet.stopflag import StopFlag

IDLE_POLL_S = 0.002
STUCK_S = 30.0  # a batch in inference this long stops the heartbeat: the supervisor then sees a hang


class StageLoop(Protocol):
    """The per-batch stage functions a pipelined runner drives (a WorkerLoop)."""

    def beat(self) -> None: ...
    def gather(self, stop: StopFlag | None = None) -> list[Any]: ...
    def prepare(self, frames: list[Any]) -> Any: ...
    def infer(self, prepared: Any, lane: int = 0) -> Any: ...
    def publish(self, inferred: Any) -> None: ...
    def maybe_publish_stats(self, queue_depth: Callable[[], dict[str, int]] | None = None) -> None: ...


class PipelinedRunner:
    """Runs a worker loop's stages in threads with bounded hand-offs (see the module docstring).

    feeder -> [queue of 1] -> ``lanes`` inference threads -> [queue of ``lanes``] -> publisher.
    Every batch carries a sequence number and the publisher publishes them in that order, so a
    camera's frames go out in order whichever lane finishes first. At most ``lanes`` + 2 batches
    exist at any time: nothing can pile up. The first error in any thread stops all of them and
    is re-raised in the caller.

    Just in time: the feeder gathers the next batch only when a lane is free, or when the lane
    that will free up first is expected to finish within one preprocessing time (moving averages
    of both), not as soon as it can. Frames then wait in the ring, where a newer frame can still
    replace them, instead of ageing in a queue: the overlap is kept and latency is not doubled.
    """

    _END = object()
    _EMA = 0.2  # weight of the newest sample in the stage-time averages

    def __init__(self, loop: StageLoop, lanes: int = 1, stuck_s: float = STUCK_S) -> None:
        if lanes < 1:
            raise ValueError(f"lanes must be >= 1, got {lanes}")
        self.loop = loop
        self.lanes = lanes
        self.stuck_s = stuck_s
        self.prepared: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.inferred: queue.Queue[Any] = queue.Queue(maxsize=lanes)
        self._halt = threading.Event()
        self._errors: list[BaseException] = []
        self._lane_started: list[float | None] = [None] * lanes  # monotonic start of each lane's batch
        self._infer_s = 0.0  # moving averages of stage durations
        self._prepare_s = 0.0

    def _ema(self, old: float, new: float) -> float:
        return new if old == 0.0 else old + self._EMA * (new - old)

    def _wait_until_due(self, stop: StopFlag) -> None:
        """Block until the next batch should be gathered (see the class docstring)."""
        while not stop.is_set() and not self._halt.is_set():
            if self.prepared.full():
                time.sleep(IDLE_POLL_S)
                continue
            started = self._lane_started
            if any(s is None for s in started):
                return
            due = min(s for s in started if s is not None) + self._infer_s - self._prepare_s
            now = time.monotonic()
            if now >= due:
                return
            time.sleep(min(due - now, 0.005))

    def _put(self, q: queue.Queue[Any], item: Any) -> bool:
        """Blocking put that gives up when the runner halts; False if it did."""
        while not self._halt.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _guard(self, body: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                body()
            except BaseException as exc:  # surfaced in the caller's thread
                self._errors.append(exc)
                self._halt.set()
        return run

    def _feed(self, stop: StopFlag) -> None:
        loop = self.loop
        seq = 0
        while not stop.is_set() and not self._halt.is_set():
            self._wait_until_due(stop)
            frames = loop.gather(stop)
            if not frames:
                time.sleep(IDLE_POLL_S)
                continue
            t0 = time.monotonic()
            prepared = loop.prepare(frames)
            self._prepare_s = self._ema(self._prepare_s, time.monotonic() - t0)
            if not self._put(self.prepared, (seq, prepared)):
                return
            seq += 1
        for _ in range(self.lanes):  # one end marker per lane
            self._put(self.prepared, self._END)

    def _infer(self, lane: int) -> None:
        loop = self.loop
        while not self._halt.is_set():
            try:
                item = self.prepared.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is self._END:
                break
            seq, prepared = item
            t0 = self._lane_started[lane] = time.monotonic()
            inferred = loop.infer(prepared, lane)
            self._lane_started[lane] = None
            self._infer_s = self._ema(self._infer_s, time.monotonic() - t0)
            if not self._put(self.inferred, (seq, inferred)):
                return
        self._put(self.inferred, self._END)

    def _drain(self) -> None:
        loop = self.loop
        pending: dict[int, Any] = {}  # finished out of order, waiting for an earlier batch
        expected, ended = 0, 0
        while ended < self.lanes:
            try:
                item = self.inferred.get(timeout=0.1)
            except queue.Empty:
                if self._halt.is_set():
                    return
                loop.maybe_publish_stats(self.frames_waiting)  # stats keep coming while no frame does
                continue
            if item is self._END:
                ended += 1
                continue
            seq, inferred = item
            pending[seq] = inferred
            while expected in pending:
                loop.publish(pending.pop(expected))
                expected += 1
            loop.maybe_publish_stats(self.frames_waiting)

    def frames_waiting(self) -> dict[str, int]:
        """Frames in the hand-off queues now (stats): ``prepared`` (preprocessed, waiting for a
        lane) and ``inferred`` (waiting for the publisher)."""
        def frames(q: queue.Queue[Any]) -> int:
            with q.mutex:  # a consistent snapshot of the items; their frames never change
                items = list(q.queue)
            return sum(len(getattr(item[1], "frames", ())) for item in items if item is not self._END)
        return {"prepared": frames(self.prepared), "inferred": frames(self.inferred)}

    def stuck(self, now: float | None = None) -> bool:
        """Whether a lane has been inferring one batch for more than ``stuck_s`` seconds."""
        now = time.monotonic() if now is None else now
        return any(s is not None and now - s > self.stuck_s for s in self._lane_started)

    def run(self, stop: StopFlag) -> None:
        """Serve until ``stop``; batches already prepared are still inferred and published."""
        loop = self.loop
        threads = [threading.Thread(target=self._guard(lambda: self._feed(stop)), name="worker-feed", daemon=True)]
        threads += [threading.Thread(target=self._guard(functools.partial(self._infer, lane)),
                                     name=f"worker-infer-{lane}", daemon=True) for lane in range(self.lanes)]
        drainer = threading.Thread(target=self._guard(self._drain), name="worker-publish", daemon=True)
        for t in [*threads, drainer]:
            t.start()
        try:
            while not self._halt.is_set() and drainer.is_alive():
                if not self.stuck():
                    loop.beat()
                drainer.join(0.05)
        finally:
            for t in threads:
                t.join(5)
            drainer.join(5)
            self._halt.set()
        if self._errors:
            raise self._errors[0]
