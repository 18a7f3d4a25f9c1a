"""Stage 1: decode cameras and files into the per-camera frame rings.

Consumes: video sources (RTSP/RTMP/HTTP URLs or files) opened with PyAV (FFmpeg).
Produces: YUV 4:2:0 frames (yuv420p or nv12 planes copied as decoded, no colour conversion,
tagged with their colour matrix and range) with their frame index, pts and capture wall time,
written into each camera's :class:`~streamdet.pipeline.ring.FrameRing`, plus the decoder state,
heartbeat and counters in the ring header.
Process: a decoder process (spawned by the supervisor) runs :func:`decoder_main`: one
:class:`CameraReader` thread per camera. Never imports torch.

Behaviour of a camera thread:

- start gate: a file camera (not ``is_live``) waits for ``DecoderSpec.start_gate`` (ring state
  ``starting``, heartbeating, stop-aware) before opening, so no file frame is published before
  the workers are ready; live cameras start at once.
- open with timeouts (PyAV ``timeout=(open, read)``: an FFmpeg interrupt callback that aborts
  any blocking open/read after that long; RTSP also gets FFmpeg's ``timeout`` socket option, in
  microseconds, and ``rtsp_transport``), decode the first video stream, write into the ring,
  heartbeat.
- pixels: yuv420p/yuvj420p/nv12 frames of an even size that fits are copied plane by plane into
  the ring with their colour tags; anything else is converted once to yuv420p
  (:mod:`streamdet.pipeline.frames` has the rule), counted in ``frames_converted`` and logged
  once per camera; the source size is recorded.
- ``pts`` is ``frame.time`` in seconds (fallback ``frame_index / fps``); ``ts_capture`` is the
  wall clock when the frame was decoded (after pacing, for paced files).
- ``frame_index`` counts decoded frames from 0 each time the source is (re)opened after a
  failure; it keeps counting across ``loop`` restarts of a file (where pts starts over).
  Frames skipped by ``max_fps`` or dropped as behind still consume an index.
- flow control: a file with ``realtime: false`` (looping or not) puts its ring in lossless
  mode: the thread waits (heartbeating, stop-aware) for the worker to consume a slot instead of
  overwriting it, so every kept frame is published exactly once, in order, however slow
  inference is. Live sources and paced files use latest wins: the worker takes the newest frame
  and counts the overwritten ones itself (seq gaps, ``Frame.dropped``).
- pacing: a file with ``realtime`` is played at its own rate against a wall-clock schedule;
  frames too late are not written (``frames_behind``), ``max_fps`` thins frames
  (``frames_skipped``); :mod:`streamdet.pipeline.pacing` has the rules. Network streams
  (``LIVE_SCHEMES``, http(s) included: HLS, MJPEG cameras) are never paced.
- ``decode_ns`` adds the wall time spent demuxing (files only: a live demux mostly waits for
  the network), decoding, converting and writing; pacing sleeps and lossless waits excluded.
- end of file: ``loop`` seeks back to the start (reopening if the seek fails), otherwise the
  state becomes ``ended`` and the thread finishes. End of a network stream is a failure.
- failure to open, read errors, and stalls (no decoded frame for ``stall_timeout_s`` while
  packets arrive; no packet at all is caught by the read timeout) close the source and reopen
  it after ``backoff_initial_s * 2**n`` (capped at ``backoff_max_s``, +-``backoff_jitter``),
  forever, until stop. A stream that delivered frames resets the backoff.
- the stop event interrupts every sleep and wait within 0.5 s; a blocking FFmpeg open or read
  returns within its timeout at worst (a live stream delivers packets every few tens of ms).
- ring states: ``starting`` (gate) -> ``connecting`` (opening) -> ``streaming`` (first frame
  written) -> ``backoff`` (after a failure, ``last_error`` set) -> ``connecting`` ...; ``ended``
  (file without loop), ``stopped`` (stop event); ``failed`` (the thread crashed; decoder_main
  restarts it).
- log lines carry the camera id and the redacted URL; FFmpeg error texts (which quote the URL)
  are redacted before they are logged or stored in the ring. Credentials are never logged.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol
from urllib.parse import urlsplit

import av

from streamdet.errors import SourceError
from streamdet.pipeline.frames import color_tags as color_tags  # re-exported: moved to frames.py
from streamdet.pipeline.frames import plane_views, to_ring_format
from streamdet.pipeline.frames import scaled_size as scaled_size  # re-exported: moved to frames.py
from streamdet.pipeline.pacing import Schedule
from streamdet.pipeline.ring import FrameRing, WriteAborted
from streamdet.redact import redact_text, redact_url

log = logging.getLogger("streamdet.decode")

#: URL schemes read as live network streams (never paced, EOF = failure).
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "http", "https"})
_POLL_S = 0.5  # longest sleep between stop/heartbeat checks
_GATE_POLL_S = 0.1  # start gate: how often stop is checked while waiting


@dataclass(frozen=True)
class CameraSource:
    """One camera or file, with the decode, timeout and reconnect settings it is read with."""

    camera_id: str
    url: str
    rtsp_transport: str = "tcp"
    realtime: bool = True
    loop: bool = False
    max_fps: float | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    stall_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.2
    max_width: int = 1920
    max_height: int = 1080
    threads: int = 0  # FFmpeg decoding threads for this camera; 0 = FFmpeg's choice

    @property
    def redacted_url(self) -> str:
        """The URL safe to log: userinfo hidden."""
        return redact_url(self.url)

    @property
    def scheme(self) -> str:
        """Lower-case URL scheme, or ``file`` for a plain path."""
        scheme = urlsplit(self.url).scheme.lower()
        return scheme if len(scheme) > 1 else "file"

    @property
    def is_live(self) -> bool:
        """A network stream: paced by its sender; its end is a failure, not EOF."""
        return self.scheme in LIVE_SCHEMES

    @property
    def lossless(self) -> bool:
        """A file read as fast as possible: every frame is published (the ring's lossless mode)."""
        return not self.is_live and not self.realtime


class _EventLike(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Stopped(Exception):
    """The stop event was set: unwind the reader quietly."""


class CameraReader:
    """Reads one source into its ring until stop (or until a non-looping file ends).

    ``run()`` is a thread body; it catches every error from the source and reconnects, so it
    only returns on stop or at the end of a non-looping file. ``start_gate`` (event-like, or
    None) holds a file camera before its first open.
    """

    def __init__(self, source: CameraSource, ring: FrameRing, stop_event: _EventLike,
                 rng: random.Random | None = None, start_gate: _EventLike | None = None) -> None:
        self.source = source
        self.ring = ring
        self.stop = stop_event
        self.start_gate = start_gate
        self.rng = rng or random.Random()
        self.pid = os.getpid()
        self.frames_written = 0  # this reader, all sessions
        self._session_frames = 0  # frames written since the last (re)open
        self._phase = "open"  # what the current session is doing: "open" or "read"
        self._open_started = 0.0
        self._conversion_logged = False

    # -- helpers ------------------------------------------------------------------------------

    def _tag(self) -> str:
        return f"camera={self.source.camera_id} url={self.source.redacted_url}"

    def _beat(self) -> None:
        self.ring.heartbeat(self.pid)

    def _sleep(self, seconds: float) -> None:
        """Sleep, heartbeating; raises _Stopped as soon as stop is set (within _POLL_S)."""
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            if self.stop.wait(min(remaining, _POLL_S)):
                raise _Stopped
            self._beat()
        if self.stop.is_set():
            raise _Stopped

    def _wait_gate(self) -> None:
        """File cameras: wait for the start gate (state ``starting``), heartbeating; _Stopped on stop."""
        gate = self.start_gate
        if gate is None or self.source.is_live or gate.is_set():
            return
        self.ring.set_state("starting")
        log.info("%s: waiting for the start gate", self._tag())
        next_beat = 0.0
        while not gate.wait(_GATE_POLL_S):
            if self.stop.is_set():
                raise _Stopped
            if time.monotonic() >= next_beat:
                self._beat()
                next_beat = time.monotonic() + _POLL_S

    def _backoff_delay(self, failures: int) -> float:
        s = self.source
        base = min(s.backoff_max_s, s.backoff_initial_s * (2 ** min(failures, 30)))
        return max(0.0, base * (1.0 + self.rng.uniform(-s.backoff_jitter, s.backoff_jitter)))

    def _open_options(self) -> dict[str, str]:
        s = self.source
        if s.scheme in ("rtsp", "rtsps"):
            return {"rtsp_transport": s.rtsp_transport, "timeout": str(int(s.read_timeout_s * 1e6))}
        if s.scheme in ("http", "https", "tcp", "rtmp", "rtmps", "srt"):
            return {"rw_timeout": str(int(s.read_timeout_s * 1e6))}
        return {}

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Open, stream, reconnect with backoff; returns on stop or at the end of a file."""
        s = self.source
        failures = 0
        opened_before = looping = False
        self.ring.set_lossless(s.lossless)
        try:
            self._beat()
            self._wait_gate()
            while not self.stop.is_set():
                self.ring.set_state("connecting")
                self._beat()
                if opened_before and not looping:
                    self.ring.add_counts(reconnects=1)
                opened_before, looping = True, False
                self._session_frames = 0
                try:
                    outcome = self._session()
                except _Stopped:
                    raise
                except av.error.ExitError:  # PyAV's interrupt callback: open/read timeout
                    reason = (f"timed out opening the source ({s.open_timeout_s:g} s)" if self._phase == "open"
                              else f"timed out: no data for {s.read_timeout_s:g} s")
                except Exception as exc:  # any source error means: reconnect
                    reason = redact_text(f"{type(exc).__name__}: {exc}")
                    if self._phase == "open" and time.monotonic() - self._open_started >= s.open_timeout_s * 0.95:
                        reason = f"timed out opening the source ({s.open_timeout_s:g} s): {reason}"
                else:
                    if outcome == "ended":
                        self.ring.set_state("ended")
                        log.info("%s: end of file after %d frames; camera finished", self._tag(),
                                 self.frames_written)
                        return
                    if outcome == "loop":  # a looping file that cannot seek: reopen now
                        looping = True
                        continue
                    reason = "end of stream"
                if self._session_frames > 0:
                    failures = 0
                delay = self._backoff_delay(failures)
                failures += 1
                self.ring.set_state("backoff", error=reason[:256])
                log.warning("%s: %s; reconnecting in %.1f s (attempt %d)", self._tag(), reason, delay, failures)
                self._sleep(delay)
        except _Stopped:
            pass
        self.ring.set_state("stopped")
        self._beat()

    def _session(self) -> str:
        """One open of the source: returns 'ended' (file EOF without loop), 'loop' (looping file
        to reopen) or 'eof' (stream ended); raises on errors and stalls, _Stopped on stop."""
        s = self.source
        self._phase = "open"
        self._open_started = time.monotonic()
        container = av.open(s.url, mode="r", container_options=self._open_options(),
                            timeout=(s.open_timeout_s, s.read_timeout_s))
        self._phase = "read"
        try:
            if self.stop.is_set():
                raise _Stopped
            if not container.streams.video:
                raise SourceError("no video stream")
            stream = container.streams.video[0]
            stream.codec_context.thread_count = self.source.threads
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            fps = float(rate) if rate and float(rate) > 0 else 25.0
            log.info("%s: opened %s %dx%d %s @ %.2f fps", self._tag(), stream.codec_context.name,
                     stream.codec_context.width, stream.codec_context.height, stream.codec_context.pix_fmt, fps)
            return self._stream_frames(container, stream, fps)
        finally:
            container.close()

    def _stream_frames(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       fps: float) -> str:
        s = self.source
        paced = s.realtime and not s.is_live
        index = 0  # frame_index: decoded frames since open
        last_progress = time.monotonic()
        start_wall: float | None = None  # paced loop: when the next pass's first frame is due
        while True:
            sched = Schedule(fps, s.max_fps, start_wall)
            last_t = -math.inf
            loop_start = index
            packets = container.demux(stream)
            while True:
                t_demux = time.perf_counter_ns()
                packet = next(packets, None)
                if packet is None:
                    break
                if self.stop.is_set():
                    raise _Stopped
                t_decode = time.perf_counter_ns()
                frames = packet.decode()
                self.ring.add_counts(decode_ns=time.perf_counter_ns() - (t_decode if s.is_live else t_demux))
                for frame in frames:
                    t = frame.time
                    if t is None:
                        t = (index - loop_start) / fps
                    index += 1
                    self.ring.add_counts(decoded=1)
                    last_progress = time.monotonic()
                    if t < last_t:
                        sched.restart()
                    last_t = t
                    if not sched.keep(t):
                        self.ring.add_counts(skipped=1)
                        continue
                    if paced:
                        delay = sched.delay(t, time.monotonic())
                        if delay > 0:
                            self._sleep(delay)
                        elif sched.behind(delay):
                            self.ring.add_counts(behind=1)
                            continue
                    elif not self.ring.writable():
                        if not self.ring.wait_writable(self.stop, self._beat):
                            raise _Stopped
                        last_progress = time.monotonic()  # waiting for the worker is no stall
                    self._write(frame, index - 1, t)
                self._beat()
                if time.monotonic() - last_progress > s.stall_timeout_s:
                    raise TimeoutError(f"stalled: no frame for {s.stall_timeout_s:g} s")
            # end of input
            if s.is_live:
                return "eof"
            if not s.loop:
                return "ended"
            if index == loop_start:
                raise EOFError("file has no decodable video frame")
            start_wall = sched.next_pass_wall(last_t, fps)
            try:
                container.seek(0)
                stream.codec_context.flush_buffers()
            except Exception as exc:  # unseekable: reopen instead
                log.info("%s: cannot seek to loop (%s); reopening", self._tag(), redact_text(str(exc)))
                return "loop"

    def _to_ring_format(self, frame: av.VideoFrame) -> tuple[av.VideoFrame, str, str, str]:
        """(frame, ring pix_fmt, matrix, range): the frame itself when its planes can be copied as
        they are, else one swscale conversion to yuv420p at an even size that fits (counted, logged once)."""
        s = self.source
        out, pix_fmt, matrix, rng, converted = to_ring_format(frame, s.max_width, s.max_height, self.ring.slot_bytes)
        if converted:
            self.ring.add_counts(converted=1)
            if not self._conversion_logged:
                self._conversion_logged = True
                log.info("%s: converting %s %dx%d to yuv420p %dx%d (%s, %s range) before the ring", self._tag(),
                         frame.format.name, frame.width, frame.height, out.width, out.height, matrix, rng)
        return out, pix_fmt, matrix, rng

    def _write(self, frame: av.VideoFrame, index: int, t: float) -> None:
        t0 = time.perf_counter_ns()
        src = (frame.width, frame.height)
        out, pix_fmt, matrix, rng = self._to_ring_format(frame)
        try:
            self.ring.write_planes(plane_views(out, pix_fmt), width=out.width, height=out.height, pix_fmt=pix_fmt,
                                   color_matrix=matrix, color_range=rng, frame_index=index, pts=float(t),
                                   ts_capture=time.time(), src_size=src, stop=self.stop, beat=self._beat)
        except WriteAborted:
            raise _Stopped from None
        self.ring.add_counts(decode_ns=time.perf_counter_ns() - t0)
        self.frames_written += 1
        self._session_frames += 1
        if self._session_frames == 1:
            self.ring.set_state("streaming")
            log.info("%s: streaming (%dx%d %s -> %dx%d %s, %s, %s range)", self._tag(), src[0], src[1],
                     frame.format.name, out.width, out.height, pix_fmt, matrix, rng)


# -- decoder process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderSpec:
    """What one decoder process reads: its sources, the shm name of each camera's ring, and the
    start gate file cameras wait for (event-like, e.g. a StopFlag the supervisor sets once the
    workers are ready; None = no gate)."""

    sources: list[CameraSource]
    ring_names: dict[str, str]
    start_gate: _EventLike | None = None


@dataclass
class _CameraThread:
    """decoder_main's bookkeeping for one camera's thread."""

    source: CameraSource
    ring_name: str
    thread: threading.Thread | None = None
    finished: bool = False  # ended normally (file without loop) or stopped
    crashes: int = 0
    restart_at: float = 0.0
    started_at: float = 0.0
    result: dict = field(default_factory=dict)


def _camera_thread_body(cam: _CameraThread, stop: _EventLike, start_gate: _EventLike | None = None) -> None:
    """Attach the ring and run the reader; an unexpected crash is logged (redacted) and
    recorded in the ring, and decoder_main restarts the thread after a backoff."""
    ring: FrameRing | None = None
    try:
        try:
            ring = FrameRing.attach(cam.ring_name)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot attach ring {cam.ring_name}: {exc}") from exc
        CameraReader(cam.source, ring, stop, start_gate=start_gate).run()
        cam.result["ok"] = True
    except BaseException as exc:  # one camera never takes the process down
        text = redact_text(f"{type(exc).__name__}: {exc}")
        log.error("camera=%s url=%s: reader crashed: %s", cam.source.camera_id, cam.source.redacted_url, text)
        log.debug("camera=%s traceback: %s", cam.source.camera_id,
                  redact_text("".join(traceback.format_exception(exc))).replace("\n", " | "))
        if ring is not None:
            try:
                ring.set_state("failed", error=text[:256])
                ring.heartbeat()
            except Exception:
                log.debug("camera=%s: cannot record the crash in the ring", cam.source.camera_id)
    finally:
        if ring is not None:
            ring.close()


def decoder_main(spec: DecoderSpec, stop_event: _EventLike) -> None:
    """Decoder process entry point: one CameraReader thread per camera until ``stop_event``.

    A camera that is down never blocks the others (each has its own thread); a thread that
    crashes is restarted after 1, 2, 4 ... 30 s. Returns once stop is set and the threads have
    finished (waiting at most ~2 s; a thread still inside a blocking FFmpeg read is a daemon
    thread and ends with the process, or by its read timeout).
    """
    cams = [_CameraThread(src, spec.ring_names[src.camera_id]) for src in spec.sources]
    log.info("decoder started (pid %d): cameras %s", os.getpid(), ", ".join(c.source.camera_id for c in cams))

    def start(cam: _CameraThread) -> None:
        cam.result = {}
        cam.started_at = time.monotonic()
        cam.thread = threading.Thread(target=_camera_thread_body, args=(cam, stop_event, spec.start_gate),
                                      name=f"decode-{cam.source.camera_id}", daemon=True)
        cam.thread.start()

    for cam in cams:
        start(cam)
    while not stop_event.wait(_POLL_S):
        now = time.monotonic()
        for cam in cams:
            if cam.finished:
                continue
            if cam.thread is None:
                if now >= cam.restart_at:
                    log.info("camera=%s: restarting reader", cam.source.camera_id)
                    start(cam)
                continue
            if cam.thread.is_alive():
                continue
            cam.thread = None
            if cam.result.get("ok"):
                cam.finished = True
                continue
            if now - cam.started_at > 60.0:
                cam.crashes = 0  # it ran fine for a while
            delay = min(30.0, 1.0 * 2 ** cam.crashes)
            cam.crashes += 1
            cam.restart_at = now + delay
            log.warning("camera=%s: reader thread died; restarting in %.0f s", cam.source.camera_id, delay)
    deadline = time.monotonic() + 2.0
    for cam in cams:
        if cam.thread is not None:
            cam.thread.join(max(0.0, deadline - time.monotonic()))
    alive = [c.source.camera_id for c in cams if c.thread is not None and c.thread.is_alive()]
    if alive:
        log.warning("decoder stopping with readers still blocked in I/O: %s", ", ".join(alive))
    log.info("decoder stopped (pid %d)", os.getpid())
