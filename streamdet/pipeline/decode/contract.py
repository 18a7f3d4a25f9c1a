"""The decoder process's contract with the supervisor: what it is given, how it exits.

Imported by the supervisor (which never imports PyAV) and by the decoder process
(:mod:`streamdet.pipeline.decode.process`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from streamdet.pipeline.decode.source import CameraSource
from streamdet.pipeline.live import LiveChannel

__all__ = ["EXIT_FINISHED", "DecoderLive", "DecoderSpec", "EventLike"]

EXIT_FINISHED = 79  # every camera of the process finished for good: do not restart it


class EventLike(Protocol):
    """A stop flag or start gate (threading.Event, multiprocessing Event, StopFlag)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True)
class DecoderSpec:
    """What one decoder process reads: its sources, the shm name of each camera's ring, and the
    start gate file cameras wait for (event-like, e.g. a StopFlag the supervisor sets once the
    workers are ready; None = no gate)."""

    sources: list[CameraSource]  # each camera's configuration sections
    ring_names: dict[str, str]
    start_gate: EventLike | None = None
    # the supervisor's live settings for this process (DecoderLive), applied from the next frame;
    # None = each CameraSource's max_fps, fixed
    live: LiveChannel | None = None
    # camera -> shared flag (``.value``) this process sets to 1 once the camera finished for good
    finished: dict[str, Any] | None = None


@dataclass(frozen=True)
class DecoderLive:
    """A decoder process's live settings (sent on its :class:`~streamdet.pipeline.live.LiveChannel`
    by a reload): each camera's ``max_fps`` (0 = no limit)."""

    max_fps: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"max_fps": dict(self.max_fps)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecoderLive:
        return cls({str(cam): float(fps) for cam, fps in dict(data["max_fps"]).items()})
