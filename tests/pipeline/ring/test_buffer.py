"""FrameRing: shared-memory layout v2, latest-wins and lossless flow control, planes, caller buffers,
seqlock, cross-process lifetime."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from streamdet.pipeline import types as image_mod
from streamdet.pipeline.ring.buffer import FrameRing, WriteAborted
from streamdet.pipeline.ring.layout import VERSION, slot_bytes_for
from streamdet.pipeline.ring.slots import SlotReader
from streamdet.pipeline.types import PIX_FMTS as RING_PIX_FMTS
from streamdet.pipeline.types import Image
from tests.helpers.ring_reader import RingCollector


def _name() -> str:
    return f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ring():
    r = FrameRing.create(_name(), "cam1", 4, slot_bytes_for(64, 48))
    yield r
    r.close()
    r.unlink()


def _img(w: int, h: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value % 256, np.uint8)


def test_write_read_roundtrip(ring: FrameRing) -> None:
    assert ring.read_latest(0) is None
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    seq = ring.write(img, frame_index=7, pts=1.5, ts_capture=123.25, src_size=(128, 96))
    assert seq == 1
    f = ring.read_latest(0)
    assert f is not None
    assert (f.camera, f.seq, f.frame_index, f.pts, f.ts_capture) == ("cam1", 1, 7, 1.5, 123.25)
    assert (f.width, f.height, f.src_width, f.src_height, f.pix_fmt, f.dropped) == (64, 48, 128, 96, "bgr24", 0)
    assert np.array_equal(f.image, img)
    img[:] = 0  # the frame is a copy
    assert f.image.any()
    assert ring.read_latest(1) is None


def test_latest_size_is_the_newest_frames_source_size_without_reading_it(ring: FrameRing) -> None:
    assert ring.latest_size() is None  # nothing written yet
    ring.write(_img(64, 48, 1), frame_index=0, pts=0, ts_capture=0, src_size=(128, 96))
    assert ring.latest_size() == (128, 96)
    ring.write(_img(32, 24, 2), frame_index=1, pts=0.04, ts_capture=0)  # no source size: the frame's own
    assert ring.latest_size() == (32, 24)
    assert ring.status().consumed_seq == 0  # nothing was taken from the worker


def test_each_slot_records_the_frames_not_written_before_it(ring: FrameRing) -> None:
    ring.write(_img(64, 48, 1), frame_index=0, pts=0, ts_capture=0)
    first = ring.read_latest(0)
    ring.add_counts(skipped=3, behind=1)  # max_fps skipped three frames, one paced frame was late
    ring.write(_img(64, 48, 2), frame_index=5, pts=0.2, ts_capture=0)
    second = ring.read_latest(first.seq)
    assert (first.not_written, second.not_written) == (0, 4)
    assert ring.not_written() == 4


def test_latest_wins_and_dropped(ring: FrameRing) -> None:
    for i in range(10):  # 10 frames into 4 slots: the writer laps, never waits
        ring.write(_img(64, 48, i), frame_index=i, pts=i / 25, ts_capture=time.time())
    f = ring.read_latest(0)
    assert (f.seq, f.frame_index, f.dropped) == (10, 9, 9)
    assert f.image[0, 0, 0] == 9
    assert ring.read_latest(10) is None
    ring.write(_img(64, 48, 10), frame_index=10, pts=0.4, ts_capture=time.time())
    assert ring.read_latest(10).dropped == 0
    assert ring.latest_seq == 11


def test_resolution_change_and_other_pixel_formats(ring: FrameRing) -> None:
    ring.write(_img(64, 48, 1), frame_index=0, pts=0, ts_capture=0)
    ring.write(_img(32, 16, 2), frame_index=1, pts=0, ts_capture=0)
    f = ring.read_latest(0)
    assert f.image.shape == (16, 32, 3) and (f.width, f.height) == (32, 16)
    assert (f.src_width, f.src_height) == (32, 16)  # default: the image size
    nv12 = np.arange(48 * 3 // 2 * 64, dtype=np.uint32).astype(np.uint8).reshape(72, 64)
    ring.write(nv12, frame_index=2, pts=0, ts_capture=0, pix_fmt="nv12")
    f = ring.read_latest(2)
    assert (f.pix_fmt, f.width, f.height) == ("nv12", 64, 48)
    assert np.array_equal(f.image, nv12)


def test_oversize_and_bad_frames_raise(ring: FrameRing) -> None:
    with pytest.raises(ValueError, match="exceeds"):
        ring.write(_img(65, 48, 0), frame_index=0, pts=0, ts_capture=0)
    with pytest.raises(ValueError):
        ring.write(np.zeros((48, 64, 3), np.float32), frame_index=0, pts=0, ts_capture=0)
    with pytest.raises(ValueError):
        ring.write(np.zeros((48, 64), np.uint8), frame_index=0, pts=0, ts_capture=0)
    assert ring.latest_seq == 0


def test_status_state_error_counters_and_message_seq(ring: FrameRing) -> None:
    st = ring.status()
    assert (st.camera, st.slots, st.state, st.latest_seq, st.reconnects) == ("cam1", 4, "starting", 0, 0)
    assert st.slot_bytes >= 64 * 48 * 3
    ring.heartbeat(pid=4242)
    ring.set_state("backoff", error="x" * 1000)
    ring.add_counts(decoded=5, skipped=2, reconnects=1, behind=3, converted=4, decode_ns=123_456_789_012)
    ring.add_counts(behind=1, decode_ns=1)
    ring.set_lossless(True)
    assert [ring.next_message_seq() for _ in range(3)] == [0, 1, 2]
    other = FrameRing.attach(ring.name)
    try:
        st = other.status()
        assert st.state == "backoff" and st.decoder_pid == 4242 and time.time() - st.heartbeat < 5
        assert (st.frames_decoded, st.frames_skipped, st.reconnects) == (5, 2, 1)
        assert (st.frames_behind, st.frames_converted, st.decode_ns) == (4, 4, 123_456_789_013)
        assert st.lossless and other.lossless and st.consumed_seq == 0
        assert len(st.last_error) == 256 and st.error_time > 0
        assert other.next_message_seq() == 3  # shared: survives a worker restart
    finally:
        other.close()
    with pytest.raises(ValueError):
        ring.set_state("nonsense")


def test_attach_rejects_foreign_segment() -> None:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=_name(), create=True, size=8192)
    try:
        with pytest.raises(ValueError, match="not a streamdet frame ring"):
            FrameRing.attach(shm.name)
    finally:
        shm.close()
        shm.unlink()


# -- v2: colour tags, planes, caller buffers ---------------------------------------------------------


def test_v2_header_and_slot_colour_tags_roundtrip(ring: FrameRing) -> None:
    assert VERSION == 2 and RING_PIX_FMTS == image_mod.PIX_FMTS
    i420 = np.random.default_rng(1).integers(0, 256, (72, 64), dtype=np.uint8)
    ring.write(i420, frame_index=3, pts=0.12, ts_capture=5.0, pix_fmt="yuv420p", color_matrix="bt709",
               color_range="full", src_size=(640, 480))
    ring.write(_img(64, 48, 7), frame_index=4, pts=0.16, ts_capture=6.0)
    other = FrameRing.attach(ring.name)  # tags are in shared memory, not in the writer's object
    try:
        f = other.read_next(0)
        assert (f.seq, f.pix_fmt, f.color_matrix, f.color_range, f.width, f.height) == \
            (2, "bgr24", "bt601", "limited", 64, 48)  # latest wins: newest
        ring.write(i420, frame_index=5, pts=0.2, ts_capture=7.0, pix_fmt="yuv420p", color_matrix="bt709",
                   color_range="full")
        f = other.read_latest(2)
        assert (f.pix_fmt, f.color_matrix, f.color_range, f.width, f.height) == ("yuv420p", "bt709", "full", 64, 48)
        img = f.to_image()
        assert isinstance(img, Image) and (img.pix_fmt, img.color_matrix, img.color_range) == ("yuv420p", "bt709",
                                                                                                "full")
        assert img.hw == (48, 64) and np.array_equal(img.data, i420)
        assert other.status().consumed_seq == 3
    finally:
        other.close()
    with pytest.raises(ValueError, match="colour"):
        ring.write(i420, frame_index=0, pts=0, ts_capture=0, pix_fmt="yuv420p", color_matrix="bt2020")
    with pytest.raises(ValueError, match="even"):
        ring.write(np.zeros((45, 64), np.uint8), frame_index=0, pts=0, ts_capture=0, pix_fmt="yuv420p")
    assert ring.latest_seq == 3


def test_attach_rejects_other_version(ring: FrameRing) -> None:
    ring._hdr["version"] = 1
    with pytest.raises(ValueError, match="v2"):
        FrameRing.attach(ring.name)


def _padded_frame(width: int, height: int, pix_fmt: str, seed: int) -> av.VideoFrame:
    """A PyAV frame with random pixels; its planes' line sizes are padded beyond the width."""
    frame = av.VideoFrame(width, height, pix_fmt)
    rng = np.random.default_rng(seed)
    for plane in frame.planes:
        buf = np.frombuffer(plane, np.uint8)
        buf[:] = rng.integers(0, 256, buf.size, dtype=np.uint8)
    return frame


def _views(frame: av.VideoFrame, row_bytes: list[int]) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :n]
            for p, n in zip(frame.planes, row_bytes, strict=True)]


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
def test_write_planes_from_padded_strided_views_gives_packed_layout(pix_fmt: str) -> None:
    w, h = 66, 50  # 66 is not a multiple of PyAV's line alignment: every plane is padded
    frame = _padded_frame(w, h, pix_fmt, seed=3)
    assert frame.planes[0].line_size > w
    rows = [w, w // 2, w // 2] if pix_fmt == "yuv420p" else [w, w]
    planes = _views(frame, rows)
    assert not planes[0].flags.c_contiguous  # a strided view, as the decoder passes them
    expected = frame.to_ndarray()  # PyAV's own packed (H * 3 // 2, W) I420 / NV12 array
    assert expected.shape == (h * 3 // 2, w)
    with FrameRing.create(_name(), "cam", 2, slot_bytes_for(w, h, "yuv420p")) as ring:
        try:
            seq = ring.write_planes(planes, width=w, height=h, pix_fmt=pix_fmt, color_matrix="bt601",
                                    color_range="limited", frame_index=9, pts=0.36, ts_capture=1.0,
                                    src_size=(w * 2, h * 2))
            f = ring.read_latest(0)
            assert (seq, f.pix_fmt, f.width, f.height, f.src_width, f.src_height) == (1, pix_fmt, w, h, w * 2, h * 2)
            assert np.array_equal(f.image, expected)
            if pix_fmt == "nv12":  # UV may also come as (H/2, W/2, 2)
                uv = planes[1].reshape(h // 2, w // 2, 2)
                ring.write_planes([planes[0], uv], width=w, height=h, pix_fmt="nv12", color_matrix="bt601",
                                  color_range="limited", frame_index=10, pts=0.4, ts_capture=1.0)
                assert np.array_equal(ring.read_latest(1).image, expected)
        finally:
            ring.unlink()


def test_write_planes_rejects_bad_planes(ring: FrameRing) -> None:
    y, c = np.zeros((48, 64), np.uint8), np.zeros((24, 32), np.uint8)
    kw = dict(color_matrix="bt601", color_range="limited", frame_index=0, pts=0.0, ts_capture=0.0)
    with pytest.raises(ValueError, match="plane 2"):
        ring.write_planes([y, c, np.zeros((24, 31), np.uint8)], width=64, height=48, pix_fmt="yuv420p", **kw)
    with pytest.raises(ValueError, match="takes 3 planes"):
        ring.write_planes([y, c], width=64, height=48, pix_fmt="yuv420p", **kw)
    with pytest.raises(ValueError, match="even"):
        ring.write_planes([y, c, c], width=64, height=47, pix_fmt="yuv420p", **kw)
    with pytest.raises(ValueError, match="uint8"):
        ring.write_planes([y.astype(np.int16), c, c], width=64, height=48, pix_fmt="yuv420p", **kw)
    with pytest.raises(ValueError, match="yuv420p or nv12"):
        ring.write_planes([y, c, c], width=64, height=48, pix_fmt="bgr24", **kw)
    big = np.zeros((96, 128), np.uint8)
    with pytest.raises(ValueError, match="exceeds"):
        ring.write_planes([big, y, y], width=128, height=96, pix_fmt="yuv420p", **kw)
    assert ring.latest_seq == 0 and int(ring._lock[1]) == 0  # nothing half-written


def test_read_into_caller_buffer(ring: FrameRing) -> None:
    img = np.random.default_rng(2).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ring.write(img, frame_index=0, pts=0, ts_capture=0)
    out = np.zeros(2 * ring.slot_bytes, np.uint8)
    f = ring.read_latest(0, out=out)
    assert np.array_equal(f.image, img) and np.shares_memory(f.image, out) and f.image.shape == (48, 64, 3)
    ring.write(_img(64, 48, 5), frame_index=1, pts=0, ts_capture=0)
    f2 = ring.read_next(1, out=out[1000:])  # any 1-D slice large enough
    assert (f2.image == 5).all() and np.shares_memory(f2.image, out)
    with pytest.raises(ValueError, match="too small"):
        ring.read_latest(0, out=np.empty(64 * 48 * 3 - 1, np.uint8))
    for bad in (np.empty((48, 64, 3), np.uint8), np.empty(10_000, np.float32), out[::2]):
        with pytest.raises(ValueError, match="1-D contiguous uint8"):
            ring.read_latest(0, out=bad)


# -- lossless flow control ----------------------------------------------------------------------------


def test_lossless_slow_reader_gets_every_frame_once_in_order() -> None:
    """A writer thread faster than a slow reader (another mapping): every frame arrives once, in
    order, and the writer never gets more than ``slots`` frames ahead."""
    with FrameRing.create(_name(), "cam", 3, slot_bytes_for(64, 48)) as ring:
        try:
            ring.set_lossless(True)
            stop = threading.Event()
            n = 40

            def writer() -> None:
                for k in range(1, n + 1):
                    ring.write(_img(64, 48, k), frame_index=k - 1, pts=k / 25, ts_capture=0.0, stop=stop)

            t = threading.Thread(target=writer, daemon=True)
            with RingCollector(ring, delay=0.01) as reader:
                t.start()
                deadline = time.monotonic() + 20
                while len(reader.frames) < n and time.monotonic() < deadline:
                    time.sleep(0.01)
                t.join(5)
                frames = list(reader.frames)
            assert [f.seq for f in frames] == list(range(1, n + 1))
            assert [f.frame_index for f in frames] == list(range(n))
            assert all(f.dropped == 0 and (f.image == f.seq).all() for f in frames)
            assert 1 <= reader.max_lead <= 3
            assert ring.status().consumed_seq == n
        finally:
            stop.set()
            ring.unlink()


def test_lossless_writer_blocks_instead_of_overwriting_and_stop_aborts_it(ring: FrameRing) -> None:
    ring.set_lossless(True)
    for k in range(1, 5):  # 4 slots: fills the ring
        ring.write(_img(64, 48, k), frame_index=k, pts=0, ts_capture=0)
    assert not ring.writable()
    assert ring.wait_writable(timeout=0.05) is False
    stop = threading.Event()
    beats: list[float] = []
    result: dict[str, object] = {}

    def blocked_write() -> None:
        try:
            result["seq"] = ring.write(_img(64, 48, 99), frame_index=5, pts=0, ts_capture=0, stop=stop,
                                       beat=lambda: beats.append(time.monotonic()))
        except WriteAborted as exc:
            result["aborted"] = (exc, time.monotonic())

    t = threading.Thread(target=blocked_write, daemon=True)
    t.start()
    time.sleep(1.2)
    assert t.is_alive() and ring.latest_seq == 4 and len(beats) >= 2  # waits, heartbeating
    t0 = time.monotonic()
    stop.set()
    t.join(2)
    assert not t.is_alive() and "aborted" in result and result["aborted"][1] - t0 < 1.0
    assert ring.latest_seq == 4 and ring.consumed_seq == 0
    # nothing was overwritten: the reader gets 1, 2, 3, 4; each read frees exactly one slot
    got = []
    for k in range(4):
        f = ring.read_next(k)
        got.append((f.seq, f.dropped, int(f.image[0, 0, 0])))
        assert ring.consumed_seq == k + 1 and ring.writable()
        ring.write(_img(64, 48, 5 + k), frame_index=5 + k, pts=0, ts_capture=0)
        assert not ring.writable()
    assert got == [(k, 0, k) for k in range(1, 5)]


def test_resume_seq_after_reader_restart(ring: FrameRing) -> None:
    ring.set_lossless(True)
    for k in range(1, 4):
        ring.write(_img(64, 48, k), frame_index=k, pts=0, ts_capture=0)
    first = FrameRing.attach(ring.name)
    assert [first.read_next(s).seq for s in (0, 1)] == [1, 2]
    first.close()  # the worker dies after frame 2
    second = FrameRing.attach(ring.name)
    try:
        after = second.resume_seq()
        assert after == 2
        f = second.read_next(after)
        assert (f.seq, f.dropped, int(f.image[0, 0, 0])) == (3, 0, 3)  # nothing lost, nothing repeated
        assert second.read_next(3) is None
        ring.set_lossless(False)  # latest wins: resume from the newest frame, no backlog
        ring.write(_img(64, 48, 4), frame_index=4, pts=0, ts_capture=0)
        assert second.resume_seq() == 4
    finally:
        second.close()


def test_read_next_latest_wins_mode_returns_newest(ring: FrameRing) -> None:
    for k in range(1, 8):
        ring.write(_img(64, 48, k), frame_index=k, pts=0, ts_capture=0)  # writer laps: no waiting
    f = ring.read_next(2)
    assert (f.seq, f.dropped) == (7, 4) and ring.consumed_seq == 7


@pytest.mark.parametrize("lossless", [False, True])
def test_read_next_without_pixels_takes_the_same_frame_and_frees_its_slot(ring: FrameRing, lossless: bool) -> None:
    """A frame the detector skips: the same pick, header and consumption as a copying read, no pixels."""
    ring.set_lossless(lossless)
    for k in range(1, 4):
        ring.write(_img(64, 48, k), frame_index=10 + k, pts=k / 25, ts_capture=100.0 + k, src_size=(128, 96))
    meta = ring.read_next(0, pixels=False)
    assert meta is not None and meta.image.size == 0
    want_seq = 1 if lossless else 3
    assert (meta.seq, meta.frame_index, meta.ts_capture, meta.dropped) == (want_seq, 10 + want_seq,
                                                                          100.0 + want_seq, want_seq - 1)
    assert (meta.width, meta.height, meta.src_width, meta.src_height, meta.pix_fmt) == (64, 48, 128, 96, "bgr24")
    assert ring.consumed_seq == want_seq
    if lossless:  # in order: the next read (with pixels) is frame 2, whole
        f = ring.read_next(meta.seq)
        assert f is not None and f.seq == 2 and (f.image == 2).all()
    assert ring.read_next(3, pixels=False) is None


def test_peek_copies_one_exact_frame_and_takes_nothing_from_the_reader(ring: FrameRing) -> None:
    """The live view's read: the newest or a given seq, a copy, never a neighbour of the seq asked
    for, and ``consumed_seq`` untouched (so a lossless writer is not freed by an observer)."""
    assert ring.peek() is None and ring.peek(1) is None
    ring.set_lossless(True)
    for k in range(1, 4):
        ring.write(_img(64, 48, k), frame_index=k, pts=k / 25, ts_capture=0)
    newest, second = ring.peek(), ring.peek(2)
    assert (newest.seq, newest.frame_index, newest.dropped, int(newest.image[0, 0, 0])) == (3, 3, 0, 3)
    assert (second.seq, second.pts, second.dropped, int(second.image[0, 0, 0])) == (2, 2 / 25, 0, 2)
    assert ring.peek(0) is None and ring.peek(4) is None and ring.consumed_seq == 0
    assert ring.read_next(0).seq == 1 and ring.read_next(1).seq == 2  # frees two slots
    for k in range(4, 6):
        ring.write(_img(64, 48, k), frame_index=k, pts=0, ts_capture=0)
    assert ring.peek(1) is None  # overwritten (seq 5 took its slot)
    assert (second.seq, int(second.image[0, 0, 0])) == (2, 2)  # a copy: the ring moved on, it did not
    ring._lock[3 % 4] += 1  # seq 3's slot is being rewritten: no other frame instead
    assert ring.peek(3) is None and ring.peek(4).seq == 4
    ring._lock[3 % 4] += 1
    assert ring.peek(3).seq == 3 and ring.consumed_seq == 2


@pytest.mark.parametrize("lossless", [True, False])
def test_frame_reads_agree_with_a_slot_reader_of_the_buffer(ring: FrameRing, lossless: bool) -> None:
    """A SlotReader over ``ring.buffer`` (the DMA path's view) picks the slot read_next then copies;
    an outside view of the buffer blocks close() until it is dropped; frames outlive the ring."""
    ring.set_lossless(lossless)
    rng = np.random.default_rng(3)
    for k in range(3):
        ring.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), frame_index=10 + k, pts=k, ts_capture=5.0 + k,
                   src_size=(128, 96), color_range="full")
    reader = SlotReader(ring.buffer)
    ref = reader.peek(1)
    expected = ref.to_frame("cam1", 1, reader.data(ref).reshape(48, 64, 3).copy())
    frame = ring.read_next(1)
    assert frame.seq == (2 if lossless else 3) and frame.dropped == (0 if lossless else 1)
    assert {k: v for k, v in vars(frame).items() if k != "image"} == \
        {k: v for k, v in vars(expected).items() if k != "image"}
    assert np.array_equal(frame.image, expected.image) and reader.still_valid(ref)
    assert ring.consumed_seq == frame.seq and reader.resume_seq() == (frame.seq if lossless else 3)
    with pytest.raises(BufferError):
        ring.close()  # the outside reader's views still point into the mapping
    reader.close()
    del ref, expected
    ring.close()
    ring.close()  # idempotent
    assert frame.image.shape == (48, 64, 3) and frame.image.any()


def _writer_proc(name: str, seconds: float) -> None:
    """Child: writes frames of varying size, every byte = seq % 256, as fast as it can."""
    ring = FrameRing.attach(name)
    sizes = [(320, 240), (160, 120), (320, 200)]
    frames = [np.full((h, w, 3), v, np.uint8) for v in range(256) for w, h in sizes]
    end = time.monotonic() + seconds
    seq = 1
    while time.monotonic() < end:
        ring.write(frames[(seq % 256) * 3 + seq % 3], frame_index=seq, pts=seq, ts_capture=0.0)
        seq += 1
    ring.close()


def test_seqlock_consistency_under_concurrent_writer() -> None:
    ring = FrameRing.create(_name(), "cam1", 3, slot_bytes_for(320, 240))
    proc = mp.get_context("spawn").Process(target=_writer_proc, args=(ring.name, 1.5))
    try:
        proc.start()
        last, reads = 0, 0
        out = np.empty(320 * 240 * 3, np.uint8)
        deadline = time.monotonic() + 20
        while proc.is_alive() or ring.latest_seq > last:
            assert time.monotonic() < deadline
            f = ring.read_latest(last, out=out if reads % 2 else None)
            if f is None:
                continue
            reads += 1
            assert f.seq > last and f.frame_index == f.seq and f.dropped == f.seq - last - 1
            w, h = [(320, 240), (160, 120), (320, 200)][f.seq % 3]
            assert f.image.shape == (h, w, 3)
            assert (f.image == f.seq % 256).all(), f"torn frame at seq {f.seq}"
            last = f.seq
        proc.join(10)
        assert proc.exitcode == 0
        assert last == ring.latest_seq > 1000 and reads > 50
    finally:
        if proc.is_alive():
            proc.kill()
        ring.close()
        ring.unlink()


_LIFETIME_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, os, signal, sys, time
    import numpy as np
    from streamdet.pipeline.ring.buffer import FrameRing

    def child(name, q):
        ring = FrameRing.attach(name)
        f = ring.read_latest(0)
        ring.write(np.full((48, 64, 3), 9, np.uint8), frame_index=1, pts=0.0, ts_capture=0.0)
        q.put((f.frame_index, ring.next_message_seq()))
        if sys.argv[2] == "kill":
            time.sleep(60)  # SIGKILLed by the parent while attached
        ring.close()

    if __name__ == "__main__":
        name = sys.argv[1]
        ring = FrameRing.create(name, "cam", 2, 64 * 48 * 3)
        ring.write(np.zeros((48, 64, 3), np.uint8), frame_index=5, pts=0.0, ts_capture=0.0)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        p = ctx.Process(target=child, args=(name, q))
        p.start()
        assert q.get(timeout=30) == (5, 0)
        if sys.argv[2] == "kill":
            os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        assert ring.read_latest(1).image[0, 0, 0] == 9
        ring.close()
        ring.unlink()
        ring.unlink()  # idempotent
        assert not os.path.exists("/dev/shm/" + name)
        print("OK")
    """
)


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_spawned_child_attach_no_leak_no_tracker_warning(tmp_path: Path, how: str) -> None:
    """A spawned child attaches, reads and writes; it exits normally or is SIGKILLed; the owner
    unlinks; /dev/shm is clean and the resource tracker prints nothing (no 'leaked', no KeyError)."""
    script = tmp_path / "lifetime.py"
    script.write_text(_LIFETIME_SCRIPT)
    name = _name()
    res = subprocess.run([sys.executable, str(script), name, how], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "OK"
    assert res.stderr.strip() == "", res.stderr
    assert not Path("/dev/shm", name).exists()


def test_child_killed_mid_write_does_not_block_reader(ring: FrameRing) -> None:
    """A writer that died with a slot's lock odd: readers fall back to the newest stable slot."""
    ring.write(_img(64, 48, 1), frame_index=0, pts=0, ts_capture=0)
    ring.write(_img(64, 48, 2), frame_index=1, pts=0, ts_capture=0)
    ring._lock[2] += 1  # seq 2's slot: simulate a crash in the middle of rewriting it
    f = ring.read_latest(0, retries=3)
    assert f is not None and f.seq == 1 and f.dropped == 0


def test_ring_never_imports_torch() -> None:
    code = "import sys, streamdet.pipeline.ring.buffer; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "ok"
