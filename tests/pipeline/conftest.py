"""Fixtures of the decoder tests (test_decode.py, test_decode_faults.py): rings and readers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from streamdet.pipeline.decode.reader import CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import slot_bytes_for
from tests.helpers.decoder import Running


@pytest.fixture
def make_ring() -> Iterator[Callable[..., FrameRing]]:
    """make_ring(camera, w, h, slots): a fresh ring (slots sized for w x h yuv420p), unlinked after."""
    rings: list[FrameRing] = []

    def make(camera: str = "cam", w: int = 320, h: int = 240, slots: int = 3) -> FrameRing:
        ring = FrameRing.create(f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}", camera, slots,
                                slot_bytes_for(w, h, "yuv420p"))
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close()
        ring.unlink()


@pytest.fixture
def run_reader() -> Iterator[Callable[..., Running]]:
    """run_reader(source, ring, **kwargs): a CameraReader thread, stopped at teardown."""
    running: list[Running] = []

    def start(source: CameraSource, ring: FrameRing, **kwargs: object) -> Running:
        r = Running(source, ring, **kwargs)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop.set()
    for r in running:
        r.thread.join(10)
