"""A background reader that drains a FrameRing as a worker would (for decoder and ring tests).

Lossless rings block their writer until frames are consumed, so a decoder test reading an
unpaced file needs a consumer; this one keeps every frame it reads for later assertions.
"""

from __future__ import annotations

import threading
import time

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.types import Frame


class RingCollector:
    """Reads ``ring`` on a thread with ``read_next`` (or ``read_latest``), sleeping ``delay`` s
    after each frame (a slow worker), and records the frames and the largest writer lead
    (``latest_seq - consumed_seq``) it saw."""

    def __init__(self, ring: FrameRing, delay: float = 0.0, method: str = "read_next") -> None:
        self.ring = FrameRing.attach(ring.name)  # its own mapping, as a worker process has
        self.delay = delay
        self.read = getattr(self.ring, method)
        self.frames: list[Frame] = []
        self.max_lead = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = self.ring.resume_seq()
        while not self._stop.is_set():
            self.max_lead = max(self.max_lead, self.ring.latest_seq - self.ring.consumed_seq)
            frame = self.read(last)
            if frame is None:
                time.sleep(0.002)
                continue
            last = frame.seq
            self.frames.append(frame)
            if self.delay:
                time.sleep(self.delay)

    @property
    def seqs(self) -> list[int]:
        """Seq of every frame read, in order."""
        return [f.seq for f in self.frames]

    def close(self) -> None:
        """Stop the thread and unmap (frames already read stay valid: they are copies)."""
        self._stop.set()
        self._thread.join(5)
        self.ring.close()

    def __enter__(self) -> RingCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
