"""Stage 1: decode cameras and files into the per-camera frame rings.

Consumes: video sources (RTSP/RTMP/HTTP URLs or files) opened with PyAV (FFmpeg).
Produces: BGR24 frames (downscaled to fit the ring) with their frame index, pts and capture
wall time, written into each camera's :class:`~streamdet.pipeline.ring.FrameRing`, plus the
decoder state, heartbeat and counters in the ring header.
Process: a decoder process (spawned by the supervisor) runs :func:`decoder_main`: one
:class:`CameraReader` thread per camera. Never imports torch.

Behaviour of a camera thread:

- open with timeouts (PyAV ``timeout=(open, read)``: an FFmpeg interrupt callback that aborts
  any blocking open/read after that long; RTSP also gets FFmpeg's ``timeout`` socket option, in
  microseconds, and ``rtsp_transport``), decode the first video stream, convert to bgr24
  (downscaling keeping the aspect ratio when above ``max_width`` x ``max_height`` or the ring's
  slot size; the source size is recorded), write into the ring, heartbeat.
- ``pts`` is ``frame.time`` in seconds (fallback ``frame_index / fps``); ``ts_capture`` is the
  wall clock when the frame was decoded (after pacing, for paced files).
- ``frame_index`` counts decoded frames from 0 each time the source is (re)opened after a
  failure; it keeps counting across ``loop`` restarts of a file (where pts starts over).
  Frames skipped by ``max_fps`` still consume an index, so the index names the source frame.
- files are paced at their own rate when ``realtime`` (sleeping against a wall-clock schedule
  anchored at the first frame; a loop continues it one frame period after the last frame; it
  re-anchors when more than 1 s behind instead of bursting), as fast as possible otherwise.
  Network streams (``LIVE_SCHEMES``, http(s) included: HLS, MJPEG cameras) are never paced.
- ``max_fps`` keeps a frame only when its pts is at least ``1 / max_fps`` after the previous
  kept frame's schedule; skipped frames are counted (``frames_skipped``) and not converted.
- end of file: ``loop`` seeks back to the start (reopening if the seek fails), otherwise the
  state becomes ``ended`` and the thread finishes. End of a network stream is a failure.
- failure to open, read errors, and stalls (no decoded frame for ``stall_timeout_s`` while
  packets arrive; no packet at all is caught by the read timeout) close the source and reopen
  it after ``backoff_initial_s * 2**n`` (capped at ``backoff_max_s``, +-``backoff_jitter``),
  forever, until stop. A stream that delivered frames resets the backoff.
- the stop event interrupts every sleep within 0.5 s; a blocking FFmpeg open or read returns
  within its timeout at worst (a live stream delivers packets every few tens of ms).
- ring states: ``connecting`` (opening) -> ``streaming`` (first frame written) -> ``backoff``
  (after a failure, ``last_error`` set) -> ``connecting`` ...; ``ended`` (file without loop),
  ``stopped`` (stop event); ``failed`` (the thread crashed; decoder_main restarts it).
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
import numpy as np

from streamdet.errors import SourceError
from streamdet.pipeline.ring import FrameRing
from streamdet.redact import redact_text, redact_url

log = logging.getLogger("streamdet.decode")

#: URL schemes read as live network streams (never paced, EOF = failure).
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "http", "https"})
_POLL_S = 0.5  # longest sleep between stop/heartbeat checks
_BEHIND_RESET_S = 1.0  # a paced file this far behind schedule re-anchors instead of bursting




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


class _EventLike(Protocol):
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Stopped(Exception):
    """The stop event was set: unwind the reader quietly."""


def scaled_size(width: int, height: int, max_width: int, max_height: int,
                max_bytes: int | None = None) -> tuple[int, int]:
    """Largest size with the aspect ratio of ``width`` x ``height`` that fits in ``max_width`` x
    ``max_height`` (and ``max_bytes`` of bgr24); the size itself when it already fits."""
    scale = min(1.0, max_width / width, max_height / height)
    if max_bytes is not None:
        scale = min(scale, math.sqrt(max_bytes / (width * height * 3)))
    if scale >= 1.0:
        return width, height
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    if max_bytes is not None:
        while w * h * 3 > max_bytes:  # float rounding
            w, h = max(1, w - 1), max(1, h - 1)
    return w, h


class CameraReader:
    """Reads one source into its ring until stop (or until a non-looping file ends).

    ``run()`` is a thread body; it catches every error from the source and reconnects, so it
    only returns on stop or at the end of a non-looping file.
    """

    def __init__(self, source: CameraSource, ring: FrameRing, stop_event: _EventLike,
                 rng: random.Random | None = None) -> None:
        self.source = source
        self.ring = ring
        self.stop = stop_event
        self.rng = rng or random.Random()
        self.pid = os.getpid()
        self.frames_written = 0  # this reader, all sessions
        self._session_frames = 0  # frames written since the last (re)open
        self._phase = "open"  # what the current session is doing: "open" or "read"
        self._open_started = 0.0

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
        try:
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
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            fps = float(rate) if rate and float(rate) > 0 else 25.0
            log.info("%s: opened %s %dx%d @ %.2f fps", self._tag(), stream.codec_context.name,
                     stream.codec_context.width, stream.codec_context.height, fps)
            return self._stream_frames(container, stream, fps)
        finally:
            container.close()

    def _stream_frames(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       fps: float) -> str:
        s = self.source
        paced = s.realtime and not s.is_live
        interval = 1.0 / s.max_fps if s.max_fps else 0.0
        index = 0  # frame_index: decoded frames since open
        last_progress = time.monotonic()
        loop_wall: float | None = None  # paced loop: when the next loop's first frame is due
        while True:
            anchor: tuple[float, float] | None = None  # (wall monotonic, media time) of pacing
            next_keep: float | None = None  # max_fps: earliest media time of the next kept frame
            last_t = -math.inf
            loop_start = index
            for packet in container.demux(stream):
                if self.stop.is_set():
                    raise _Stopped
                for frame in packet.decode():
                    t = frame.time
                    if t is None:
                        t = (index - loop_start) / fps
                    index += 1
                    self.ring.add_counts(decoded=1)
                    last_progress = time.monotonic()
                    if t < last_t:  # timestamps went back (discontinuity): restart schedules
                        anchor, next_keep = None, None
                    last_t = t
                    if interval:
                        if next_keep is not None and t < next_keep - interval * 0.01:
                            self.ring.add_counts(skipped=1)
                            continue
                        next_keep = t + interval if next_keep is None or t - next_keep >= interval \
                            else next_keep + interval
                    if paced:
                        now = time.monotonic()
                        if anchor is None:
                            anchor = (now if loop_wall is None else loop_wall, t)
                            loop_wall = None
                        due = anchor[0] + (t - anchor[1])
                        if due > now:
                            self._sleep(due - now)
                        elif now - due > _BEHIND_RESET_S:
                            anchor = (now, t)
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
            if anchor is not None:  # the next loop starts one frame after this loop's last frame
                loop_wall = anchor[0] + (last_t - anchor[1]) + 1.0 / fps
            try:
                container.seek(0)
                stream.codec_context.flush_buffers()
            except Exception as exc:  # unseekable: reopen instead
                log.info("%s: cannot seek to loop (%s); reopening", self._tag(), redact_text(str(exc)))
                return "loop"

    def _write(self, frame: av.VideoFrame, index: int, t: float) -> None:
        s = self.source
        w, h = scaled_size(frame.width, frame.height, s.max_width, s.max_height, self.ring.slot_bytes)
        if (w, h) == (frame.width, frame.height):
            image = frame.to_ndarray(format="bgr24")
        else:
            image = frame.to_ndarray(format="bgr24", width=w, height=h, interpolation="AREA")
        self.ring.write(np.asarray(image), frame_index=index, pts=float(t), ts_capture=time.time(),
                        src_size=(frame.width, frame.height))
        self.frames_written += 1
        self._session_frames += 1
        if self._session_frames == 1:
            self.ring.set_state("streaming")
            log.info("%s: streaming (%dx%d -> %dx%d)", self._tag(), frame.width, frame.height, w, h)


# -- decoder process ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderSpec:
    """What one decoder process reads: its sources and the shm name of each camera's ring."""

    sources: list[CameraSource]
    ring_names: dict[str, str]


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


def _camera_thread_body(cam: _CameraThread, stop: _EventLike) -> None:
    """Attach the ring and run the reader; an unexpected crash is logged (redacted) and
    recorded in the ring, and decoder_main restarts the thread after a backoff."""
    ring: FrameRing | None = None
    try:
        try:
            ring = FrameRing.attach(cam.ring_name)
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot attach ring {cam.ring_name}: {exc}") from exc
        CameraReader(cam.source, ring, stop).run()
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
        cam.thread = threading.Thread(target=_camera_thread_body, args=(cam, stop_event),
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
