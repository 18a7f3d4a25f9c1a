"""One camera or file as the decoder reads it: the configuration's sections for it, and what they mean.

Built by the supervisor from the config (picklable, frozen); :mod:`streamdet.pipeline.decode.reader`
reads it. No av import: the supervisor builds these without loading FFmpeg.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from streamdet.redact import redact_url

if TYPE_CHECKING:
    from streamdet.config.schema import CameraConfig, DecodeConfig, ReconnectConfig, RingConfig

__all__ = ["LIVE_SCHEMES", "CameraSource"]

#: URL schemes read as live network streams (never paced, EOF = failure).
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt", "http", "https"})
_SOCKET_TIMEOUT_SCHEMES = frozenset({"http", "https", "tcp", "rtmp", "rtmps", "srt"})


@dataclass(frozen=True)
class CameraSource:
    """One camera or file as its decoder reads it: the configuration's own frozen sections (the
    camera's entry, ``decode``, ``reconnect``, ``ring``) plus what the supervisor decided (FFmpeg
    threads, the NVDEC GPU). A new camera option is one field of ``CameraConfig``, read here as
    ``source.camera.<option>``; the properties below name what the decoder reads today."""

    camera: CameraConfig
    timeouts: DecodeConfig = field(default_factory=lambda: _config().DecodeConfig())
    reconnect: ReconnectConfig = field(default_factory=lambda: _config().ReconnectConfig())
    ring: RingConfig = field(default_factory=lambda: _config().RingConfig())
    threads: int = 0  # FFmpeg decoding threads for this camera; 0 = FFmpeg's choice
    # CUDA device index for NVDEC, as the decoder process numbers the GPUs (the supervisor chose
    # the GPU of the camera's worker); None: no GPU for this camera (auto then means cpu, and
    # nvdec tries CUDA's default device)
    nvdec_device: str | None = None

    @classmethod
    def of(cls, camera_id: str, url: str, **options: Any) -> CameraSource:
        """A source from keyword options without a configuration file (tests, tools): the camera's
        own keys (``realtime``, ``loop``, ``max_fps``, ``rtsp_transport``, ``decode``, ...), the
        decoder's timeouts (``open_timeout_s``, ``read_timeout_s``, ``stall_timeout_s``), the
        backoff (``backoff_initial_s``, ``backoff_max_s``, ``backoff_jitter``), ``max_width``,
        ``max_height``, ``threads`` and ``nvdec_device``. Unknown options raise TypeError."""
        c = _config()
        sections: dict[str, dict[str, Any]] = {"camera": {}, "timeouts": {}, "reconnect": {}, "ring": {}}
        own: dict[str, Any] = {}
        for key, value in options.items():
            if key in ("threads", "nvdec_device"):
                own[key] = value
            elif key in _TIMEOUT_KEYS:
                sections["timeouts"][key] = value
            elif key in _BACKOFF_KEYS:
                sections["reconnect"][_BACKOFF_KEYS[key]] = value
            elif key in ("max_width", "max_height"):
                sections["ring"][key] = value
            elif key in c.CameraConfig.model_fields:
                sections["camera"][key] = value
            else:
                raise TypeError(f"CameraSource.of() got an unknown option {key!r}")
        return cls(camera=c.CameraConfig.model_construct(id=camera_id, url=url, **sections["camera"]),
                   timeouts=c.DecodeConfig(**sections["timeouts"]),
                   reconnect=c.ReconnectConfig(**sections["reconnect"]), ring=c.RingConfig(**sections["ring"]),
                   **own)

    def with_camera(self, **changes: Any) -> CameraSource:
        """A copy with some of the camera's own keys changed (e.g. ``max_fps=None``)."""
        return dataclasses.replace(self, camera=self.camera.model_copy(update=changes))

    # -- what the decoder reads ------------------------------------------------------------------

    @property
    def camera_id(self) -> str:
        return self.camera.id

    @property
    def url(self) -> str:
        return str(self.camera.url)

    @property
    def rtsp_transport(self) -> str:
        return self.camera.rtsp_transport

    @property
    def realtime(self) -> bool:
        return self.camera.realtime

    @property
    def loop(self) -> bool:
        return self.camera.loop

    @property
    def max_fps(self) -> float | None:
        return self.camera.max_fps

    @property
    def decode(self) -> str:
        """The camera's decode setting: "cpu", "nvdec" or "auto" (nvdec when nvdec_device is set)."""
        return self.camera.decode

    @property
    def open_timeout_s(self) -> float:
        return self.timeouts.open_timeout_s

    @property
    def read_timeout_s(self) -> float:
        return self.timeouts.read_timeout_s

    @property
    def stall_timeout_s(self) -> float:
        return self.timeouts.stall_timeout_s

    @property
    def backoff_initial_s(self) -> float:
        return self.reconnect.initial_s

    @property
    def backoff_max_s(self) -> float:
        return self.reconnect.max_s

    @property
    def backoff_jitter(self) -> float:
        return self.reconnect.jitter

    @property
    def max_width(self) -> int:
        return self.ring.max_width

    @property
    def max_height(self) -> int:
        return self.ring.max_height

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


_TIMEOUT_KEYS = frozenset({"open_timeout_s", "read_timeout_s", "stall_timeout_s"})
_BACKOFF_KEYS = {"backoff_initial_s": "initial_s", "backoff_max_s": "max_s", "backoff_jitter": "jitter"}


def _config() -> Any:
    """streamdet.config.schema, imported when a source is built without its sections (pydantic)."""
    import streamdet.config.schema as schema

    return schema
