"""Decoder stage: file pacing/looping/skipping/downscaling, reconnects, RTSP via GStreamer, stop."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamdet.pipeline.decode import (
    CameraReader,
    CameraSource,
    DecoderSpec,
    decoder_main,
    scaled_size,
)
from streamdet.pipeline.ring import FrameRing, slot_bytes_for
from streamdet.redact import redact_text, redact_url
from streamdet.stopflag import StopFlag
from streamdet.supervisor import _child_entry
from tests.helpers.media import make_test_clip, read_frame_number
from tests.helpers.rtsp import RtspServer

SECRET = "s3cret-pw"


def wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "small": make_test_clip(d / "small.mp4", 160, 120, frames=50, fps=25),  # 2 s
        "short": make_test_clip(d / "short.mp4", 160, 120, frames=20, fps=25),
        "big": make_test_clip(d / "big.mp4", 320, 240, frames=10, fps=25),
    }


@pytest.fixture
def make_ring() -> Iterator[Callable[..., FrameRing]]:
    rings: list[FrameRing] = []

    def make(camera: str = "cam", w: int = 320, h: int = 240, slots: int = 3) -> FrameRing:
        ring = FrameRing.create(f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}", camera, slots, slot_bytes_for(w, h))
        rings.append(ring)
        return ring

    yield make
    for ring in rings:
        ring.close()
        ring.unlink()


class Running:
    """A CameraReader on a thread; stopped (and checked to stop promptly) at teardown."""

    def __init__(self, source: CameraSource, ring: FrameRing) -> None:
        self.stop = threading.Event()
        self.ring = ring
        self.reader = CameraReader(source, ring, self.stop)
        self.thread = threading.Thread(target=self.reader.run, daemon=True)
        self.started = time.monotonic()
        self.thread.start()

    def halt(self, within: float = 2.0) -> float:
        t0 = time.monotonic()
        self.stop.set()
        self.thread.join(within + 5)
        took = time.monotonic() - t0
        assert not self.thread.is_alive(), "reader did not stop"
        assert took < within, f"reader took {took:.2f} s to stop"
        return took


@pytest.fixture
def run_reader() -> Iterator[Callable[[CameraSource, FrameRing], Running]]:
    running: list[Running] = []

    def start(source: CameraSource, ring: FrameRing) -> Running:
        r = Running(source, ring)
        running.append(r)
        return r

    yield start
    for r in running:
        r.stop.set()
    for r in running:
        r.thread.join(10)


# -- pure helpers ---------------------------------------------------------------------------------


def test_redaction() -> None:
    assert redact_url(f"rtsp://admin:{SECRET}@10.0.0.5:554/s1") == "rtsp://***:***@10.0.0.5:554/s1"
    assert redact_url(f"rtsp://admin:p@ss@{SECRET}.example/s") == f"rtsp://***:***@{SECRET}.example/s"
    assert SECRET not in redact_url(f"http://h/x.m3u8?token={SECRET}&ch=2")
    assert redact_url("/data/videos/a.mp4") == "/data/videos/a.mp4"
    text = f"[Errno 111] Connection refused: 'rtsp://u:{SECRET}@127.0.0.1:1/x?password={SECRET}'"
    assert SECRET not in redact_text(text) and "127.0.0.1:1/x" in redact_text(text)
    src = CameraSource("c", f"rtsp://u:{SECRET}@h/x")
    assert SECRET not in src.redacted_url and src.is_live and not CameraSource("c", "a.mp4").is_live


def test_scaled_size() -> None:
    assert scaled_size(640, 480, 1920, 1080) == (640, 480)
    assert scaled_size(3840, 2160, 1920, 1080) == (1920, 1080)
    assert scaled_size(1000, 1000, 1920, 500) == (500, 500)
    w, h = scaled_size(640, 480, 1920, 1080, max_bytes=320 * 240 * 3)
    assert w * h * 3 <= 320 * 240 * 3 and abs(w / h - 4 / 3) < 0.02


# -- files ------------------------------------------------------------------------------------------


def test_file_realtime_is_paced(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource("cam", str(clips["small"]), realtime=True), ring)
    wait_for(lambda: ring.latest_seq >= 1, 10, "the first frame")
    t0, s0 = time.monotonic(), ring.latest_seq
    time.sleep(1.0)
    rate = (ring.latest_seq - s0) / (time.monotonic() - t0)
    assert rate <= 25 * 1.5, f"{rate:.1f} fps from a 25 fps file: not paced"
    assert rate >= 5, f"{rate:.1f} fps: far too slow"
    st = ring.status()
    assert st.state == "streaming" and time.time() - st.heartbeat < 1.0 and st.decoder_pid == os.getpid()
    r.halt()
    assert ring.status().state in ("stopped", "ended")


def test_file_fast_without_loop_ends(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource("cam", str(clips["small"]), realtime=False), ring)
    r.thread.join(10)
    took = time.monotonic() - r.started
    assert not r.thread.is_alive(), "a file without loop must end the reader"
    st = ring.status()
    assert st.state == "ended" and st.frames_decoded == 50 and st.latest_seq == 50
    assert took < 1.8, f"realtime=False took {took:.2f} s for a 2 s file"
    f = ring.read_latest(0)
    assert (f.frame_index, read_frame_number(f.image), f.pts) == (49, 49, pytest.approx(49 / 25))
    assert f.dropped == 49 and f.ts_capture <= time.time()


def test_file_loop_restarts_pts_keeps_counting(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource("cam", str(clips["short"]), realtime=False, loop=True), ring)
    wait_for(lambda: ring.latest_seq > 45, 10, "two loops of a 20-frame file")
    f = ring.read_latest(0)
    assert f.frame_index == f.seq - 1  # frame_index counts across loops
    assert read_frame_number(f.image) == f.frame_index % 20  # content restarts
    assert f.pts == pytest.approx((f.frame_index % 20) / 25)  # pts restarts
    assert ring.status().reconnects == 0 and ring.status().state == "streaming"
    r.halt()


def test_max_fps_skips_frames(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource("cam", str(clips["small"]), realtime=False, max_fps=5), ring)
    r.thread.join(10)
    st = ring.status()
    assert st.state == "ended" and st.frames_decoded == 50
    assert 9 <= st.latest_seq <= 11, st  # 2 s of video at 5 fps
    assert st.frames_skipped == 50 - st.latest_seq
    f = ring.read_latest(0)
    assert read_frame_number(f.image) == f.frame_index  # index names the source frame


def test_downscale_above_max_size_records_source_size(clips, make_ring, run_reader) -> None:
    ring = make_ring(w=100, h=100)
    run_reader(CameraSource("cam", str(clips["big"]), realtime=False, max_width=100, max_height=100), ring)
    wait_for(lambda: ring.status().state == "ended", 10, "the end of the file")
    f = ring.read_latest(0)
    assert (f.width, f.height, f.src_width, f.src_height) == (100, 75, 320, 240)
    assert f.image.shape == (75, 100, 3) and read_frame_number(f.image) == 9


def test_missing_file_backs_off_then_streams(tmp_path, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    path = tmp_path / "later.mp4"
    ring = make_ring()
    src = CameraSource("cam", str(path), realtime=False, loop=True, backoff_initial_s=0.1,
                       backoff_max_s=0.3, backoff_jitter=0.1)
    r = run_reader(src, ring)
    wait_for(lambda: ring.status().reconnects >= 2, 10, "a few reconnect attempts")
    st = ring.status()
    assert st.state in ("backoff", "connecting") and "No such file" in st.last_error
    assert ring.latest_seq == 0
    make_test_clip(path, 160, 120, frames=10)
    wait_for(lambda: ring.latest_seq > 5, 10, "frames once the file exists")
    assert ring.status().state == "streaming"
    assert any("camera=cam" in rec.getMessage() and "reconnecting in" in rec.getMessage()
               for rec in caplog.records)
    r.halt()


def test_open_timeout_on_silent_server(make_ring, run_reader) -> None:
    """A server that accepts the TCP connection and never answers: open gives up after open_timeout_s."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        ring = make_ring()
        src = CameraSource("cam", f"rtsp://127.0.0.1:{port}/x", open_timeout_s=0.5, read_timeout_s=0.5,
                           backoff_initial_s=0.1, backoff_max_s=0.2)
        r = run_reader(src, ring)
        wait_for(lambda: ring.status().reconnects >= 2, 10, "open timeouts and reconnects")
        assert ring.status().last_error
        r.halt(within=2.0)


# -- RTSP through a real GStreamer server -------------------------------------------------------


@pytest.mark.slow
def test_rtsp_stream_stall_drop_and_resume(clips, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="streamdet.decode")
    server = RtspServer({"/cam": clips["small"]})
    server.start()
    try:
        url = server.url("/cam").replace("rtsp://", f"rtsp://viewer:{SECRET}@")
        ring = make_ring()
        src = CameraSource("cam", url, open_timeout_s=5, read_timeout_s=1.5, stall_timeout_s=1.5,
                           backoff_initial_s=0.2, backoff_max_s=0.5)
        r = run_reader(src, ring)
        wait_for(lambda: ring.latest_seq >= 10, 20, "RTSP frames")
        assert ring.status().state == "streaming"
        f = ring.read_latest(0)
        assert (f.width, f.height) == (160, 120) and read_frame_number(f.image) < 50

        # a server that stops sending (SIGSTOP): the read timeout ends the session
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: ring.status().state != "streaming", 10, "the stall to be noticed")
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        wait_for(lambda: ring.status().state == "streaming", 20, "streaming again after SIGCONT")

        # the server goes away, then comes back on the same port
        server.stop()
        wait_for(lambda: ring.status().state != "streaming", 10, "the drop to be noticed")
        seq_down = ring.latest_seq
        reconnects = ring.status().reconnects
        time.sleep(0.5)
        assert ring.status().reconnects > reconnects  # retrying while down
        server.start()
        wait_for(lambda: ring.latest_seq > seq_down + 5, 20, "frames after the server restarted")
        assert ring.status().state == "streaming"
        r.halt(within=2.5)
    finally:
        server.stop()
    assert SECRET not in caplog.text
    assert "camera=cam" in caplog.text and "***@127.0.0.1" in caplog.text
    assert SECRET not in ring.status().last_error


def test_rtsp_helper_fails_loudly_without_gstreamer(monkeypatch) -> None:
    """Missing GStreamer must fail the RTSP tests with the packages to install, never skip."""
    from tests.helpers import rtsp

    monkeypatch.setattr(rtsp, "SYSTEM_PYTHON", "/nonexistent/python3")
    with pytest.raises(pytest.fail.Exception, match="gir1.2-gst-rtsp-server-1.0"):
        rtsp.RtspServer({"/cam": "x.mp4"}).start()


# -- the decoder process ------------------------------------------------------------------------


def test_decoder_main_isolates_cameras_restarts_crashed_thread_and_stops(clips, make_ring, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    good = make_ring("good")
    down = make_ring("down")
    late_name = f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    spec = DecoderSpec(
        sources=[
            CameraSource("good", str(clips["small"]), loop=True),
            CameraSource("down", f"rtsp://u:{SECRET}@127.0.0.1:9/none", backoff_initial_s=5, backoff_max_s=30),
            CameraSource("late", str(clips["small"]), realtime=False, loop=True),
        ],
        ring_names={"good": good.name, "down": down.name, "late": late_name},
    )
    stop = threading.Event()
    t = threading.Thread(target=decoder_main, args=(spec, stop), daemon=True)
    t.start()
    late = None
    try:
        wait_for(lambda: good.latest_seq >= 5, 10, "the good camera despite the others")
        wait_for(lambda: down.status().state == "backoff", 10, "the down camera in backoff")
        wait_for(lambda: "reader crashed" in caplog.text, 10, "the crash of the camera without a ring")
        late = FrameRing.create(late_name, "late", 3, slot_bytes_for(320, 240))  # restarted after ~1 s
        wait_for(lambda: late.latest_seq >= 5, 15, "the restarted camera thread")
    finally:
        t0 = time.monotonic()
        stop.set()
        t.join(10)
        took = time.monotonic() - t0
        if late is not None:
            late.close()
            late.unlink()
    assert not t.is_alive() and took < 3.0, f"decoder_main took {took:.2f} s to stop"
    assert good.status().state == "stopped" and down.status().state == "stopped"
    assert SECRET not in caplog.text


def test_decoder_main_in_spawned_process(clips, make_ring, capfd) -> None:
    ring = make_ring("cam1")
    spec = DecoderSpec(sources=[CameraSource("cam1", str(clips["small"]), loop=True)],
                       ring_names={"cam1": ring.name})
    ctx = mp.get_context("spawn")
    stop = StopFlag(ctx)
    # Started exactly as the supervisor starts it (bootstrap sets up logging, signals).
    proc = ctx.Process(target=_child_entry, args=("decoder-cam1", "info", decoder_main, (spec, stop)))
    proc.start()
    try:
        wait_for(lambda: ring.latest_seq >= 5, 30, "frames from the decoder process")
        assert ring.status().decoder_pid == proc.pid
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert proc.exitcode == 0
    err = capfd.readouterr().err
    assert "camera=cam1" in err and "decoder stopped" in err
    assert "leaked" not in err and "Traceback" not in err


def test_decoder_never_imports_torch() -> None:
    code = ("import sys, streamdet.pipeline.decode, streamdet.pipeline.ring; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "ok", res.stderr
