"""Stage 1: decode cameras and files into the per-camera frame rings.

Consumes: video sources (RTSP/RTMP/HTTP URLs or files) opened with PyAV (FFmpeg).
Produces: YUV 4:2:0 frames (yuv420p or nv12 planes copied as decoded, no colour conversion,
tagged with their colour matrix and range) with their frame index, pts and capture wall time,
written into each camera's :class:`~streamdet.pipeline.ring.buffer.FrameRing`, plus the decoder state,
heartbeat and counters in the ring header.
Process: a decoder process (spawned by the supervisor) runs
:func:`streamdet.pipeline.decode.process.decoder_main`: one :class:`CameraReader` thread per
camera. Never imports torch.

Behaviour of a camera thread:

- start gate: a file camera (not ``is_live``) waits for ``DecoderSpec.start_gate`` (ring state
  ``starting``, heartbeating, stop-aware) before opening, so no file frame is published before
  the workers are ready; live cameras start at once.
- open with PyAV's ``timeout=(open_timeout_s, read limit)`` (an FFmpeg interrupt callback that
  aborts a blocking open or read after that long), the read limit being
  ``min(read_timeout_s, stall_timeout_s)``; RTSP also gets FFmpeg's ``timeout`` socket option
  and ``rtsp_transport``, other network protocols ``rw_timeout`` (both the read limit, in
  microseconds). Decode the first video stream, write into the ring, heartbeat.
- decoder: a source that wants NVDEC (``decode: nvdec``, or ``auto`` for a camera of a GPU
  worker) is opened with FFmpeg's CUDA hwaccel and its frames come back downloaded as NV12 (the
  same ring, the same worker path); when NVDEC cannot be used the camera falls back to the CPU
  for good, the reason logged once and counted in ``hw_fallbacks`` (:mod:`streamdet.pipeline.decode.nvdec`
  has the rules); the ring's ``decode_mode`` says which decoder is in use.
- pixels: yuv420p/yuvj420p/nv12 frames of an even size that fits are copied plane by plane into
  the ring with their colour tags; anything else is converted once to yuv420p
  (:mod:`streamdet.pipeline.decode.frames` has the rule), counted in ``frames_converted`` and logged
  once per camera; the source size is recorded. Every ring slot carries its frame's geometry,
  so a resolution change mid-stream needs nothing special (it is logged).
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
  (``frames_skipped``); :mod:`streamdet.pipeline.decode.pacing` has the rules. Network streams
  (``LIVE_SCHEMES``, http(s) included: HLS, MJPEG cameras) are never paced.
- ``decode_ns`` adds the wall time spent demuxing (files only: a live demux mostly waits for
  the network), decoding, converting and writing; pacing sleeps and lossless waits excluded.
- end of file: ``loop`` seeks back to the start (reopening if the seek fails), otherwise the
  state becomes ``ended`` and the thread finishes (``finished``). End of a network stream is a
  failure.

What each failure does (:mod:`streamdet.pipeline.decode.faults` decides what is permanent,
:mod:`streamdet.pipeline.decode.frame_pass` enforces the timeouts):

- network stream, any failure (refused, unreachable, open timeout, end of stream, read error):
  state ``backoff`` with the reason in ``last_error``, one warning line, reopen after
  ``backoff_initial_s * 2**n`` (capped at ``backoff_max_s``, +-``backoff_jitter``), forever,
  until stop; ``reconnects`` counts the reopens. A session that wrote frames resets the backoff.
- frozen stream (no data at all): noticed when one read has waited the read limit, i.e.
  ``min(read_timeout_s, stall_timeout_s)`` (+ FFmpeg's 0.1 s poll) after the last packet, then
  backoff as above. Packets that decode to nothing for ``stall_timeout_s`` (time spent reading
  and decoding) are a stall: the same. Single undecodable packets of a live stream are skipped.
- file that does not exist, cannot be read (permission, I/O) or times out while opening:
  backoff and retry as above (it may appear later, e.g. an NFS mount).
- file that exists but is not decodable (empty, not a video, no video stream, unknown codec,
  no decodable frame): state ``failed`` with the reason (redacted) in ``last_error`` and one
  error log line; no retry. The thread then finishes (``finished``): the decoder process lets the
  camera go, and the supervisor releases its ring (see :mod:`streamdet.pipeline.decode.process`).
- file with damaged data (truncated, corrupt packets): every readable frame is written once;
  undecodable packets are skipped. At the end of the readable data a non-looping file
  becomes ``failed`` with "damaged data after frame N (...)" (no retry: a reopen would replay
  it); a looping file logs the damage once and loops from the start (a pass without any
  readable frame is ``failed`` instead of spinning).
- any other failure of a non-looping file after it wrote frames (a read timeout on a hung
  mount): ``failed``, for the same reason; before any frame was written: backoff and retry.
- the stop event interrupts every sleep and wait within 0.5 s; a blocking FFmpeg open or read
  returns within its timeout at worst (a live stream delivers packets every few tens of ms).
- ring states: ``starting`` (gate) -> ``connecting`` (opening) -> ``streaming`` (first frame
  written) -> ``backoff`` (after a failure, ``last_error`` set) -> ``connecting`` ...; ``ended``
  (file without loop, read to its end), ``failed`` (permanent failure above, or the thread
  crashed: decoder_main restarts a crashed thread), ``stopped`` (stop event).
- log lines carry the camera id and the redacted URL; FFmpeg error texts (which quote the URL)
  are redacted before they are logged or stored in the ring. Credentials are never logged.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from fractions import Fraction
from typing import Any

import av

from streamdet.pipeline.decode.contract import DecoderLive, EventLike
from streamdet.pipeline.decode.faults import Failure, SourceDamaged, SourceUnusable, classify_failure
from streamdet.pipeline.decode.frame_pass import FramePass
from streamdet.pipeline.decode.frames import plane_views, to_ring_format
from streamdet.pipeline.decode.nvdec import NVDEC_THREADS, NvdecState, is_no_hw_stream
from streamdet.pipeline.decode.pacing import Schedule
from streamdet.pipeline.decode.source import CameraSource
from streamdet.pipeline.live import LiveChannel
from streamdet.pipeline.ring.buffer import FrameRing, WriteAborted
from streamdet.redact import redact_text

log = logging.getLogger("streamdet.decode")

POLL_S = 0.5  # longest sleep between stop/heartbeat checks
_GATE_POLL_S = 0.1  # start gate: how often stop is checked while waiting


class _Stopped(Exception):
    """The stop event was set: unwind the reader quietly."""


class CameraReader:
    """Reads one source into its ring until stop (or until a non-looping file ends or fails).

    ``run()`` is a thread body; it catches every error from the source and reconnects unless
    the failure is permanent (see the module docstring), so it only returns on stop, at the end
    of a non-looping file, or on a permanent failure; ``finished`` then says which of the last
    two (``"ended"``, ``"failed"``), None after a stop.
    ``start_gate`` (event-like, or None) holds a file camera before its first open.
    """

    def __init__(self, source: CameraSource, ring: FrameRing, stop_event: EventLike,
                 rng: random.Random | None = None, start_gate: EventLike | None = None,
                 live: LiveChannel | None = None) -> None:
        self.source = source
        self.ring = ring
        # the supervisor's live settings (DecoderLive: max_fps per camera), read when they change
        self.live = live.reader(DecoderLive.from_json, source.camera_id) if live is not None else None
        self.last_beat = time.monotonic()  # this thread's own last sign of progress (decoder_main reads it)
        self.stop = stop_event
        self.start_gate = start_gate
        self.rng = rng or random.Random()
        self.pid = os.getpid()
        self.frames_written = 0  # this reader, all sessions
        self._session_frames = 0  # frames written since the last (re)open
        self._opening = True  # the current session has not opened its source yet
        self._open_started = 0.0
        self._conversion_logged = False
        self._damage_logged = False
        self._geometry: tuple[int, int] | None = None  # source size of the last frame written
        self.nvdec = NvdecState(source, ring, self._tag())  # NVDEC while it works, else the CPU
        self._session_nvdec = False  # the current session decodes with NVDEC
        self._session_decoded = 0  # frames decoded since the last (re)open
        self.finished: str | None = None  # "ended" or "failed" once the camera finished for good

    # -- helpers ------------------------------------------------------------------------------

    def _tag(self) -> str:
        return f"camera={self.source.camera_id} url={self.source.redacted_url}"

    def _beat(self) -> None:
        self.last_beat = time.monotonic()
        self.ring.heartbeat(self.pid)

    def max_fps(self) -> float | None:
        """The camera's max_fps now: the supervisor's live value when there is one."""
        if self.live is None:
            return self.source.max_fps
        self.live.poll()
        current = self.live.current
        if current is None or self.source.camera_id not in current.max_fps:
            return self.source.max_fps
        return current.max_fps[self.source.camera_id] or None

    def _sleep(self, seconds: float) -> None:
        """Sleep, heartbeating; raises _Stopped as soon as stop is set (within POLL_S)."""
        end = time.monotonic() + seconds
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                break
            if self.stop.wait(min(remaining, POLL_S)):
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
                next_beat = time.monotonic() + POLL_S

    def backoff_delay(self, failures: int) -> float:
        """Delay before reopening after ``failures`` failures in a row (0 for the first):
        ``backoff_initial_s`` doubling up to ``backoff_max_s``, +-``backoff_jitter``."""
        s = self.source
        base = min(s.backoff_max_s, s.backoff_initial_s * (2 ** min(failures, 30)))
        return max(0.0, base * (1.0 + self.rng.uniform(-s.backoff_jitter, s.backoff_jitter)))

    def _fail_permanently(self, failure: Failure) -> None:
        """State ``failed`` with the reason and one log line; the thread then finishes."""
        self.ring.set_state("failed", error=failure.reason[:256])
        self.finished = "failed"
        log.error("%s: %s; camera failed, not retried", self._tag(), failure.reason)

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Open, stream, reconnect with backoff; returns on stop, at the end of a file, or after a
        permanent failure."""
        s = self.source
        failures = 0
        opened_before = quiet_reopen = False  # quiet: a looping file's reopen or a move to the CPU
        self.ring.set_lossless(s.lossless)
        try:
            self._beat()
            self._wait_gate()
            while not self.stop.is_set():
                self.ring.set_state("connecting")
                self._beat()
                if opened_before and not quiet_reopen:
                    self.ring.add_counts(reconnects=1)
                opened_before, quiet_reopen = True, False
                self._session_frames = self._session_decoded = 0
                try:
                    outcome = self._session()
                except _Stopped:
                    raise
                except Exception as exc:  # classified: reconnect, or a permanent failure
                    failure = classify_failure(exc, s, opening=self._opening,
                                               open_elapsed_s=time.monotonic() - self._open_started,
                                               frames_written=self.frames_written)
                else:
                    if outcome == "ended":
                        self.ring.set_state("ended")
                        self.finished = "ended"
                        log.info("%s: end of file after %d frames; camera finished", self._tag(),
                                 self.frames_written)
                        return
                    if outcome == "loop":  # a looping file that cannot seek: reopen now
                        quiet_reopen = True
                        continue
                    failure = Failure("end of stream", permanent=False)
                if self._nvdec_failed_early(failure):
                    quiet_reopen = True  # reopened at once, on the CPU
                    continue
                if failure.permanent:
                    self._fail_permanently(failure)
                    return
                if self._session_frames > 0:
                    failures = 0
                delay = self.backoff_delay(failures)
                failures += 1
                self.ring.set_state("backoff", error=failure.reason[:256])
                log.warning("%s: %s; reconnecting in %.1f s (attempt %d)", self._tag(), failure.reason, delay,
                            failures)
                self._sleep(delay)
        except _Stopped:
            pass
        self.ring.set_state("stopped")
        self._beat()

    def _nvdec_failed_early(self, failure: Failure) -> bool:
        """A session that opened with NVDEC and ended before decoding any frame: NVDEC is given up
        (logged once, counted) and the caller reopens at once on the CPU, where a fault of the
        source itself shows again and is handled as usual."""
        if not self._session_nvdec or self._opening or self._session_decoded:
            return False
        self._session_nvdec = False
        self.nvdec.fall_back(f"no frame decoded with NVDEC ({failure.reason})")
        return True

    def _open(self) -> av.container.InputContainer:
        """Open the source, with NVDEC when this camera uses it and NVDEC takes its video stream
        (``_session_nvdec`` tells); an NVDEC failure here falls back to the CPU (see nvdec)."""
        s = self.source
        hwaccel = self.nvdec.hwaccel()
        kwargs: dict[str, Any] = {"container_options": s.open_options(), "timeout": (s.open_timeout_s, s.read_limit_s)}
        self._session_nvdec = hwaccel is not None
        if hwaccel is None:
            return av.open(s.url, mode="r", **kwargs)
        try:
            container = av.open(s.url, mode="r", hwaccel=hwaccel, **kwargs)
        except Exception as exc:
            reason = self._nvdec_open_failure(exc)
            if reason is None:
                raise  # the source's failure: handled as usual, NVDEC kept
            self._session_nvdec = False
            self.nvdec.fall_back(reason)
            return av.open(s.url, mode="r", **kwargs)
        video = container.streams.video
        if video and not video[0].codec_context.is_hwaccel:  # this container decodes it in software
            self._session_nvdec = False
            self.nvdec.fall_back(f"NVDEC cannot decode this stream's codec ({video[0].codec_context.name})")
        return container

    def _nvdec_open_failure(self, exc: Exception) -> str | None:
        """Why an open with NVDEC failed because of NVDEC, or None when the source failed (the
        CUDA device, checked again, can be opened)."""
        if is_no_hw_stream(exc):
            return "no stream of this input can be decoded with NVDEC"
        problem = self.nvdec.device_problem()
        if problem is None:
            return None
        return f"{problem} (open failed: {type(exc).__name__}: {redact_text(str(exc))})"

    def _session(self) -> str:
        """One open of the source: returns 'ended' (file EOF without loop), 'loop' (looping file
        to reopen) or 'eof' (stream ended); raises on errors and stalls, _Stopped on stop."""
        self._opening = True
        self._open_started = time.monotonic()
        container = self._open()
        self._opening = False
        try:
            if self.stop.is_set():
                raise _Stopped
            if not container.streams.video:
                raise SourceUnusable(f"no video stream (format {container.format.name})")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            self.ring.set_decode_mode("nvdec" if self._session_nvdec else "cpu")
            ctx.thread_count = NVDEC_THREADS if self._session_nvdec else self.source.threads
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            fps = float(rate) if rate and float(rate) > 0 else 25.0
            log.info("%s: opened %s %dx%d %s @ %.2f fps, decoding with %s", self._tag(), ctx.name, ctx.width,
                     ctx.height, ctx.pix_fmt, fps, "NVDEC" if self._session_nvdec else "the CPU")
            return self._stream_frames(container, stream, fps)
        finally:
            container.close()

    def _after_packet(self) -> None:
        if self.stop.is_set():
            raise _Stopped
        self._beat()

    def _add_cost(self, ns: int) -> None:
        self.ring.add_counts(decode_ns=ns)

    def _stream_frames(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                       fps: float) -> str:
        s = self.source
        paced = s.realtime and not s.is_live
        index = 0  # frame_index: decoded frames since open
        start_wall: float | None = None  # paced loop: when the next pass's first frame is due
        while True:
            max_fps = self.max_fps()
            sched = Schedule(fps, max_fps, start_wall)
            last_t = -math.inf
            loop_start = index
            frames = FramePass(container, stream, live=s.is_live, read_limit_s=s.read_limit_s,
                               stall_timeout_s=s.stall_timeout_s, tag=self._tag(),
                               after_packet=self._after_packet, cost=self._add_cost)
            for frame in frames:
                t = frame.time
                if t is None:
                    t = (index - loop_start) / fps
                index += 1
                self._session_decoded += 1
                self.ring.add_counts(decoded=1)
                if t < last_t:
                    sched.restart()
                last_t = t
                if self.live is not None and self.max_fps() != max_fps:
                    max_fps = self.max_fps()
                    sched.set_max_fps(fps, max_fps)
                    log.info("%s: max_fps is now %s", self._tag(), max_fps or "unlimited")
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
                elif not self.ring.writable() and not self.ring.wait_writable(self.stop, self._beat):
                    raise _Stopped
                self._write(frame, index - 1, t)
            # end of the input, or of a file's readable data
            if s.is_live:
                return "eof"
            if frames.damage is not None and (not s.loop or frames.frames == 0):
                raise SourceDamaged(frames.damage)
            if frames.frames == 0:
                raise SourceUnusable("no decodable video frame")
            if frames.damage is not None and not self._damage_logged:
                self._damage_logged = True
                log.warning("%s: %s; looping from the start (logged once)", self._tag(), frames.damage)
            if not s.loop:
                return "ended"
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
        if self._geometry is not None and src != self._geometry:
            log.info("%s: resolution changed from %dx%d to %dx%d at frame %d", self._tag(), *self._geometry, *src,
                     index)
        self._geometry = src
        if self._session_frames == 1:
            self.ring.set_state("streaming")
            log.info("%s: streaming (%dx%d %s -> %dx%d %s, %s, %s range)", self._tag(), src[0], src[1],
                     frame.format.name, out.width, out.height, pix_fmt, matrix, rng)
