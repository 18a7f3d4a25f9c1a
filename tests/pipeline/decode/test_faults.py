"""Decoder faults: damaged and undecodable files, resolution changes, frozen / killed /
unreachable RTSP servers, backoff, and how each failure is classified.

Each test drives one CameraReader thread against a ring and asserts exact outcomes: which frame
numbers were written (each once), the final state and error text, reconnect counts. The RTSP
tests bound the time to notice a frozen server by the configured timeouts (a correctness bound,
generous: limit + 1.5 s).
"""

from __future__ import annotations

import logging
import random
import re
import time
from pathlib import Path

import av
import numpy as np
import pytest

from streamdet.pipeline.decode.faults import ReadTimedOut, SourceDamaged, SourceUnusable, Stalled, classify_failure
from streamdet.pipeline.decode.frame_pass import FramePass
from streamdet.pipeline.decode.reader import CameraReader, CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from tests.helpers.decoder import number, wait_for
from tests.helpers.faulty_media import (
    audio_only_file,
    readable_frames,
    truncated_clip,
    two_resolution_clip,
    unindexed_truncated_clip,
    write_clip,
)
from tests.helpers.media import read_frame_number
from tests.helpers.ring_reader import RingCollector
from tests.helpers.rtsp import RtspServer, free_port

SECRET = "s3cret-pw"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("faulty")
    zero = d / "zero.mp4"
    zero.write_bytes(b"")
    text = d / "notes.mp4"
    text.write_text("this is a shopping list, not a video\n" * 40)
    return {
        "truncated": truncated_clip(d / "truncated.mp4", frames=30, keep=0.6),
        "zero": zero,
        "text": text,
        "unindexed": unindexed_truncated_clip(d / "unindexed.mp4"),
        "audio": audio_only_file(d / "audio.mp4"),
        "two_sizes": two_resolution_clip(d / "two_sizes.ts"),
        "rtsp_small": write_clip(d / "rtsp_small.mp4", 160, 120, 50),
        "rtsp_big": write_clip(d / "rtsp_big.mp4", 320, 240, 50, first=1000),
    }


def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streamdet.decode" and r.levelno == level]


# -- files ------------------------------------------------------------------------------------------


def test_truncated_file_writes_each_readable_frame_once_then_fails(media, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    expected = readable_frames(media["truncated"])
    assert 0 < len(expected) < 30 and expected == list(range(len(expected)))
    ring = make_ring()
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(media["truncated"]), realtime=False, backoff_initial_s=0.05), ring)
        wait_for(lambda: ring.status().state == "failed", 15, "the damaged file to fail")
        time.sleep(1.0)  # a retry loop would replay frames now
        frames = list(reader.frames)
    st = ring.status()
    assert [number(f) for f in frames] == [f.frame_index for f in frames] == expected  # each once, in order
    assert (st.latest_seq, st.frames_decoded, st.reconnects) == (len(expected), len(expected), 0)
    assert st.last_error.startswith(f"damaged data after frame {len(expected)} (")
    assert "InvalidDataError" in st.last_error
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1 and "camera=cam" in errors[0] and "not retried" in errors[0]
    assert not [m for m in _records(caplog, logging.WARNING) if "reconnecting" in m]
    r.thread.join(5)
    assert not r.thread.is_alive() and r.reader.finished == "failed"  # done for good: its thread lets go
    r.halt()
    assert ring.status().state == "failed"


def test_paced_truncated_file_never_replays(media, make_ring, run_reader) -> None:
    """The user's case: a paced (realtime) non-looping file; frames written once each, then failed."""
    expected = readable_frames(media["truncated"])
    ring = make_ring()
    with RingCollector(ring) as reader:
        run_reader(CameraSource.of("cam", str(media["truncated"]), realtime=True, backoff_initial_s=0.05), ring)
        wait_for(lambda: ring.status().state == "failed", 15, "the damaged file to fail")
        time.sleep(1.0)
        indexes = [f.frame_index for f in reader.frames]
    st = ring.status()
    assert indexes == sorted(set(indexes)) and set(indexes) <= set(expected)  # no repeats
    assert st.frames_decoded == len(expected) and st.latest_seq + st.frames_behind == len(expected)
    assert st.reconnects == 0 and "damaged data" in st.last_error


def test_looping_truncated_file_loops_over_its_readable_frames(media, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    k = len(readable_frames(media["truncated"]))
    ring = make_ring()
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(media["truncated"]), realtime=False, loop=True), ring)
        wait_for(lambda: len(reader.frames) >= 3 * k, 15, "three passes over the readable frames")
        r.halt()
        frames = list(reader.frames)
    assert [f.frame_index for f in frames] == list(range(len(frames)))  # counts across loops
    assert [number(f) for f in frames] == [i % k for i in range(len(frames))]
    st = ring.status()
    assert st.reconnects == 0 and st.state == "stopped" and r.reader.finished is None  # stopped, not finished
    damage = [m for m in _records(caplog, logging.WARNING) if "damaged data" in m]
    assert len(damage) == 1 and "looping" in damage[0]  # logged once, not once per pass


@pytest.mark.parametrize(("clip", "error"), [
    ("zero", "not a decodable video file (the file is empty): InvalidDataError"),
    ("text", "not a decodable video file: InvalidDataError"),
    ("unindexed", "not a decodable video file: InvalidDataError"),
    ("audio", "no video stream (format wav)"),
])
def test_undecodable_file_fails_once_without_retry(media, make_ring, run_reader, caplog, clip, error) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    ring = make_ring()
    src = CameraSource.of("cam", str(media[clip]), realtime=False, loop=True, backoff_initial_s=0.05,
                       backoff_max_s=0.05)
    r = run_reader(src, ring)
    wait_for(lambda: ring.status().state == "failed", 10, "the camera to fail")
    time.sleep(0.6)  # 0.05 s backoff: a retry loop would have reopened ~10 times by now
    st = ring.status()
    assert st.state == "failed" and st.reconnects == 0 and st.latest_seq == 0
    assert st.last_error.startswith(error), st.last_error
    errors = _records(caplog, logging.ERROR)
    assert len(errors) == 1 and error in errors[0] and "camera=cam" in errors[0]
    assert sum("opened" in m for m in _records(caplog, logging.INFO)) <= 1
    assert not r.thread.is_alive() and r.reader.finished == "failed"
    r.halt()
    assert ring.status().state == "failed"


def test_resolution_change_midstream_writes_each_size(media, make_ring, run_reader, caplog) -> None:
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    ring = make_ring(w=320, h=240)
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(media["two_sizes"]), realtime=False), ring)
        wait_for(lambda: ring.status().state == "ended", 15, "the end of the file")
        r.thread.join(5)
        # the decoder may end before the collector has read the last slots it wrote
        wait_for(lambda: len(reader.frames) >= ring.status().latest_seq, 5, "the collector to catch up")
        frames = list(reader.frames)
    assert [number(f) for f in frames] == [f.frame_index for f in frames] == list(range(20))
    sizes = [(f.width, f.height, f.src_width, f.src_height, f.image.shape) for f in frames]
    assert sizes == [(160, 120, 160, 120, (180, 160))] * 10 + [(320, 240, 320, 240, (360, 320))] * 10
    assert ring.status().frames_converted == 0
    assert any("resolution changed from 160x120 to 320x240 at frame 10" in m for m in _records(caplog, logging.INFO))


# -- RTSP ----------------------------------------------------------------------------------------------


def _time_until(pred, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    wait_for(pred, timeout, what)
    return time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.parametrize(("read_s", "stall_s"), [(2.0, 3.0), (4.0, 1.5)])
def test_rtsp_frozen_server_noticed_within_the_read_limit(media, make_ring, run_reader, read_s, stall_s) -> None:
    """SIGSTOP: the connection stays open and silent. Noticed within min(read, stall) + 1.5 s
    (it used to take twice the timeout), then backoff; SIGCONT: streaming again, reconnect counted."""
    limit = min(read_s, stall_s)
    with RtspServer({"/cam": media["rtsp_small"]}) as server:
        ring = make_ring()
        src = CameraSource.of("cam", server.url("/cam"), open_timeout_s=3, read_timeout_s=read_s,
                           stall_timeout_s=stall_s, backoff_initial_s=0.2, backoff_max_s=0.5)
        r = run_reader(src, ring)
        wait_for(lambda: ring.status().state == "streaming" and ring.latest_seq >= 10, 20, "RTSP frames")
        server.pause()
        try:
            took = _time_until(lambda: ring.status().state != "streaming", limit + 5, "the freeze to be noticed")
            st = ring.status()
            assert took <= limit + 1.5, f"frozen server noticed after {took:.2f} s (limit {limit:g} s)"
            assert st.state in ("backoff", "connecting") and st.last_error == f"no data for {limit:g} s"
            reconnects = st.reconnects
            wait_for(lambda: ring.status().reconnects > reconnects, 10, "reconnect attempts while frozen")
        finally:
            server.resume()
        wait_for(lambda: ring.status().state == "streaming", 20, "streaming after SIGCONT")
        seq = ring.latest_seq
        wait_for(lambda: ring.latest_seq >= seq + 15, 10, "frames keep coming after the resume")
        assert ring.status().reconnects >= 1
        r.halt(within=2.5)


@pytest.mark.slow
def test_rtsp_killed_server_backoff_doubles_and_restart_with_new_size(media, make_ring, run_reader,
                                                                       caplog) -> None:
    """SIGKILL: noticed at once (the kernel closes the connection); reopen attempts follow
    initial_s doubling to max_s (+- jitter); the server returns on the same port with a bigger
    clip: the camera streams again, at the new size, its reconnects counted."""
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    server = RtspServer({"/cam": media["rtsp_small"]})
    try:
        server.start()
        url = server.url("/cam").replace("rtsp://", f"rtsp://viewer:{SECRET}@")
        ring = make_ring(w=320, h=240)
        src = CameraSource.of("cam", url, open_timeout_s=3, read_timeout_s=2, stall_timeout_s=2,
                           backoff_initial_s=0.2, backoff_max_s=0.8, backoff_jitter=0.1)
        r = run_reader(src, ring)
        wait_for(lambda: ring.status().state == "streaming" and ring.latest_seq >= 5, 20, "RTSP frames")
        server.kill()
        took = _time_until(lambda: ring.status().state != "streaming", 5, "the crash to be noticed")
        assert took <= src.read_limit_s + 1.5
        wait_for(lambda: ring.status().reconnects >= 5, 15, "five reopen attempts while down")
        delays = [float(m) for m in re.findall(r"reconnecting in ([0-9.]+) s \(attempt", caplog.text)]
        bases = [min(0.8, 0.2 * 2**k) for k in range(len(delays))]  # 0.2 0.4 0.8 0.8 ...
        assert len(delays) >= 5
        assert all(b * 0.9 - 0.05 <= d <= b * 1.1 + 0.05 for d, b in zip(delays, bases, strict=True)), delays
        server.files["/cam"] = media["rtsp_big"]
        server.start()  # same port
        wait_for(lambda: ring.latest_seq > 0 and ring.read_latest(0).width == 320, 20, "frames of the new size")
        f = ring.read_latest(0)
        assert (f.width, f.height, f.src_width, f.src_height) == (320, 240, 320, 240) and number(f) >= 1000
        assert ring.status().state == "streaming" and ring.status().reconnects >= 5
        r.halt(within=2.5)
    finally:
        server.stop()
    assert SECRET not in caplog.text and SECRET not in ring.status().last_error


@pytest.mark.slow
def test_rtsp_unreachable_at_start_streams_when_a_server_appears(media, make_ring, run_reader) -> None:
    server = RtspServer({"/cam": media["rtsp_small"]}, port=free_port())  # nothing listens yet
    try:
        ring = make_ring()
        src = CameraSource.of("cam", server.url("/cam"), open_timeout_s=2, read_timeout_s=2,
                           backoff_initial_s=0.1, backoff_max_s=0.4)
        r = run_reader(src, ring)
        wait_for(lambda: ring.status().reconnects >= 3, 15, "reopen attempts")
        st = ring.status()
        assert st.state in ("backoff", "connecting") and ring.latest_seq == 0
        assert "Connection refused" in st.last_error
        server.start()
        wait_for(lambda: ring.latest_seq >= 10, 20, "frames once the server is up")
        assert ring.status().state == "streaming"
        r.halt(within=2.5)
    finally:
        server.stop()


# -- units: one read pass (FramePass) with scripted demuxers -----------------------------------------


class _Scripted:
    """A container whose demux yields the real packets of a clip, then does ``then`` (a callable
    raising, or sleeping before handing back one more packet, as FFmpeg's parser flush does)."""

    def __init__(self, container: av.container.InputContainer, after: int, then) -> None:
        self.container, self.after, self.then = container, after, then

    def demux(self, stream):
        for i, packet in enumerate(self.container.demux(stream)):
            if i == self.after:
                yield self.then(packet)
                return
            yield packet


class _Undecodable:
    """A packet that decodes to nothing (a live stream that never gets a keyframe)."""

    def decode(self) -> list:
        time.sleep(0.05)
        return []


def _pass(container, stream, *, live: bool, limit: float = 1.0, stall: float = 1.0) -> FramePass:
    return FramePass(container, stream, live=live, read_limit_s=limit, stall_timeout_s=stall, tag="camera=cam",
                     after_packet=lambda: None, cost=lambda ns: None)


def _raise(exc: BaseException):
    def then(_packet):
        raise exc
    return then


@pytest.fixture
def clip(media):
    with av.open(str(media["rtsp_small"])) as container:
        yield container, container.streams.video[0]


def test_frame_pass_demux_error_in_a_file_is_damage_after_the_buffered_frames(clip) -> None:
    container, stream = clip
    stream.codec_context.thread_count = 4  # frame threads: the decoder holds frames back
    stream.codec_context.thread_type = "FRAME"
    eio = av.error.OSError(5, "Input/output error", "/videos/a.mp4")
    frames = _pass(_Scripted(container, 12, _raise(eio)), stream, live=False)
    got = [read_frame_number(f.to_ndarray(format="bgr24")) for f in frames]
    assert got == list(range(12))  # the decoder's buffered frames drained, none lost
    assert frames.damage == "damaged data after frame 12 (reading: OSError: Input/output error: '/videos/a.mp4')"


def test_frame_pass_demux_error_of_a_live_stream_is_raised(clip) -> None:
    container, stream = clip
    eio = av.error.OSError(5, "Input/output error", "rtsp://cam/x")
    with pytest.raises(av.error.OSError):
        list(_pass(_Scripted(container, 5, _raise(eio)), stream, live=True))


def test_frame_pass_interrupted_read_is_a_timeout_even_with_a_packet(clip) -> None:
    """FFmpeg's interrupt fires, the demuxer flushes its parser and returns the held packet after
    the full limit: that read timed out (it used to restart the clock for another limit)."""
    container, stream = clip

    def late(packet):
        time.sleep(0.3)
        return packet

    frames = _pass(_Scripted(container, 5, late), stream, live=True, limit=0.25)
    got = []
    with pytest.raises(ReadTimedOut, match=r"^no data for 0.25 s$"):
        for f in frames:
            got.append(f)
    assert len(got) == 5
    exit_error = av.error.ExitError(-1414092869, "Immediate exit requested", "rtsp://cam/x")
    with pytest.raises(ReadTimedOut):
        list(_pass(_Scripted(container, 0, _raise(exit_error)), stream, live=True))


def test_frame_pass_packets_without_frames_stall(clip) -> None:
    container, stream = clip

    class Endless:
        def demux(self, _stream):
            while True:
                yield _Undecodable()

    with pytest.raises(Stalled, match="no frame for 0.3 s"):
        list(_pass(Endless(), stream, live=True, stall=0.3))


def test_looping_file_after_a_read_error_rewinds_and_plays_on(media, make_ring, run_reader, monkeypatch,
                                                              caplog) -> None:
    """A read error (EIO) in the first pass of a looping file: the decoder's frames are drained,
    the file rewound (codec flushed) and played again; logged once, no reopen."""
    caplog.set_level(logging.INFO, logger="streamdet.decode")
    import streamdet.pipeline.decode.reader as decode

    passes: list[int] = []

    class FirstPassFails(FramePass):
        def __init__(self, container, stream, **kwargs) -> None:
            if not passes:
                eio = av.error.OSError(5, "Input/output error", str(media["rtsp_small"]))
                container = _Scripted(container, 12, _raise(eio))
            passes.append(1)
            super().__init__(container, stream, **kwargs)

    monkeypatch.setattr(decode, "FramePass", FirstPassFails)
    ring = make_ring()
    with RingCollector(ring) as reader:
        r = run_reader(CameraSource.of("cam", str(media["rtsp_small"]), realtime=False, loop=True), ring)
        wait_for(lambda: len(reader.frames) >= 12 + 50 + 5, 15, "the damaged pass, a whole pass and more")
        r.halt()
        frames = list(reader.frames)
    numbers = [number(f) for f in frames]
    assert numbers[:12 + 50 + 5] == list(range(12)) + list(range(50)) + list(range(5))
    assert [f.frame_index for f in frames] == list(range(len(frames)))
    assert ring.status().reconnects == 0
    assert sum("damaged data after frame 12 (reading: OSError" in m for m in _records(caplog, logging.WARNING)) == 1


# -- units: backoff and classification ---------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    src = CameraSource.of("cam", "rtsp://h/x", backoff_initial_s=1.0, backoff_max_s=30.0, backoff_jitter=0.2)
    reader = CameraReader(src, None, None, rng=random.Random(7))  # type: ignore[arg-type]  # ring unused
    for failures, base in enumerate([1, 2, 4, 8, 16, 30, 30, 30]):
        delays = [reader.backoff_delay(failures) for _ in range(200)]
        assert base * 0.8 <= min(delays) and max(delays) <= base * 1.2, (failures, min(delays), max(delays))
        assert max(delays) - min(delays) > base * 0.2  # jitter is applied
    assert CameraReader(CameraSource.of("c", "x.mp4", backoff_jitter=0.0), None, None).backoff_delay(100) == 30.0  # type: ignore[arg-type]


_FILE = CameraSource.of("cam", "/videos/a.mp4")
_LOOP = CameraSource.of("cam", "/videos/a.mp4", loop=True)
_LIVE = CameraSource.of("cam", f"rtsp://u:{SECRET}@cam/x")


def _ffmpeg_error(cls: type[av.error.FFmpegError], code: int, url: str) -> av.error.FFmpegError:
    return cls(code, "message", url)


@pytest.mark.parametrize(("exc", "source", "opening", "written", "permanent"), [
    (_ffmpeg_error(av.error.FileNotFoundError, 2, "/videos/a.mp4"), _FILE, True, 0, False),  # may appear later
    (_ffmpeg_error(av.error.PermissionError, 13, "/videos/a.mp4"), _FILE, True, 0, False),
    (_ffmpeg_error(av.error.InvalidDataError, 1094995529, "/videos/a.mp4"), _FILE, True, 0, True),
    (_ffmpeg_error(av.error.InvalidDataError, 1094995529, "/videos/a.mp4"), _LIVE, True, 0, False),
    (SourceUnusable("no video stream"), _FILE, False, 0, True),
    (SourceDamaged("damaged data after frame 3"), _LOOP, False, 9, True),
    (ReadTimedOut("no data for 10 s"), _FILE, False, 0, False),  # nothing written: retrying replays nothing
    (ReadTimedOut("no data for 10 s"), _FILE, False, 5, True),  # would replay 5 frames
    (ReadTimedOut("no data for 10 s"), _LOOP, False, 5, False),
    (ReadTimedOut("no data for 10 s"), _LIVE, False, 5, False),
    (_ffmpeg_error(av.error.ConnectionRefusedError, 111, f"rtsp://u:{SECRET}@cam/x"), _LIVE, True, 0, False),
])
def test_classify_failure(exc, source, opening, written, permanent) -> None:
    failure = classify_failure(exc, source, opening=opening, open_elapsed_s=0.1, frames_written=written)
    assert failure.permanent is permanent
    assert failure.reason and SECRET not in failure.reason and "[Errno" not in failure.reason


def test_classify_failure_names_timeouts() -> None:
    exit_error = av.error.ExitError(-1414092869, "Immediate exit requested", "rtsp://cam/x")
    src = CameraSource.of("cam", "rtsp://cam/x", open_timeout_s=5, read_timeout_s=10, stall_timeout_s=4)
    kwargs = {"open_elapsed_s": 5.1, "frames_written": 0}
    assert classify_failure(exit_error, src, opening=True, **kwargs).reason == "timed out opening the source (5 s)"
    assert classify_failure(exit_error, src, opening=False, **kwargs).reason == "timed out: no data for 4 s"
    socket_timeout = av.error.TimeoutError(110, "Connection timed out", "rtsp://cam/x")
    reason = classify_failure(socket_timeout, src, opening=True, **kwargs).reason
    assert reason == "timed out opening the source (5 s): TimeoutError: Connection timed out: 'rtsp://cam/x'"


def test_read_limit_and_socket_timeouts_follow_the_smaller_timeout() -> None:
    src = CameraSource.of("cam", "rtsp://cam/x", read_timeout_s=10, stall_timeout_s=3)
    assert src.read_limit_s == 3
    assert src.open_options() == {"rtsp_transport": "tcp", "timeout": "3000000"}
    assert CameraSource.of("c", "http://cam/x.m3u8", read_timeout_s=2).open_options() == {"rw_timeout": "2000000"}
    assert CameraSource.of("c", "/videos/a.mp4").open_options() == {}


def test_ring_geometry_is_per_slot(make_ring) -> None:
    """What the resolution-change support rests on: each slot records its own frame's size."""
    ring: FrameRing = make_ring(w=320, h=240)
    ring.set_lossless(True)  # read_next then returns frames in order
    ring.write(np.zeros((180, 160), np.uint8), pix_fmt="yuv420p", frame_index=0, pts=0.0, ts_capture=time.time())
    ring.write(np.zeros((360, 320), np.uint8), pix_fmt="yuv420p", frame_index=1, pts=0.04, ts_capture=time.time())
    first, second = ring.read_next(0), ring.read_next(1)
    assert first is not None and second is not None
    assert (first.width, first.height, first.image.shape) == (160, 120, (180, 160))
    assert (second.width, second.height, second.image.shape) == (320, 240, (360, 320))
