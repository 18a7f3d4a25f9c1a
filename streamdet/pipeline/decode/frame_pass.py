"""One pass over an open input: demux, decode, and the read and stall timeouts enforced.

Why the read timeout is measured here and not left to FFmpeg: PyAV's ``timeout=(open, read)``
installs an interrupt callback that aborts a blocking ``av_read_frame`` after ``read`` seconds.
But when that read fails, libavformat first flushes the stream's parser (RTSP H.264 streams are
parsed) and returns the access unit the parser was holding, swallowing the error; only the
*next* read reports it, after another ``read`` seconds. A frozen RTSP server was so noticed
after twice the timeout, and a freeze shorter than that never (measured: 6.0 s with a 3 s
timeout). So each read is timed, and one that took the whole limit is a timeout whatever it
returned (a packet is never that late on a healthy stream).

The stall timeout counts the time spent reading and decoding since the last decoded frame
(pacing sleeps and waits for the worker excluded), checked after every packet: packets that
decode to nothing for that long are a stall.

Errors: a live stream's demux error ends the pass (the caller reconnects); its decode errors
skip the packet (the stall timeout catches a stream that never decodes). In a file, a demux or
decode error is damaged data: the first one is recorded in :attr:`FramePass.damage`, a decode
error skips its packet, a demux error ends the pass after the decoder's buffered frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import av

from streamdet.pipeline.decode.faults import ReadTimedOut, Stalled, describe_error

__all__ = ["FramePass"]

log = logging.getLogger("streamdet.decode")


class FramePass:
    """Iterate the decoded frames of ``stream`` from the container's current position to the
    end of the input (or a file's damaged data); raises :class:`ReadTimedOut`,
    :class:`Stalled`, or a live stream's demux error.

    ``after_packet()`` runs after each packet (heartbeat, stop check: it may raise);
    ``cost(ns)`` receives the demux+decode time of each packet (decode only for live streams,
    whose demux mostly waits for the network).
    """

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream, *,
                 live: bool, read_limit_s: float, stall_timeout_s: float, tag: str,
                 after_packet: Callable[[], None], cost: Callable[[int], None]) -> None:
        self.container = container
        self.stream = stream
        self.live = live
        self.read_limit_s = read_limit_s
        self.stall_timeout_s = stall_timeout_s
        self.tag = tag
        self.after_packet = after_packet
        self.cost = cost
        self.frames = 0  # decoded in this pass
        self.damage: str | None = None  # a file's first demux/decode error, "at frame N: ..."
        self.decode_errors = 0

    def _read_limit_reason(self) -> str:
        return f"no data for {self.read_limit_s:g} s"

    def _damaged(self, exc: BaseException, where: str) -> None:
        if self.damage is None:
            self.damage = f"damaged data after frame {self.frames} ({where}: {describe_error(exc)})"

    def _decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        try:
            return packet.decode()
        except av.error.FFmpegError as exc:
            self.decode_errors += 1
            if not self.live:
                self._damaged(exc, "decoding")
            level = logging.WARNING if self.decode_errors == 1 else logging.DEBUG
            log.log(level, "%s: undecodable packet skipped after frame %d: %s", self.tag, self.frames,
                    describe_error(exc))
            return []

    def _drain(self) -> list[av.VideoFrame]:
        """The frames the decoder still holds, after a demux error (no flush packet came)."""
        try:
            return self.stream.codec_context.decode(None)
        except av.error.FFmpegError:
            return []

    def __iter__(self) -> Iterator[av.VideoFrame]:
        packets = self.container.demux(self.stream)
        idle = 0.0  # seconds spent reading and decoding since the last decoded frame
        while True:
            t0 = time.monotonic()
            ns0 = time.perf_counter_ns()
            try:
                packet = next(packets, None)
            except av.error.ExitError:  # the interrupt callback fired and nothing was held back
                raise ReadTimedOut(self._read_limit_reason()) from None
            except av.error.FFmpegError as exc:
                if self.live:
                    raise
                frames = self._drain()
                self.frames += len(frames)
                self._damaged(exc, "reading")
                yield from frames
                return
            if time.monotonic() - t0 >= self.read_limit_s:  # interrupted; see the module docstring
                raise ReadTimedOut(self._read_limit_reason())
            if packet is None:
                return
            ns1 = time.perf_counter_ns()
            frames = self._decode(packet)
            self.cost(time.perf_counter_ns() - (ns1 if self.live else ns0))
            self.after_packet()
            idle += time.monotonic() - t0
            if frames:
                idle = 0.0
                self.frames += len(frames)
                yield from frames
            elif idle > self.stall_timeout_s:
                raise Stalled(f"stalled: no frame for {self.stall_timeout_s:g} s")
