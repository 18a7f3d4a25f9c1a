"""Page-locked rings and the slot copier, with the CUDA calls faked on the CPU (and once for real on a GPU).

The fake copies immediately (``ctypes.memmove``) and refuses a DMA whose source is not page-locked
(neither a registered range nor a pinned buffer), so the staging fallback is checked, not assumed.
A hook runs "during" a copy to rewrite the slot, as a decoder overtaking the DMA would.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from streamdet.pipeline.preprocess.kernel_plan import DeviceFrame
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import HEADER_BYTES, SLOT_DTYPE, segment_bytes
from streamdet.pipeline.ring.pinned import DeviceBuffer, HostBuffer, PinnedRing, SlotCopier, ring_buffer
from streamdet.pipeline.ring.slots import SlotReader
from streamdet.pipeline.types import Image
from tests.pipeline.preprocess.test_colour import random_yuv

STREAM = "copy-stream"


class FakeEvent:
    def __init__(self, n: int) -> None:
        self.n = n

    def __repr__(self) -> str:
        return f"FakeEvent({self.n})"


class FakeCuda:
    """A CudaApi on the CPU (see the module docstring)."""

    def __init__(self, fail_register: str | None = None, fail_unregister: str | None = None) -> None:
        self.fail_register = fail_register
        self.fail_unregister = fail_unregister
        self.registered: dict[int, int] = {}
        self.pinned: list[HostBuffer] = []
        self.device: list[DeviceBuffer] = []
        self.copies: list[tuple[int, int, int]] = []
        self.events: list[FakeEvent] = []
        self.syncs: list[Any] = []
        self.waits: list[tuple[Any, Any]] = []
        self.during_copy: Callable[[], None] | None = None

    def host_register(self, ptr: int, nbytes: int) -> None:
        if self.fail_register:
            raise RuntimeError(self.fail_register)
        self.registered[ptr] = nbytes

    def host_unregister(self, ptr: int) -> None:
        if self.fail_unregister:
            raise RuntimeError(self.fail_unregister)
        del self.registered[ptr]

    def pinned_empty(self, nbytes: int) -> HostBuffer:
        a = np.zeros(nbytes, np.uint8)
        self.pinned.append(HostBuffer(a, int(a.ctypes.data), a))
        return self.pinned[-1]

    def device_empty(self, nbytes: int, stream: Any) -> DeviceBuffer:
        assert stream == STREAM
        a = np.zeros(nbytes, np.uint8)
        self.device.append(DeviceBuffer(int(a.ctypes.data), nbytes, a))
        return self.device[-1]

    def _page_locked(self, src: int, n: int) -> bool:
        ranges = list(self.registered.items()) + [(b.ptr, b.array.size) for b in self.pinned]
        return any(p <= src and src + n <= p + size for p, size in ranges)

    def copy_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        assert stream == STREAM
        assert self._page_locked(src, nbytes), "a DMA from pageable memory"
        assert any(b.ptr <= dst and dst + nbytes <= b.ptr + b.nbytes for b in self.device), "outside the arena"
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((dst, src, nbytes))
        if self.during_copy is not None:
            hook, self.during_copy = self.during_copy, None
            hook()

    def record(self, stream: Any) -> FakeEvent:
        assert stream == STREAM
        self.events.append(FakeEvent(len(self.events)))
        return self.events[-1]

    def synchronize(self, event: Any) -> None:
        self.syncs.append(event)

    def wait(self, stream: Any, event: Any) -> None:
        self.waits.append((stream, event))


def device_bytes(frame: DeviceFrame) -> np.ndarray:
    return np.frombuffer(ctypes.string_at(frame.ptr, frame.nbytes), np.uint8)


def write(ring: FrameRing, data: np.ndarray, index: int, pix_fmt: str = "yuv420p", matrix: str = "bt601",
          range_: str = "limited") -> int:
    return ring.write(data, frame_index=index, pts=index / 30, ts_capture=1000.0 + index, pix_fmt=pix_fmt,
                      color_matrix=matrix, color_range=range_)


@pytest.fixture
def cuda() -> FakeCuda:
    return FakeCuda()


@pytest.fixture
def copier_for(make_ring: Callable[..., FrameRing]) -> Iterator[Callable[[FakeCuda], SlotCopier]]:
    """copier_for(cuda): a SlotCopier on the fake stream, closed (rings detached) before the rings close."""
    made: list[SlotCopier] = []

    def make(cuda: FakeCuda, buffers: int = 2) -> SlotCopier:
        made.append(SlotCopier(cuda, STREAM, buffers=buffers))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.mark.parametrize("pix_fmt,matrix,range_", [("yuv420p", "bt601", "limited"), ("nv12", "bt709", "full")])
def test_registered_ring_copies_only_the_chosen_bytes(make_ring, copier_for, cuda: FakeCuda, pix_fmt: str,
                                                      matrix: str, range_: str) -> None:
    ring = make_ring("cam", 320, 240, 3)
    frames = [random_yuv(240, 320, seed=i) for i in range(2)]
    for i, data in enumerate(frames):
        write(ring, data, i, pix_fmt, matrix, range_)
    copier = copier_for(cuda)
    pinned = copier.attach(ring_buffer(ring), "cam")
    assert pinned.registered and cuda.registered == {pinned.base: segment_bytes(3, ring.slot_bytes)}
    ref = pinned.peek(0)
    assert ref is not None and ref.seq == 2 and ref.nbytes == 320 * 360
    pending = copier.copy([(pinned, ref)])
    assert cuda.copies == [(cuda.copies[0][0], pinned.data_address(ref.slot), 320 * 360)]  # nbytes, not the slot
    (got,) = copier.finish(pending)
    assert got == DeviceFrame(got.ptr, pix_fmt, 320, 240, matrix, range_)
    np.testing.assert_array_equal(device_bytes(got), frames[1].reshape(-1))
    assert pending.event in cuda.syncs and ring.consumed_seq == 2
    stats = copier.stats()
    assert stats["pinned"] is True and stats["rings_pinned"] == 1 and stats["rings_staged"] == 0
    assert (stats["frames_copied"], stats["bytes_copied"], stats["torn"]) == (1, 320 * 360, 0)
    assert Image(device_bytes(got).reshape(360, 320), pix_fmt, matrix, range_).hw == (240, 320)


def test_a_frame_rewritten_during_its_copy_is_dropped_and_counted(make_ring, copier_for, cuda: FakeCuda) -> None:
    ring, other = make_ring("cam", 64, 48, 2), make_ring("cam2", 64, 48, 2)
    for i in range(2):
        write(ring, random_yuv(48, 64, seed=i), i)
    write(other, random_yuv(48, 64, seed=9), 0)
    copier = copier_for(cuda)
    pinned, pinned2 = copier.attach(ring_buffer(ring), "cam"), copier.attach(ring_buffer(other), "cam2")
    ref, ref2 = pinned.peek(0), pinned2.peek(0)
    assert ref is not None and ref2 is not None and ref.seq == 2

    def decoder_overtakes() -> None:  # seq 3 and 4: seq 4 rewrites the slot being copied (2 slots)
        write(ring, random_yuv(48, 64, seed=3), 2)
        write(ring, random_yuv(48, 64, seed=4), 3)

    cuda.during_copy = decoder_overtakes
    got = copier.finish(copier.copy([(pinned, ref), (pinned2, ref2)]))
    assert got[0] is None and got[1] is not None
    np.testing.assert_array_equal(device_bytes(got[1]), random_yuv(48, 64, seed=9).reshape(-1))
    assert ring.consumed_seq == 0 and other.consumed_seq == 1  # the torn frame is not consumed
    stats = copier.stats()
    assert stats["torn"] == 1 and stats["torn_by_camera"] == {"cam": 1} and stats["frames_copied"] == 1
    # the camera's next frame counts the torn one as dropped
    nxt = pinned.peek(0)
    assert nxt is not None and nxt.seq == 4 and nxt.to_frame("cam", 0).dropped == 3


def test_a_frame_rewritten_before_its_copy_is_caught_after_the_dma(make_ring, copier_for, cuda: FakeCuda) -> None:
    ring = make_ring("cam", 64, 48, 2)
    write(ring, random_yuv(48, 64, seed=0), 0)
    copier = copier_for(cuda)
    pinned = copier.attach(ring_buffer(ring), "cam")
    ref = pinned.peek(0)
    assert ref is not None
    write(ring, random_yuv(48, 64, seed=1), 1)
    write(ring, random_yuv(48, 64, seed=2), 2)  # seq 3 lands in ref's slot
    assert copier.finish(copier.copy([(pinned, ref)])) == [None]
    assert copier.stats()["torn"] == 1


def test_registration_failure_falls_back_to_staging_logged_once(make_ring, copier_for,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    cuda = FakeCuda(fail_register="cudaErrorNotSupported: operation not supported")
    rings = [make_ring(f"cam{i}", 64, 48, 3) for i in range(2)]
    data = [random_yuv(48, 64, seed=10 + i) for i in range(2)]
    for ring, d in zip(rings, data, strict=True):
        write(ring, d, 0, "nv12")
    copier = copier_for(cuda)
    with caplog.at_level(logging.DEBUG, logger="streamdet.pipeline.ring.pinned"):
        pinned = [copier.attach(ring_buffer(r), f"cam{i}") for i, r in enumerate(rings)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cudaErrorNotSupported" in warnings[0].getMessage() and "pinned: false" in warnings[0].getMessage()
    assert not any(p.registered for p in pinned) and cuda.registered == {}
    stats = copier.stats()
    assert stats["pinned"] is False and stats["rings_staged"] == 2 and stats["register_failures"] == 2
    refs = [p.peek(0) for p in pinned]
    got = copier.finish(copier.copy([(p, r) for p, r in zip(pinned, refs, strict=True) if r is not None]))
    staging = cuda.pinned[0]
    assert all(staging.ptr <= src < staging.ptr + staging.array.size for _, src, _ in cuda.copies)
    for frame, d in zip(got, data, strict=True):
        assert frame is not None
        np.testing.assert_array_equal(device_bytes(frame), d.reshape(-1))
    assert copier.stats()["frames_copied"] == 2


def test_staged_frame_rewritten_before_its_cpu_copy_is_dropped(make_ring, copier_for) -> None:
    cuda = FakeCuda(fail_register="no")
    ring = make_ring("cam", 64, 48, 2)
    write(ring, random_yuv(48, 64, seed=0), 0)
    copier = copier_for(cuda)
    pinned = copier.attach(ring_buffer(ring), "cam")
    ref = pinned.peek(0)
    assert ref is not None
    write(ring, random_yuv(48, 64, seed=1), 1)
    write(ring, random_yuv(48, 64, seed=2), 2)
    assert copier.finish(copier.copy([(pinned, ref)])) == [None]
    assert cuda.copies == [] and copier.stats()["torn_by_camera"] == {"cam": 1}  # no DMA of a torn frame


def test_arenas_alternate_and_wait_for_their_consumer(make_ring, copier_for, cuda: FakeCuda) -> None:
    ring = make_ring("cam", 64, 48, 8)
    copier = copier_for(cuda, buffers=2)
    pinned = copier.attach(ring_buffer(ring), "cam")
    pendings = []
    for i in range(3):
        write(ring, random_yuv(48, 64, seed=i), i)
        ref = pinned.peek(i)
        assert ref is not None
        pendings.append(copier.copy([(pinned, ref)]))
        copier.finish(pendings[-1])
        copier.release(pendings[-1], f"kernel-done-{i}")
    assert [p.arena for p in pendings] == [0, 1, 0]
    assert cuda.waits == [(STREAM, "kernel-done-0")]  # arena 0 is refilled only after its consumer
    assert len(cuda.device) == 2  # one allocation per arena, reused


def test_staging_is_refilled_only_after_its_previous_copy(make_ring, copier_for) -> None:
    cuda = FakeCuda(fail_register="no")
    ring = make_ring("cam", 64, 48, 8)
    copier = copier_for(cuda, buffers=2)
    pinned = copier.attach(ring_buffer(ring), "cam")
    pendings = []
    for i in range(3):
        write(ring, random_yuv(48, 64, seed=i), i)
        ref = pinned.peek(i)
        assert ref is not None
        pendings.append(copier.copy([(pinned, ref)]))
    assert cuda.syncs == [pendings[0].event]  # the host waited for arena 0's copy before refilling it


def test_lossless_ring_is_read_in_order_and_consuming_frees_the_writer(make_ring, copier_for, cuda) -> None:
    ring = make_ring("cam", 64, 48, 2)
    ring.set_lossless(True)
    for i in range(2):
        write(ring, random_yuv(48, 64, seed=i), i)
    assert not ring.writable()
    copier = copier_for(cuda)
    pinned = copier.attach(ring_buffer(ring), "cam")
    assert pinned.lossless and pinned.resume_seq() == 0
    ref = pinned.peek(0)
    assert ref is not None and ref.seq == 1
    assert copier.finish(copier.copy([(pinned, ref)]))[0] is not None
    assert ring.consumed_seq == 1 and ring.writable()
    nxt = pinned.peek(1)
    assert nxt is not None and nxt.seq == 2 and pinned.peek(2) is None


def test_detach_unregisters_and_lets_the_ring_close(make_ring, caplog: pytest.LogCaptureFixture) -> None:
    cuda = FakeCuda()
    ring = make_ring("cam", 64, 48, 2)
    copier = SlotCopier(cuda, STREAM)
    pinned = copier.attach(ring_buffer(ring), "cam")
    assert cuda.registered
    copier.detach(pinned)
    assert cuda.registered == {} and copier.stats()["rings_pinned"] == 0
    ring.close()  # would raise BufferError if the copier still held views of the mapping
    ring2 = make_ring("cam2", 64, 48, 2)
    cuda.fail_unregister = "cudaErrorHostMemoryNotRegistered"
    copier.attach(ring_buffer(ring2), "cam2")
    with caplog.at_level(logging.WARNING, logger="streamdet.pipeline.ring.pinned"):
        copier.close()
    assert "cudaErrorHostMemoryNotRegistered" in caplog.text
    ring2.close()


def test_slot_reader_skips_slots_being_written_and_rejects_other_buffers(make_ring) -> None:
    with pytest.raises(ValueError, match="not a streamdet frame ring"):
        SlotReader(memoryview(bytearray(8192)))
    ring = make_ring("cam", 64, 48, 3)
    reader = SlotReader(ring_buffer(ring))
    try:
        assert reader.peek(0) is None and reader.camera == "cam"
        for i in range(2):
            write(ring, random_yuv(48, 64, seed=i), i)
        slot_hdr = np.ndarray((3,), SLOT_DTYPE, buffer=ring_buffer(ring), offset=HEADER_BYTES, strides=(reader.stride,))
        slot_hdr["lock"][2] += 1  # seq 2's slot: a writer is in it
        ref = reader.peek(0)
        assert ref is not None and ref.seq == 1  # latest wins falls back to the older stable frame
        slot_hdr["lock"][2] += 1
        ref = reader.peek(0)
        assert ref is not None and ref.seq == 2 and reader.peek(2) is None
        del slot_hdr
    finally:
        reader.close()


# --- on a GPU: the real CUDA calls, and the whole path into the preprocessing kernel ---------------------------


@pytest.mark.gpu
def test_real_cuda_pins_copies_and_feeds_the_kernel(make_ring) -> None:
    pytest.importorskip("cupy", reason="the real CUDA api needs CuPy (pip install 'streamdet[gpu]')")
    from streamdet.pipeline.backends.model_input import to_model_input
    from streamdet.pipeline.preprocess.cuda import CudaPreprocessor
    from streamdet.pipeline.preprocess.letterbox import letterbox_yuv420_reference
    from streamdet.pipeline.ring.pinned import CupyTorchCuda

    dev = torch.device("cuda", torch.cuda.current_device())
    ring = make_ring("cam", 1280, 720, 3)
    data = random_yuv(720, 1280, seed=5)
    write(ring, data, 0, "nv12", "bt709", "limited")
    copy_stream, compute = torch.cuda.Stream(dev), torch.cuda.Stream(dev)
    copier = SlotCopier(CupyTorchCuda(dev), copy_stream)
    try:
        pinned: PinnedRing = copier.attach(ring_buffer(ring), "cam")
        assert pinned.registered, "cudaHostRegister of the ring segment failed"
        ref = pinned.peek(0)
        assert ref is not None
        pending = copier.copy([(pinned, ref)])
        (frame,) = copier.finish(pending)
        assert frame is not None
        pre = CudaPreprocessor(dev)
        out = torch.empty((1, 3, 384, 640), dtype=torch.float16, device=dev)
        compute.wait_event(pending.event)
        pre.launch([frame], (384, 640), out, compute)
        done = torch.cuda.Event()
        done.record(compute)
        copier.release(pending, done)
        done.synchronize()
        ref_u8 = letterbox_yuv420_reference(Image(data, "nv12", "bt709", "limited"), (384, 640))
        assert torch.equal(out, to_model_input(ref_u8[None], dev, half=True))
        assert copier.stats()["pinned"] is True
    finally:
        copier.close()
