"""FrameRing: shared-memory layout, latest-wins semantics, seqlock, cross-process lifetime."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from streamdet.pipeline.ring import FrameRing, slot_bytes_for


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
    ring.add_counts(decoded=5, skipped=2, reconnects=1)
    assert [ring.next_message_seq() for _ in range(3)] == [0, 1, 2]
    other = FrameRing.attach(ring.name)
    try:
        st = other.status()
        assert st.state == "backoff" and st.decoder_pid == 4242 and time.time() - st.heartbeat < 5
        assert (st.frames_decoded, st.frames_skipped, st.reconnects) == (5, 2, 1)
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
        deadline = time.monotonic() + 20
        while proc.is_alive() or ring.latest_seq > last:
            assert time.monotonic() < deadline
            f = ring.read_latest(last)
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
    from streamdet.pipeline.ring import FrameRing

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
    code = "import sys, streamdet.pipeline.ring; assert 'torch' not in sys.modules; print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "ok"
