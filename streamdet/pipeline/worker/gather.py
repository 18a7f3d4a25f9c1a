"""Which frame of which camera goes into the next batch (see :class:`BatchGatherer`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.types import Frame
from streamdet.stopflag import StopFlag

IDLE_POLL_S = 0.002

Take = Callable[[str, FrameRing, int], "Frame | None"]
"""How a frame is picked: (camera, its ring, the last seq taken) -> the next frame or None (a feed's ``take``)."""


def _read_next(camera: str, ring: FrameRing, after_seq: int) -> Frame | None:
    return ring.read_next(after_seq)


def lane_batch(max_batch: int, cameras: int, lanes: int) -> int:
    """Frames per batch with ``lanes`` concurrent inference lanes: the cameras split evenly over
    the lanes (each lane's batch, and so each frame's wait, stays short), at most ``max_batch``."""
    return max(1, min(max_batch, math.ceil(cameras / max(1, lanes))))


class BatchGatherer:
    """Collects the next frame of each camera into a batch (see module docstring)."""

    def __init__(self, rings: dict[str, FrameRing], max_batch: int, max_wait_s: float,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 take: Take | None = None) -> None:
        self.take: Take = take if take is not None else _read_next
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
            frame = self.take(cam, self.rings[cam], self.last_seq[cam])
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


