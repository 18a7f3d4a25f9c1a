"""The CPU emulation of the CUDA layer (EmulatedCuda): faithful where the worker relies on it, and with teeth.

Faithful: frames DMA-ed from page-locked memory and letterboxed by the emulated kernel give exactly
the CPU preprocessor's bytes (and the kernel's FP16/FP32 values); the real SlotCopier runs on it.
Teeth: a missing ``wait`` gives a wrong batch, a Deferred read too early raises NotReady, a DMA
from pageable memory or a kernel load outside device memory fails at synchronize.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

from streamdet.pipeline.cuda.emulation import EmulatedCuda, EmulatedEvent, EmulatedStream, StreamError
from streamdet.pipeline.cuda.runtime import NotReady
from streamdet.pipeline.preprocess.kernel_plan import DeviceFrame, pack_offsets
from streamdet.pipeline.preprocess.kernel_reference import store_values
from streamdet.pipeline.preprocess.letterbox import CpuPreprocessor
from streamdet.pipeline.ring.pinned import DeviceBuffer, HostBuffer, SlotCopier, ring_buffer
from streamdet.pipeline.types import Image
from tests.pipeline.preprocess.test_colour import random_yuv, yuv_image
from tests.pipeline.ring.test_pinned import device_bytes, write

HW = (96, 128)
SLOW = (0.2, 0.3)  # a copy stream this slow is still copying when a fast stream's kernel runs


@pytest.fixture
def cuda() -> Iterator[EmulatedCuda]:
    runtime = EmulatedCuda(timeout_s=10)
    yield runtime
    runtime.close()


def images() -> list[Image]:
    bgr = np.random.default_rng(7).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    return [yuv_image(random_yuv(60, 80, seed=1), "yuv420p"),
            yuv_image(random_yuv(120, 90, seed=2), "nv12", "bt709", "full"),
            Image(bgr, "bgr24")]


def upload(cuda: EmulatedCuda, imgs: list[Image], stream: EmulatedStream
           ) -> tuple[list[DeviceFrame], EmulatedEvent, tuple[HostBuffer, DeviceBuffer]]:
    """Pack ``imgs`` into a pinned buffer, enqueue one DMA into a device buffer; the frames, the copy's
    event and the buffers (keep them alive)."""
    raws = [np.ascontiguousarray(im.data).reshape(-1) for im in imgs]
    offsets, total = pack_offsets([r.size for r in raws])
    host = cuda.pinned_empty(total)
    for raw, off in zip(raws, offsets, strict=True):
        host.array[off:off + raw.size] = raw
    dev = cuda.device_empty(total, stream)
    cuda.copy_async(dev.ptr, host.ptr, total, stream)
    frames = [DeviceFrame(dev.ptr + off, im.pix_fmt, im.width, im.height, im.color_matrix, im.color_range)
              for im, off in zip(imgs, offsets, strict=True)]
    return frames, cuda.record(stream), (host, dev)


def batch(cuda: EmulatedCuda, n: int, dtype: str, stream: EmulatedStream) -> torch.Tensor:
    return cuda.empty_batch(n * 3 * HW[0] * HW[1], dtype, stream).view(n, 3, *HW)


# --- the kernel --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_copy_wait_and_kernel_give_the_cpu_preprocessors_batch(cuda: EmulatedCuda, dtype: str) -> None:
    copy, prep = cuda.new_stream(delay_s=(0.05, 0.1), name="copy"), cuda.new_stream(delay_s=(0.0, 0.0), name="prep")
    imgs = images()
    frames, copied, _keep = upload(cuda, imgs, copy)
    out = batch(cuda, len(imgs) + 1, dtype, prep)  # one spare row: only out[:B] is written
    cuda.wait(prep, copied)
    cuda.launch_preprocess(frames, HW, out, prep)
    cuda.synchronize(cuda.record(prep))
    expected = CpuPreprocessor()(imgs, HW)
    np.testing.assert_array_equal(out[:3].numpy(), store_values(expected.astype(np.int32), dtype))
    assert (out[3] == 0).all()
    stats = cuda.stats()
    assert (stats["copies"], stats["kernels"], stats["waits"]) == (1, 1, 1)
    assert stats["bytes_copied"] == pack_offsets([im.data.size for im in imgs])[1]  # one DMA of the packed frames


def test_without_the_wait_the_kernel_reads_frames_not_yet_copied(cuda: EmulatedCuda) -> None:
    copy, prep = cuda.new_stream(delay_s=SLOW, name="copy"), cuda.new_stream(delay_s=(0.0, 0.0), name="prep")
    imgs = images()
    frames, copied, (_, dev) = upload(cuda, imgs, copy)
    out = batch(cuda, len(imgs), "uint8", prep)
    cuda.launch_preprocess(frames, HW, out, prep)  # the missing cuda.wait(prep, copied)
    cuda.synchronize(cuda.record(prep))
    expected = CpuPreprocessor()(imgs, HW)
    assert not np.array_equal(out.numpy(), expected)
    cuda.synchronize(copied)  # the copy itself was fine, only late
    np.testing.assert_array_equal(device_bytes(frames[0]), imgs[0].data.reshape(-1))
    assert dev.nbytes >= frames[-1].ptr - dev.ptr + frames[-1].nbytes


def test_the_kernel_plans_at_launch_and_reads_at_run_time(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream()
    gate = threading.Event()
    cuda.submit(stream, lambda: gate.wait(10))
    img = images()[0]
    frames, _, (host, dev) = upload(cuda, [img], stream)
    out = batch(cuda, 1, "uint8", stream)
    cuda.launch_preprocess(frames, HW, out, stream)
    assert (out == 0).all()  # queued behind the gate: nothing written yet
    gate.set()
    cuda.synchronize(cuda.record(stream))
    np.testing.assert_array_equal(out.numpy(), CpuPreprocessor()([img], HW))


def test_a_kernel_load_outside_device_memory_fails_at_synchronize(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream(name="prep")
    img = images()[0]
    host = cuda.pinned_empty(img.data.size)  # host memory: the kernel cannot read it
    host.array[:] = img.data.reshape(-1)
    out = batch(cuda, 1, "uint8", stream)
    cuda.launch_preprocess([DeviceFrame(host.ptr, "yuv420p", img.width, img.height)], HW, out, stream)
    with pytest.raises(StreamError, match="kernel.*'prep'.*outside every device allocation") as info:
        cuda.synchronize(cuda.record(stream))
    assert isinstance(info.value.__cause__, IndexError)


@pytest.mark.parametrize("bad", [
    lambda: torch.zeros((1, 3, *HW), dtype=torch.float64),
    lambda: torch.zeros((1, 3, HW[0], HW[1] + 1), dtype=torch.uint8),
    lambda: torch.zeros((1, 3, HW[1], HW[0]), dtype=torch.uint8).transpose(2, 3),
    lambda: np.zeros((1, 3, *HW), np.uint8),
])
def test_launch_checks_the_output_like_the_cuda_preprocessor(cuda: EmulatedCuda, bad: Callable[[], Any]) -> None:
    stream = cuda.new_stream()
    with pytest.raises(ValueError, match="out must be"):
        cuda.launch_preprocess([DeviceFrame(4096, "yuv420p", 64, 48)], HW, bad(), stream)
    assert cuda.stats()["kernels"] == 0


# --- copies ------------------------------------------------------------------------------------------------


def test_a_dma_from_pageable_memory_fails_at_synchronize(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream(name="copy")
    src = np.arange(1000, dtype=np.uint32).view(np.uint8)
    dev = cuda.device_empty(src.size, stream)
    assert dev.ptr % 256 == 0  # aligned like cudaMalloc
    cuda.copy_async(dev.ptr, int(src.ctypes.data), src.size, stream)
    with pytest.raises(StreamError, match="copy_async.*'copy'.*not page-locked"):
        cuda.synchronize(cuda.record(stream))
    assert not dev.owner.any()  # nothing moved
    cuda.host_register(int(src.ctypes.data), src.size)  # the same copy from registered memory works
    cuda.copy_async(dev.ptr, int(src.ctypes.data), src.size, stream)
    cuda.synchronize(cuda.record(stream))
    np.testing.assert_array_equal(dev.owner[:src.size], src)
    cuda.host_unregister(int(src.ctypes.data))


def test_a_dma_must_land_inside_one_device_allocation(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream(name="copy")
    src = cuda.pinned_empty(64)
    dev = cuda.device_empty(32, stream)
    cuda.copy_async(dev.ptr + 16, src.ptr, 64, stream)  # runs past the end
    cuda.copy_async(cuda.pinned_empty(64).ptr, src.ptr, 64, stream)  # host destination
    with pytest.raises(StreamError, match="not inside one device allocation.*and 1 later"):
        cuda.synchronize(cuda.record(stream))


def test_during_copy_runs_before_the_bytes_move(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream()
    src = cuda.pinned_empty(256)
    src.array[:] = 1
    dev = cuda.device_empty(256, stream)
    seen: list[tuple[int, int, int]] = []

    def rewrite(dst: int, s: int, n: int) -> None:
        seen.append((dst, s, n))
        src.array[:] = 2

    cuda.during_copy = rewrite
    cuda.copy_async(dev.ptr, src.ptr, 256, stream)
    cuda.synchronize(cuda.record(stream))
    assert seen == [(dev.ptr, src.ptr, 256)]
    assert (dev.owner[:256] == 2).all()


def test_batches_are_device_memory_while_they_live(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream()
    src = cuda.pinned_empty(8)
    src.array[:] = np.arange(8)
    t = cuda.empty_batch(8, "uint8", stream)
    ptr = int(t.data_ptr())
    cuda.copy_async(ptr, src.ptr, 8, stream)
    cuda.synchronize(cuda.record(stream))
    assert t.tolist() == list(range(8))
    del t
    gc.collect()
    cuda.copy_async(ptr, src.ptr, 8, stream)  # checked (and refused) before any byte moves
    with pytest.raises(StreamError, match="not inside one device allocation"):
        cuda.synchronize(cuda.record(stream))
    with pytest.raises(ValueError, match="float64"):
        cuda.empty_batch(8, "float64", stream)


def test_registration_rules() -> None:
    with EmulatedCuda(fail_register="cudaErrorNotSupported") as cuda, \
            pytest.raises(RuntimeError, match="cudaErrorNotSupported"):
        cuda.host_register(4096, 10)
    with EmulatedCuda() as cuda:
        a = np.zeros(100, np.uint8)
        cuda.host_register(int(a.ctypes.data), 100)
        with pytest.raises(RuntimeError, match="overlaps registered"):
            cuda.host_register(int(a.ctypes.data) + 50, 10)
        cuda.host_unregister(int(a.ctypes.data))
        with pytest.raises(RuntimeError, match="not a registered range"):
            cuda.host_unregister(int(a.ctypes.data))


# --- streams, events, deferred results -----------------------------------------------------------------------


def test_order_within_a_stream_is_fifo_despite_random_delays(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream(delay_s=(0.0, 0.004))
    ran: list[int] = []
    for i in range(40):
        cuda.submit(stream, lambda i=i: ran.append(i))
    cuda.synchronize(cuda.record(stream))
    assert ran == list(range(40))


@pytest.mark.parametrize("ordered", [True, False])
def test_events_order_work_across_streams(cuda: EmulatedCuda, ordered: bool) -> None:
    a, b = cuda.new_stream(name="a"), cuda.new_stream(name="b")
    gate = threading.Event()
    ran: list[str] = []
    cuda.submit(a, lambda: gate.wait(10))
    cuda.submit(a, lambda: ran.append("a"))
    a_done = cuda.record(a)
    if ordered:
        cuda.wait(b, a_done)
    cuda.submit(b, lambda: ran.append("b"))
    b_done = cuda.record(b)
    if not ordered:  # b does not wait: it finishes while a is still held at the gate
        cuda.synchronize(b_done)
        assert ran == ["b"] and not a_done.query()
    gate.set()
    cuda.synchronize(b_done)
    cuda.synchronize(a_done)
    assert ran == (["a", "b"] if ordered else ["b", "a"])


def test_a_deferred_is_not_ready_before_its_stream_ran_it(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream()
    gate = threading.Event()
    cuda.submit(stream, lambda: gate.wait(10))
    value = cuda.submit(stream, lambda: 41)
    with pytest.raises(NotReady, match="has not run yet"):
        value.result()
    later = cuda.submit(stream, lambda: value.result() + 1)  # later work on the same stream may read it
    gate.set()
    cuda.synchronize(cuda.record(stream))
    assert value.result() == 41 and later.result() == 42
    assert cuda.stats()["submits"] == 3


def test_a_failing_submit_surfaces_once_and_the_stream_keeps_draining(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream(name="lane")

    def broken() -> int:
        raise ValueError("model exploded")

    failed = cuda.submit(stream, broken)
    after = cuda.submit(stream, lambda: "still runs")
    with pytest.raises(StreamError, match="broken.*'lane'.*ValueError: model exploded"):
        cuda.synchronize(cuda.record(stream))
    with pytest.raises(ValueError, match="model exploded"):
        failed.result()
    cuda.synchronize(cuda.record(stream))  # reported once
    assert after.result() == "still runs"


def test_an_error_after_the_event_is_not_reported_by_its_synchronize() -> None:
    cuda = EmulatedCuda(timeout_s=10)
    stream = cuda.new_stream(name="s")
    done = cuda.record(stream)
    cuda.submit(stream, lambda: 1 // 0)
    cuda.synchronize(done)  # the failure comes after this event
    with pytest.raises(StreamError, match="ZeroDivisionError"):
        cuda.close()  # ... and is not lost
    with pytest.raises(RuntimeError, match="closed"):
        cuda.submit(stream, lambda: 1)


def test_synchronize_times_out_instead_of_hanging() -> None:
    cuda = EmulatedCuda(timeout_s=0.2)
    stream = cuda.new_stream(name="stuck")
    gate = threading.Event()
    cuda.submit(stream, lambda: gate.wait(10))
    with pytest.raises(RuntimeError, match="'stuck' did not complete within 0.2 s"):
        cuda.synchronize(cuda.record(stream))
    gate.set()
    cuda.close()


def test_foreign_streams_and_events_are_refused(cuda: EmulatedCuda) -> None:
    stream = cuda.new_stream()
    with EmulatedCuda() as other, pytest.raises(TypeError, match="not a stream of this"):
        cuda.record(other.new_stream())
    with pytest.raises(TypeError, match="not an emulated event"):
        cuda.wait(stream, "event")
    with pytest.raises(TypeError, match="not a stream"):
        cuda.copy_async(0, 0, 1, "copy-stream")


# --- the real SlotCopier on the emulation ------------------------------------------------------------------


def test_slot_copier_copies_from_a_registered_ring_into_the_kernel(make_ring, cuda: EmulatedCuda) -> None:
    ring = make_ring("cam", 128, 96, 3)
    data = random_yuv(96, 128, seed=3)
    write(ring, data, 0, "nv12", "bt709", "limited")
    copy, prep = cuda.new_stream(delay_s=SLOW, name="copy"), cuda.new_stream(delay_s=(0.0, 0.0), name="prep")
    copier = SlotCopier(cuda, copy)
    try:
        pinned = copier.attach(ring_buffer(ring), "cam")
        assert pinned.registered
        ref = pinned.peek(0)
        assert ref is not None
        pending = copier.copy([(pinned, ref)])
        cuda.wait(prep, pending.event)
        (frame,) = copier.finish(pending)
        assert frame is not None
        np.testing.assert_array_equal(device_bytes(frame), data.reshape(-1))
        out = batch(cuda, 1, "uint8", prep)
        cuda.launch_preprocess([frame], HW, out, prep)
        done = cuda.record(prep)
        copier.release(pending, done)
        cuda.synchronize(done)
        np.testing.assert_array_equal(out.numpy(), CpuPreprocessor()([Image(data, "nv12", "bt709")], HW))
        stats = copier.stats()
        assert (stats["pinned"], stats["frames_copied"], stats["bytes_copied"], stats["torn"]) == \
            (True, 1, data.size, 0)
        assert cuda.stats()["bytes_copied"] == data.size  # only the frame's bytes, not the slot
    finally:
        copier.close()


def test_slot_copier_counts_a_slot_rewritten_during_the_dma(make_ring, cuda: EmulatedCuda) -> None:
    ring = make_ring("cam", 64, 48, 2)
    write(ring, random_yuv(48, 64, seed=0), 0)
    copy = cuda.new_stream(name="copy")
    copier = SlotCopier(cuda, copy)
    try:
        pinned = copier.attach(ring_buffer(ring), "cam")
        ref = pinned.peek(0)
        assert ref is not None

        def decoder_overtakes(dst: int, src: int, n: int) -> None:  # seq 3 rewrites the slot being copied
            cuda.during_copy = None
            write(ring, random_yuv(48, 64, seed=1), 1)
            write(ring, random_yuv(48, 64, seed=2), 2)

        cuda.during_copy = decoder_overtakes
        assert copier.finish(copier.copy([(pinned, ref)])) == [None]
        stats = copier.stats()
        assert stats["torn"] == 1 and stats["torn_by_camera"] == {"cam": 1} and stats["frames_copied"] == 0
        assert ring.consumed_seq == 0
        ref = pinned.peek(0)  # the next frame copies cleanly
        assert ref is not None and ref.seq == 3
        (frame,) = copier.finish(copier.copy([(pinned, ref)]))
        assert frame is not None
        np.testing.assert_array_equal(device_bytes(frame), random_yuv(48, 64, seed=2).reshape(-1))
    finally:
        copier.close()
    assert cuda.stats()["copies"] == 2


def test_slot_copier_falls_back_to_staging_when_registration_fails(make_ring) -> None:
    ring = make_ring("cam", 64, 48, 2)
    data = random_yuv(48, 64, seed=4)
    write(ring, data, 0)
    with EmulatedCuda(fail_register="cudaErrorNotSupported") as cuda:
        copier = SlotCopier(cuda, cuda.new_stream())
        try:
            pinned = copier.attach(ring_buffer(ring), "cam")
            ref = pinned.peek(0)
            assert not pinned.registered and ref is not None
            (frame,) = copier.finish(copier.copy([(pinned, ref)]))
            assert frame is not None
            np.testing.assert_array_equal(device_bytes(frame), data.reshape(-1))
            assert copier.stats()["pinned"] is False
        finally:
            copier.close()

