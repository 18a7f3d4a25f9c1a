"""Helpers for decoder tests: a CameraReader on a thread, polling, reading a ring frame's number.

The ``make_ring`` and ``run_reader`` fixtures built on these live in tests/pipeline/conftest.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from streamdet.pipeline.decode.reader import CameraReader, CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.types import Frame
from tests.helpers.media import read_frame_number
from tests.helpers.yuv_clips import luma


def number(frame: Frame) -> int:
    """The frame number drawn into a test clip frame, read from the Y plane of a ring frame."""
    return read_frame_number(luma(frame.image, frame.height))


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``pred`` every 20 ms; AssertionError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Running:
    """A CameraReader on a thread; stopped (and checked to stop promptly) at teardown."""

    def __init__(self, source: CameraSource, ring: FrameRing, reader_cls: type[CameraReader] = CameraReader,
                 start_gate: threading.Event | None = None) -> None:
        self.stop = threading.Event()
        self.ring = ring
        self.reader = reader_cls(source, ring, self.stop, start_gate=start_gate)
        self.thread = threading.Thread(target=self.reader.run, daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def halt(self, within: float = 2.0) -> float:
        """Set stop, join; asserts the reader stopped within ``within`` seconds."""
        t0 = time.monotonic()
        self.stop.set()
        self.thread.join(within + 5)
        took = time.monotonic() - t0
        assert not self.thread.is_alive(), "reader did not stop"
        assert took < within, f"reader took {took:.2f} s to stop"
        return took
