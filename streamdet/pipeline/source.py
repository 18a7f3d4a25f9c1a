"""One camera or file as the decoder reads it: URL, kind, timeouts, reconnect and decode settings.

Built by the supervisor from the config (picklable, frozen); :mod:`streamdet.pipeline.decode`
reads it. No av import: the supervisor builds these without loading FFmpeg.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from streamdet.redact import redact_url

__all__ = ["LIVE_SCHEMES", "CameraSource", "SourceSections"]

#: URL schemes read as live network streams (never paced, EOF = failure).
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "http", "https"})
_SOCKET_TIMEOUT_SCHEMES = frozenset({"http", "https", "tcp", "rtmp", "rtmps", "srt"})


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
    # the camera's decode setting: "cpu", "nvdec" or "auto" (nvdec when nvdec_device is set)
    decode: str = "cpu"
    # CUDA device index for NVDEC, as the decoder process numbers the GPUs (the supervisor chose
    # the GPU of the camera's worker); None: no GPU for this camera (auto then means cpu, and
    # nvdec tries CUDA's default device)
    nvdec_device: str | None = None

    @property
    def wants_nvdec(self) -> bool:
        """Whether the decoder tries NVDEC first (it falls back to the CPU when NVDEC fails)."""
        return self.decode == "nvdec" or (self.decode == "auto" and self.nvdec_device is not None)

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

    @property
    def read_limit_s(self) -> float:
        """Longest one blocking read may take: no data at all for this long is both a read
        timeout and a stall, so the smaller of the two bounds it."""
        return min(self.read_timeout_s, self.stall_timeout_s)

    def open_options(self) -> dict[str, str]:
        """FFmpeg demuxer options: RTSP transport, and a socket timeout (microseconds) as a
        second guard behind PyAV's interrupt timeout."""
        timeout_us = str(max(1, int(self.read_limit_s * 1e6)))
        if self.scheme in ("rtsp", "rtsps"):
            return {"rtsp_transport": self.rtsp_transport, "timeout": timeout_us}
        if self.scheme in _SOCKET_TIMEOUT_SCHEMES:
            return {"rw_timeout": timeout_us}
        return {}


class CameraSection(Protocol):
    """What a decoder reads of one entry of the configuration's ``cameras`` (streamdet.config's
    CameraConfig; described here so that pipeline/ does not import the configuration package)."""

    @property
    def id(self) -> str: ...
    @property
    def url(self) -> Any: ...
    @property
    def rtsp_transport(self) -> str: ...
    @property
    def realtime(self) -> bool: ...
    @property
    def loop(self) -> bool: ...
    @property
    def max_fps(self) -> float | None: ...
    @property
    def decode(self) -> str: ...


class DecodeSection(Protocol):
    @property
    def open_timeout_s(self) -> float: ...
    @property
    def read_timeout_s(self) -> float: ...
    @property
    def stall_timeout_s(self) -> float: ...


class ReconnectSection(Protocol):
    @property
    def initial_s(self) -> float: ...
    @property
    def max_s(self) -> float: ...
    @property
    def jitter(self) -> float: ...


class RingSection(Protocol):
    @property
    def max_width(self) -> int: ...
    @property
    def max_height(self) -> int: ...


@dataclass(frozen=True)
class SourceSections:
    """What the supervisor hands a decoder process for one camera: the configuration's own frozen
    sections, plus what the supervisor decided (FFmpeg threads, the NVDEC GPU). :meth:`source`
    is the one place where they become a :class:`CameraSource`."""

    camera: CameraSection
    decode: DecodeSection
    reconnect: ReconnectSection
    ring: RingSection
    threads: int = 0
    nvdec_device: str | None = None

    @property
    def camera_id(self) -> str:
        return self.camera.id

    def source(self) -> CameraSource:
        c, d, r = self.camera, self.decode, self.reconnect
        return CameraSource(
            camera_id=c.id, url=str(c.url), rtsp_transport=c.rtsp_transport, realtime=c.realtime, loop=c.loop,
            max_fps=c.max_fps, open_timeout_s=d.open_timeout_s, read_timeout_s=d.read_timeout_s,
            stall_timeout_s=d.stall_timeout_s, backoff_initial_s=r.initial_s, backoff_max_s=r.max_s,
            backoff_jitter=r.jitter, max_width=self.ring.max_width, max_height=self.ring.max_height,
            threads=self.threads, decode=c.decode, nvdec_device=self.nvdec_device,
        )
