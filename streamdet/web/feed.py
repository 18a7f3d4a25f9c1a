"""One camera's pictures for the live view: frames copied from its ring, matched to detections.

Consumes frames the sampler copied out of the ring (each one the worker took for inference, at
most ``web.max_fps`` per second) and the camera's detection messages (from the publish proxy).
A detection message names its frame by ``frame`` (the decoder's frame index) and ``ts_capture``;
the frame with the same pair gets the boxes. Produces :class:`Picture` objects and their JPEG
bytes, encoded once per picture and size however many viewers ask (``encodes`` counts them).

Thread-safe: the sampler, the detection thread and any number of HTTP threads share one feed;
every method takes the feed's condition lock, and viewers wait on it for the next picture.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streamdet.pipeline.types import Frame
from streamdet.web.draw import render_jpeg, scaled_size

__all__ = ["FRESH_S", "CameraFeed", "Picture", "Rendered", "frame_key"]

FRESH_S = 2.0  # a picture with boxes older than this gives way to the newest frame without boxes
_PENDING = 8  # copied frames waiting for their detections
_EARLY = 32  # detections that arrived before their frame was copied
_JPEGS = 8  # encoded variants (boxes, width) kept per picture


def frame_key(frame_index: int, ts_capture: float) -> tuple[int, float]:
    """What identifies a frame on both paths (ring frame and wire message)."""
    return int(frame_index), float(ts_capture)


@dataclass(frozen=True)
class Picture:
    """A frame to show: ``detections`` None means shown without boxes (none known for it)."""

    token: int  # unique per picture, increasing
    frame: Frame
    detections: tuple[Mapping[str, Any], ...] | None
    at: float  # monotonic time it became available


@dataclass(frozen=True)
class Rendered:
    """A picture as JPEG: ``boxes`` is how many detections are drawn (None: none known for it)."""

    token: int
    data: bytes
    size: tuple[int, int]
    frame_index: int
    ts_capture: float
    boxes: int | None


class CameraFeed:
    """Pictures of one camera (see the module docstring)."""

    def __init__(self, camera: str, quality: int = 80) -> None:
        self.camera = camera
        self.quality = quality
        self.cond = threading.Condition()
        self.encodes = 0  # JPEG encodings done (for the cost measurement and tests)
        self.streams = 0  # MJPEG streams open on this camera
        self.last_watched = float("-inf")  # monotonic time a viewer last asked for a picture
        self.last_copy = float("-inf")  # monotonic time the sampler last copied a frame
        self.next_copy = float("-inf")  # monotonic time from which the sampler may copy the next one
        self.last_consumed = 0  # the worker's consumed_seq the sampler saw last
        self.closed = False
        self._pending: OrderedDict[tuple[int, float], Frame] = OrderedDict()
        self._early: OrderedDict[tuple[int, float], tuple[Mapping[str, Any], ...]] = OrderedDict()
        self._raw: Picture | None = None
        self._matched: Picture | None = None
        self._tokens = itertools.count(1)
        self._jpegs: dict[tuple[int, int | None], bytes] = {}

    # -- producers ----------------------------------------------------------------------------

    def add_frame(self, frame: Frame, now: float) -> None:
        """A frame copied from the ring: the newest picture without boxes, and waiting for its boxes."""
        key = frame_key(frame.frame_index, frame.ts_capture)
        with self.cond:
            self._raw = Picture(next(self._tokens), frame, None, now)
            dets = self._early.pop(key, None)
            if dets is not None:
                self._matched = Picture(next(self._tokens), frame, dets, now)
            else:
                self._pending[key] = frame
                while len(self._pending) > _PENDING:
                    self._pending.popitem(last=False)
            self._trim_jpegs()
            self.cond.notify_all()

    def add_detections(self, msg: Mapping[str, Any], now: float) -> bool:
        """A detections message of this camera; True if its frame was waiting (a new picture)."""
        try:
            key = frame_key(msg["frame"], msg["ts_capture"])
            dets = tuple(msg["detections"])
        except (KeyError, TypeError, ValueError):
            return False
        with self.cond:
            frame = self._pending.get(key)
            if frame is None:
                self._early[key] = dets
                while len(self._early) > _EARLY:
                    self._early.popitem(last=False)
                return False
            while self._pending:  # older frames than this one will not be shown any more
                k, _ = self._pending.popitem(last=False)
                if k == key:
                    break
            self._matched = Picture(next(self._tokens), frame, dets, now)
            self._trim_jpegs()
            self.cond.notify_all()
            return True

    def forget(self) -> None:
        """Drop every frame and JPEG held (nobody watches any more: give the memory back)."""
        with self.cond:
            self._pending.clear()
            self._early.clear()
            self._jpegs.clear()
            self._raw = self._matched = None

    def close(self) -> None:
        """The camera is gone: wake every viewer so that its stream ends."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # -- consumers ----------------------------------------------------------------------------

    def picture(self, boxes: bool, now: float) -> Picture | None:
        """The picture to show now: with ``boxes``, the newest frame whose detections are known
        while it is fresh, else the newest frame copied (without boxes)."""
        with self.cond:
            return self._picture(boxes, now)

    def _picture(self, boxes: bool, now: float) -> Picture | None:
        matched = self._matched
        if boxes and matched is not None and now - matched.at <= FRESH_S:
            return matched
        return self._raw

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the camera's newest frame copied (its source size), or None."""
        raw = self._raw
        if raw is None:
            return None
        return raw.frame.src_width or raw.frame.width, raw.frame.src_height or raw.frame.height

    def jpeg(self, boxes: bool, width: int | None, now: float, after: int = 0,
             timeout: float = 0.0, clock: Any = None) -> Rendered | None:
        """The picture to show as JPEG (:class:`Rendered`), waiting up to ``timeout``
        seconds for one whose token differs from ``after``; None if there is none (yet). Each
        picture is encoded once per size, then served from the cache to every viewer."""
        with self.cond:
            def ready() -> bool:
                p = self._picture(boxes, clock() if clock is not None else now)
                return self.closed or (p is not None and p.token != after)

            if timeout > 0:
                self.cond.wait_for(ready, timeout)
            pic = self._picture(boxes, clock() if clock is not None else now)
            if self.closed or pic is None or pic.token == after:
                return None
            size = scaled_size(pic.frame.width, pic.frame.height, width)
            key = (pic.token, None if size[0] == pic.frame.width else size[0])
            data = self._jpegs.get(key)
            if data is None:
                data = render_jpeg(pic.frame, pic.detections if boxes else None, width=key[1], quality=self.quality)
                self.encodes += 1
                if len(self._jpegs) >= _JPEGS:
                    self._jpegs.pop(next(iter(self._jpegs)))
                self._jpegs[key] = data
            drawn = len(pic.detections) if boxes and pic.detections is not None else None
            return Rendered(pic.token, data, size, pic.frame.frame_index, pic.frame.ts_capture, drawn)

    def _trim_jpegs(self) -> None:
        keep = {p.token for p in (self._raw, self._matched) if p is not None}
        for key in [k for k in self._jpegs if k[0] not in keep]:
            del self._jpegs[key]

    def pending_keys(self) -> Sequence[tuple[int, float]]:
        """Frames waiting for detections (oldest first), for tests."""
        with self.cond:
            return list(self._pending)
