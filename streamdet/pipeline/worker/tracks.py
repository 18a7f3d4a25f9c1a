"""The worker's per-camera tracking step: which frames the detector sees, and the tracks of each camera.

Two halves, in two threads, both in each camera's frame order:

* the feeder (gathering) asks :meth:`CameraTracks.will_detect` whether the detector runs on the
  next frame of a camera, before it takes it (a skipped frame's pixels stay in the ring), and
  :meth:`CameraTracks.detect` once it took it: every ``detect_every``-th frame a tracked camera's
  worker takes does (and the first one); the others skip preprocessing and inference and ride
  along in the batch. Cameras with the same ``detect_every`` N are spread over the N phases (the
  k-th such camera detects on the frames ``i`` with ``(i + k) % N == 0``), so that each batch
  carries about 1/N of them to the detector: cameras that started together would otherwise all be
  detected in the same batch and none in the next N - 1, and that batch's inference would set
  every camera's latency;
* the publisher (after postprocessing) calls :meth:`CameraTracks.step` for every frame it
  publishes: detector frames update the camera's tracker (``Tracker.update``), the others get its
  predicted boxes (``Tracker.predict``).

A camera's tracker lives as long as the worker serves the camera with tracking on; a reload that
does not touch the camera keeps it (new tracker thresholds apply to the same tracks). It is reset,
with one log line, when the camera's stream restarts (its ring was replaced, its frame numbers
went back) or its resolution changes; ids are never reused either way.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamdet.pipeline.tracking.bytetrack import Tracker, TrackerSettings
from streamdet.pipeline.types import Frame, clip_boxes

__all__ = ["CameraTracks", "TrackedFrame"]

log = logging.getLogger("streamdet.worker")


@dataclass(frozen=True)
class TrackedFrame:
    """One frame's detections after tracking: (n, 6) boxes in source pixels and their track ids."""

    det: np.ndarray
    track_ids: np.ndarray  # int64, one per row of ``det``
    inferred: bool


@dataclass
class _Camera:
    tracker: Tracker
    ring: str
    size: tuple[int, int] = (0, 0)
    frame_index: int = -1


class CameraTracks:
    """Tracking state of one worker's cameras (see the module docstring); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: TrackerSettings | None = None
        self._every: dict[str, int] = {}  # tracked camera -> detect_every
        self._taken: dict[str, int] = {}  # camera -> frames taken (mod its detect_every)
        self._phase: dict[str, tuple[int, int]] = {}  # camera -> (detect_every, its phase offset)
        self._cameras: dict[str, _Camera] = {}

    def configure(self, live: dict[str, Any] | None) -> None:
        """Apply the live settings' ``tracking`` entry: ``{"settings": {...} | None, "cameras": {camera:
        detect_every}}`` (a camera that is not listed is not tracked); None turns tracking off."""
        live = live or {}
        raw = live.get("settings")
        settings = TrackerSettings(**raw) if raw else None
        every = {str(cam): max(1, int(n)) for cam, n in (live.get("cameras") or {}).items()} if settings else {}
        with self._lock:
            self._settings = settings
            self._every = every
            for cam in [c for c in self._cameras if c not in every]:
                del self._cameras[cam]  # tracking turned off for it: its tracks end
            for cam in [c for c in self._taken if c not in every]:
                del self._taken[cam]
            self._spread_phases(every)
            if settings is not None:
                for state in self._cameras.values():
                    state.tracker.settings = settings

    def tracked(self, camera: str) -> bool:
        with self._lock:
            return camera in self._every

    def _spread_phases(self, every: dict[str, int]) -> None:
        """Give each camera new to its ``detect_every`` N the next of the N phase offsets, in the
        configuration's order; cameras that keep their N keep their offset (lock held)."""
        for cam in [c for c, (n, _) in self._phase.items() if every.get(c) != n]:
            del self._phase[cam]
        for cam, n in every.items():
            if cam not in self._phase:
                peers = sum(1 for m, _ in self._phase.values() if m == n)
                self._phase[cam] = (n, peers % n)

    def detect(self, camera: str) -> bool:
        """Feeder thread, once per frame taken: whether the detector runs on it."""
        return self.will_detect(camera, advance=True)

    def will_detect(self, camera: str, advance: bool = False) -> bool:
        """Whether the detector runs on the next frame taken from ``camera``; ``advance``: that frame
        was taken (:meth:`detect`). Asked before the take, the feed can leave a skipped frame's pixels
        in the ring."""
        if camera not in self._every:  # untracked: always (``_every`` is replaced whole, never edited)
            return True
        with self._lock:
            every = self._every.get(camera, 1)
            offset = self._phase.get(camera, (every, 0))[1]
            taken = self._taken.get(camera)
            if advance:
                self._taken[camera] = ((taken or 0) + 1) % every
            return taken is None or (taken + offset) % every == 0

    def step(self, frame: Frame, ring: str, det: np.ndarray | None) -> TrackedFrame | None:
        """Publisher thread, once per published frame of a tracked camera (None for an untracked one):
        ``det`` is the detector's (n, 6) output, or None for a frame the detector skipped."""
        if frame.camera not in self._every:  # untracked: no lock on the per-frame path
            return None
        with self._lock:
            settings = self._settings
            if settings is None or frame.camera not in self._every:
                return None
            state = self._cameras.get(frame.camera)
            size = (frame.src_width, frame.src_height)
            if state is None:
                state = self._cameras[frame.camera] = _Camera(Tracker(settings), ring, size, frame.frame_index)
            else:
                why = self._restart_reason(state, ring, size, frame.frame_index)
                if why:
                    log.info("%s: tracks reset (%s)", frame.camera, why)
                    state.tracker.reset()
                state.ring, state.size, state.frame_index = ring, size, frame.frame_index
            tracker = state.tracker
        out = tracker.update(det) if det is not None else tracker.predict()
        boxes, ids = out[:, :6].astype(np.float32), out[:, 6].astype(np.int64)
        if det is None:  # predicted boxes: clipped to the frame as the detector's are (the wire contract),
            clip_boxes(boxes, (frame.src_height, frame.src_width))  # and none for a track predicted
            inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # wholly outside it
            boxes, ids = boxes[inside], ids[inside]
        return TrackedFrame(boxes, ids, det is not None)

    @staticmethod
    def _restart_reason(state: _Camera, ring: str, size: tuple[int, int], frame_index: int) -> str | None:
        if ring != state.ring:
            return "the camera was restarted"
        if size != state.size:
            return f"resolution changed from {state.size[0]}x{state.size[1]} to {size[0]}x{size[1]}"
        if frame_index < state.frame_index:
            return "the stream started again"
        return None
