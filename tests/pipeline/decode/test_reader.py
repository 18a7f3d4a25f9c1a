"""Decoder stage: YUV planes and colour tags, conversions, lossless flow control, pacing/looping/
skipping/behind, start gate, reconnects, RTSP via GStreamer, stop."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import ColorRange, Colorspace

from streamdet.pipeline.decode.reader import CameraReader, CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.types import Frame
from streamdet.redact import redact_text, redact_url
from tests.helpers.decoder import Running, number, wait_for
from tests.helpers.media import make_test_clip
from tests.helpers.ring_reader import RingCollector
from tests.helpers.rtsp import RtspServer
from tests.helpers.yuv_clips import decoded_frames, luma, make_yuv_clip

SECRET = "s3cret-pw"


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "small": make_test_clip(d / "small.mp4", 160, 120, frames=50, fps=25),  # 2 s
        "short": make_test_clip(d / "short.mp4", 160, 120, frames=20, fps=25),
        "big": make_test_clip(d / "big.mp4", 320, 240, frames=10, fps=25),
    }


# -- pure helpers ---------------------------------------------------------------------------------


def test_redaction() -> None:
    assert redact_url(f"rtsp://admin:{SECRET}@10.0.0.5:554/s1") == "rtsp://***:***@10.0.0.5:554/s1"
    assert redact_url(f"rtsp://admin:p@ss@{SECRET}.example/s") == f"rtsp://***:***@{SECRET}.example/s"
    assert SECRET not in redact_url(f"http://h/x.m3u8?token={SECRET}&ch=2")
    assert redact_url("/data/videos/a.mp4") == "/data/videos/a.mp4"
    text = f"[Errno 111] Connection refused: 'rtsp://u:{SECRET}@127.0.0.1:1/x?password={SECRET}'"
    assert SECRET not in redact_text(text) and "127.0.0.1:1/x" in redact_text(text)
    src = CameraSource.of("c", f"rtsp://u:{SECRET}@h/x")
    assert SECRET not in src.redacted_url and src.is_live and not CameraSource.of("c", "a.mp4").is_live


# -- pixels and colour tags ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yuv_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("yuv")
    return {
        "yuv420p": make_yuv_clip(d / "i420.mp4", frames=6),
        "yuvj420p": make_yuv_clip(d / "j420.mp4", frames=6, pix_fmt="yuvj420p"),
        "bt709": make_yuv_clip(d / "bt709.mp4", frames=6, colorspace=1),
        "yuv444p": make_yuv_clip(d / "444.mp4", frames=6, pix_fmt="yuv444p"),
        "odd444": make_yuv_clip(d / "odd.mp4", 161, 121, frames=6, pix_fmt="yuv444p"),
        "10bit": make_yuv_clip(d / "10bit.mp4", frames=6, pix_fmt="yuv422p10le"),
        "j422": make_yuv_clip(d / "j422.mp4", frames=6, pix_fmt="yuvj422p"),
    }


def _read_all(source: CameraSource, ring: FrameRing, run_reader: Callable[..., Running], n: int,
              delay: float = 0.0) -> list[Frame]:
    with RingCollector(ring, delay=delay) as reader:
        r = run_reader(source, ring)
        wait_for(lambda: len(reader.frames) >= n or (not r.thread.is_alive() and len(reader.frames) >= ring.latest_seq),
                 15, f"{n} frames")
        r.thread.join(10)
        return list(reader.frames)


def test_yuv420p_planes_copied_as_decoded(yuv_clips, make_ring, run_reader) -> None:
    ring = make_ring()
    frames = _read_all(CameraSource.of("cam", str(yuv_clips["yuv420p"]), realtime=False), ring, run_reader, 6)
    ref = decoded_frames(yuv_clips["yuv420p"])
    assert len(frames) == len(ref) == 6
    for f, r in zip(frames, ref, strict=True):
        assert (f.pix_fmt, f.color_matrix, f.color_range, f.width, f.height) == ("yuv420p", "bt601", "limited",
                                                                                 160, 120)
        assert np.array_equal(f.image, r.to_ndarray())  # Y, U, V exactly as PyAV decodes them (I420)
        y = r.planes[0]
        assert np.array_equal(luma(f.image, 120), np.frombuffer(y, np.uint8).reshape(120, y.line_size)[:, :160])
    assert ring.status().frames_converted == 0 and ring.status().decode_ns > 0
    # swscale's bgr24 (yesterday's ring contents) vs OpenCV's BT.601 limited I420 conversion
    bgr = cv2.cvtColor(frames[0].image, cv2.COLOR_YUV2BGR_I420)
    diff = np.abs(bgr.astype(int) - ref[0].to_ndarray(format="bgr24").astype(int))
    assert diff.mean() < 3, diff.mean()


@pytest.mark.parametrize(("clip", "matrix", "rng"), [("yuvj420p", "bt601", "full"), ("bt709", "bt709", "limited")])
def test_colour_tags_from_the_stream(yuv_clips, make_ring, run_reader, clip, matrix, rng) -> None:
    ring = make_ring()
    frames = _read_all(CameraSource.of("cam", str(yuv_clips[clip]), realtime=False), ring, run_reader, 6)
    assert {(f.pix_fmt, f.color_matrix, f.color_range) for f in frames} == {("yuv420p", matrix, rng)}
    assert ring.status().frames_converted == 0
    assert np.array_equal(frames[2].image, decoded_frames(yuv_clips[clip])[2].to_ndarray())
    img = frames[0].to_image()
    assert (img.color_matrix, img.color_range) == (matrix, rng)


@pytest.mark.parametrize(("clip", "rng"), [("yuv444p", "limited"), ("odd444", "limited"), ("10bit", "limited"),
                                          ("j422", "full")])
def test_other_formats_converted_once_and_counted(yuv_clips, make_ring, run_reader, caplog, clip, rng) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    ring = make_ring()
    frames = _read_all(CameraSource.of("cam", str(yuv_clips[clip]), realtime=False), ring, run_reader, 6)
    ref = decoded_frames(yuv_clips[clip])
    src_w, src_h = ref[0].width, ref[0].height
    assert len(frames) == 6 and ring.status().frames_converted == 6
    assert sum("converting" in rec.getMessage() for rec in caplog.records) == 1  # logged once per camera
    for k, f in enumerate(frames):
        assert (f.pix_fmt, f.color_matrix, f.color_range, f.width, f.height) == ("yuv420p", "bt601", rng, 160, 120)
        assert (f.src_width, f.src_height) == (src_w, src_h)
        assert number(f) == k
    if clip == "j422":  # full range kept: Y untouched
        y = ref[3].planes[0]
        assert np.array_equal(luma(frames[3].image, 120), np.frombuffer(y, np.uint8).reshape(120, -1)[:, :160])
    if clip == "yuv444p":  # same size: Y untouched (no range change), chroma subsampled by swscale
        f, r = frames[3], ref[3].to_ndarray()  # yuv444p: (3, H, W)
        assert np.array_equal(luma(f.image, 120), r[0])
        # The converter is specified as one swscale conversion (AREA, colour matrix and range kept):
        # the ring holds exactly its chroma, not some other filter's.
        crange = ColorRange.JPEG if rng == "full" else ColorRange.MPEG
        spec = ref[3].reformat(160, 120, format="yuv420p", interpolation="AREA", threads=1,
                               src_colorspace=Colorspace.ITU601, dst_colorspace=Colorspace.ITU601,
                               src_color_range=crange, dst_color_range=crange).to_ndarray()  # (180, 160)
        assert np.array_equal(f.image[120:], spec[120:])
        # and that is a 2x2 subsampling of the source chroma (swscale's filter and siting differ a
        # little from a plain mean; a wrong plane or a shift of whole pixels would not be close)
        u = f.image[120:150].reshape(60, 80).astype(float)
        u_mean = r[1].reshape(60, 2, 80, 2).mean(axis=(1, 3))
        assert np.abs(u - u_mean).mean() < 1.0


def test_downscale_above_max_size_records_source_size(clips, make_ring, run_reader) -> None:
    ring = make_ring(w=100, h=100)
    frames = _read_all(CameraSource.of("cam", str(clips["big"]), realtime=False, max_width=100, max_height=100),
                       ring, run_reader, 10)
    f = frames[-1]
    assert (f.width, f.height, f.src_width, f.src_height, f.pix_fmt) == (100, 74, 320, 240, "yuv420p")
    assert f.image.shape == (111, 100) and number(f) == 9
    assert ring.status().frames_converted == 10


# -- files ------------------------------------------------------------------------------------------


def test_file_realtime_is_paced(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource.of("cam", str(clips["small"]), realtime=True), ring)
    wait_for(lambda: ring.latest_seq >= 1, 10, "the first frame")
    t0, s0 = time.monotonic(), ring.latest_seq
    time.sleep(1.0)
    rate = (ring.latest_seq - s0) / (time.monotonic() - t0)
    assert rate <= 25 * 1.5, f"{rate:.1f} fps from a 25 fps file: not paced"
    assert rate >= 5, f"{rate:.1f} fps: far too slow"
    st = ring.status()
    assert st.state == "streaming" and time.time() - st.heartbeat < 1.0 and st.decoder_pid == os.getpid()
    assert not st.lossless and st.frames_behind == 0
    r.halt()
    assert ring.status().state in ("stopped", "ended")


def test_file_fast_without_loop_ends(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(clips["small"]), realtime=False), ring)
        r.thread.join(10)
        took = time.monotonic() - r.started
        assert not r.thread.is_alive(), "a file without loop must end the reader"
        assert r.reader.finished == "ended"
        wait_for(lambda: len(reader.frames) == 50, 5, "every frame")
    st = ring.status()
    assert st.state == "ended" and st.frames_decoded == 50 and st.latest_seq == 50 and st.lossless
    assert took < 1.8, f"realtime=False took {took:.2f} s for a 2 s file"
    f = reader.frames[-1]
    assert (f.frame_index, number(f), f.pts) == (49, 49, pytest.approx(49 / 25))
    assert f.ts_capture <= time.time()


def test_unpaced_file_slow_reader_gets_every_frame_once_in_order(clips, make_ring, run_reader) -> None:
    """Lossless: a worker slower than the decoder still sees each frame exactly once, in order;
    the decoder waits (heartbeating) instead of overwriting."""
    ring = make_ring(slots=3)
    frames = _read_all(CameraSource.of("cam", str(clips["short"]), realtime=False), ring, run_reader, 20, delay=0.05)
    assert [f.seq for f in frames] == list(range(1, 21))
    assert [f.frame_index for f in frames] == [number(f) for f in frames] == list(range(20))
    assert all(f.dropped == 0 for f in frames)
    st = ring.status()
    assert (st.state, st.frames_decoded, st.consumed_seq, st.frames_behind) == ("ended", 20, 20, 0)


def test_lossless_decoder_waits_heartbeating_and_stops_promptly(clips, make_ring, run_reader) -> None:
    ring = make_ring(slots=3)
    r = run_reader(CameraSource.of("cam", str(clips["small"]), realtime=False, loop=True), ring)
    wait_for(lambda: ring.latest_seq == 3, 10, "a full ring")
    t0 = time.time()
    time.sleep(1.2)
    st = ring.status()
    assert st.latest_seq == 3 and st.state == "streaming" and st.heartbeat > t0 + 0.3  # beats while waiting
    r.halt(within=1.0)
    assert ring.status().state == "stopped" and ring.latest_seq == 3


def test_file_loop_restarts_pts_keeps_counting(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(clips["short"]), realtime=False, loop=True), ring)
        wait_for(lambda: len(reader.frames) > 45, 10, "two loops of a 20-frame file")
        r.halt()
    frames = reader.frames
    assert [f.seq for f in frames] == list(range(1, len(frames) + 1))  # lossless across loops
    for f in frames:
        assert f.frame_index == f.seq - 1  # frame_index counts across loops
        assert number(f) == f.frame_index % 20  # content restarts
        assert f.pts == pytest.approx((f.frame_index % 20) / 25)  # pts restarts
    assert ring.status().reconnects == 0


def test_max_fps_skips_frames(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    frames = _read_all(CameraSource.of("cam", str(clips["small"]), realtime=False, max_fps=5), ring, run_reader, 50)
    st = ring.status()
    assert st.state == "ended" and st.frames_decoded == 50
    assert 9 <= st.latest_seq <= 11, st  # 2 s of video at 5 fps
    assert st.frames_skipped == 50 - st.latest_seq and st.frames_behind == 0
    assert len(frames) == st.latest_seq
    assert all(number(f) == f.frame_index for f in frames)  # index names the source frame


class _SlowReader(CameraReader):
    """A decoder whose writes take 0.1 s: a 25 fps paced file falls behind."""

    def _write(self, frame: av.VideoFrame, index: int, t: float) -> None:
        time.sleep(0.1)
        super()._write(frame, index, t)


def test_paced_file_behind_frames_not_written_and_counted(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource.of("cam", str(clips["small"]), realtime=True), ring, reader_cls=_SlowReader)
    r.thread.join(15)
    st = ring.status()
    assert st.state == "ended" and st.frames_decoded == 50 and not st.lossless
    assert st.frames_behind > 10, st
    assert st.latest_seq + st.frames_behind == 50 and st.frames_skipped == 0


# -- start gate -------------------------------------------------------------------------------------


def test_start_gate_holds_a_file_camera(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    gate = threading.Event()
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(clips["short"]), realtime=False), ring, start_gate=gate)
        t0 = time.time()
        time.sleep(1.2)
        st = ring.status()
        assert st.latest_seq == 0 and st.frames_decoded == 0 and st.state == "starting"
        assert st.heartbeat > t0 + 0.3  # alive while waiting
        gate.set()
        wait_for(lambda: len(reader.frames) == 20, 10, "every frame once the gate opened")
    assert reader.frames[0].frame_index == 0  # nothing was lost while waiting
    r.thread.join(5)


def test_stop_while_waiting_for_the_gate(clips, make_ring, run_reader) -> None:
    ring = make_ring()
    r = run_reader(CameraSource.of("cam", str(clips["short"]), realtime=True), ring, start_gate=threading.Event())
    wait_for(lambda: ring.status().decoder_pid == os.getpid(), 5, "the reader to start")
    r.halt(within=0.5)
    assert ring.status().state == "stopped" and ring.latest_seq == 0


def test_missing_file_backs_off_then_streams(tmp_path, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    path = tmp_path / "later.mp4"
    ring = make_ring()
    src = CameraSource.of("cam", str(path), realtime=False, loop=True, backoff_initial_s=0.1,
                       backoff_max_s=0.3, backoff_jitter=0.1)
    r = run_reader(src, ring)
    wait_for(lambda: ring.status().reconnects >= 2, 10, "a few reconnect attempts")
    st = ring.status()
    assert st.state in ("backoff", "connecting") and "No such file" in st.last_error
    assert ring.latest_seq == 0
    make_test_clip(path, 160, 120, frames=10)
    with RingCollector(ring) as reader:
        wait_for(lambda: len(reader.frames) > 5, 10, "frames once the file exists")
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
        src = CameraSource.of("cam", f"rtsp://127.0.0.1:{port}/x", open_timeout_s=0.5, read_timeout_s=0.5,
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
        src = CameraSource.of("cam", url, open_timeout_s=5, read_timeout_s=1.5, stall_timeout_s=1.5,
                           backoff_initial_s=0.2, backoff_max_s=0.5)
        r = run_reader(src, ring)
        wait_for(lambda: ring.latest_seq >= 10, 20, "RTSP frames")
        assert ring.status().state == "streaming"
        f = ring.read_latest(0)
        assert (f.width, f.height, f.pix_fmt) == (160, 120, "yuv420p") and number(f) < 50
        assert not ring.status().lossless

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


def test_start_gate_does_not_hold_a_live_camera(clips, make_ring, run_reader) -> None:
    with RtspServer({"/cam": clips["small"]}) as server:
        ring = make_ring()
        r = run_reader(CameraSource.of("cam", server.url("/cam"), open_timeout_s=5, read_timeout_s=3),
                       ring, start_gate=threading.Event())  # never set
        wait_for(lambda: ring.latest_seq >= 3, 20, "RTSP frames despite a closed gate")
        st = ring.status()
        assert st.state == "streaming" and not st.lossless and st.decode_ns > 0
        r.halt(within=2.5)


def test_rtsp_helper_fails_loudly_without_gstreamer(monkeypatch) -> None:
    """Missing GStreamer must fail the RTSP tests with the packages to install, never skip."""
    from tests.helpers import rtsp

    monkeypatch.setattr(rtsp, "SYSTEM_PYTHON", "/nonexistent/python3")
    with pytest.raises(pytest.fail.Exception, match="gir1.2-gst-rtsp-server-1.0"):
        rtsp.RtspServer({"/cam": "x.mp4"}).start()


def test_decoder_never_imports_torch() -> None:
    code = ("import sys, streamdet.pipeline.decode.reader, streamdet.pipeline.ring.buffer; "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "ok", res.stderr
