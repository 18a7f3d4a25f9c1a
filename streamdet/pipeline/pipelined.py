"""The worker's three-thread pipeline: prepare batch k+1 while batch k is inferred and k-1 published.

Used by :mod:`streamdet.pipeline.worker`; the stage functions themselves live on the worker's
loop object (:class:`StageLoop` is what this module needs of it).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from streamdet.stopflag import StopFlag

IDLE_POLL_S = 0.002


class StageLoop(Protocol):
    """The per-batch stage functions a pipelined runner drives (a WorkerLoop)."""

    def beat(self) -> None: ...
    def gather(self, stop: StopFlag | None = None) -> list[Any]: ...
    def prepare(self, frames: list[Any]) -> Any: ...
    def infer(self, prepared: Any) -> Any: ...
    def publish(self, inferred: Any) -> None: ...
    def maybe_publish_stats(self) -> None: ...


class PipelinedRunner:
    """Runs a worker loop's stages in three threads with one-batch hand-offs.

    feeder: gather + prepare (k+1) -> [queue of 1] -> inference (k) -> [queue of 1] -> publisher:
    postprocess + publish + stats (k-1). The calling thread runs inference (and heartbeats), so a
    hung backend stops the heartbeat and the supervisor notices. The first error in any thread
    stops all three and is re-raised in the caller.

    Just in time: the feeder gathers batch k+1 only when inference of batch k is expected to end
    within one preprocessing time (moving averages of both), not as soon as it can. Frames then
    wait in the ring, where a newer frame can still replace them, instead of ageing in a queue:
    the overlap is kept and latency is not doubled.
    """

    _END = object()
    _EMA = 0.2  # weight of the newest sample in the stage-time averages

    def __init__(self, loop: StageLoop) -> None:
        self.loop = loop
        self.prepared: queue.Queue[Any] = queue.Queue(maxsize=1)
        self.inferred: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._halt = threading.Event()
        self._errors: list[BaseException] = []
        self._infer_started: float | None = None  # monotonic start of the running inference
        self._infer_s = 0.0  # moving averages of stage durations
        self._prepare_s = 0.0

    def _ema(self, old: float, new: float) -> float:
        return new if old == 0.0 else old + self._EMA * (new - old)

    def _wait_until_due(self, stop: StopFlag) -> None:
        """Block until the next batch should be gathered (see the class docstring)."""
        while not stop.is_set() and not self._halt.is_set():
            started = self._infer_started
            if not self.prepared.full():
                if started is None:
                    return
                due = started + self._infer_s - self._prepare_s
                now = time.monotonic()
                if now >= due:
                    return
                time.sleep(min(due - now, 0.005))
            else:
                time.sleep(IDLE_POLL_S)

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
        while not stop.is_set() and not self._halt.is_set():
            self._wait_until_due(stop)
            frames = loop.gather(stop)
            if not frames:
                time.sleep(IDLE_POLL_S)
                continue
            t0 = time.monotonic()
            prepared = loop.prepare(frames)
            self._prepare_s = self._ema(self._prepare_s, time.monotonic() - t0)
            if not self._put(self.prepared, prepared):
                return
        self._put(self.prepared, self._END)

    def _drain(self) -> None:
        loop = self.loop
        while True:
            try:
                item = self.inferred.get(timeout=0.1)
            except queue.Empty:
                if self._halt.is_set():
                    return
                loop.maybe_publish_stats()  # stats keep coming while no frame does
                continue
            if item is self._END:
                return
            loop.publish(item)
            loop.maybe_publish_stats()

    def run(self, stop: StopFlag) -> None:
        """Serve until ``stop``; batches already prepared are still inferred and published."""
        loop = self.loop
        feeder = threading.Thread(target=self._guard(lambda: self._feed(stop)), name="worker-feed", daemon=True)
        drainer = threading.Thread(target=self._guard(self._drain), name="worker-publish", daemon=True)
        feeder.start()
        drainer.start()
        try:
            while not self._halt.is_set():
                loop.beat()
                try:
                    item = self.prepared.get(timeout=0.05)
                except queue.Empty:
                    if stop.is_set() and not feeder.is_alive():
                        break
                    continue
                if item is self._END:
                    break
                t0 = self._infer_started = time.monotonic()
                inferred = loop.infer(item)
                self._infer_started = None
                self._infer_s = self._ema(self._infer_s, time.monotonic() - t0)
                if not self._put(self.inferred, inferred):
                    break
        finally:
            self._put(self.inferred, self._END)
            feeder.join(5)
            drainer.join(5)
            self._halt.set()
        if self._errors:
            raise self._errors[0]
