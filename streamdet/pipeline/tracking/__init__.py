"""Per-camera multi-object tracking (numpy and scipy only, no torch).

kalman.py     constant-velocity Kalman filter over boxes, batched over all tracks
bytetrack.py  ByteTrack-style tracker: ``Tracker.update`` with a frame's detections,
              ``Tracker.predict`` for frames the detector skips; ``TrackerSettings``
"""

from __future__ import annotations

from streamdet.pipeline.tracking.bytetrack import MAX_EXACT_ID, Tracker, TrackerSettings
from streamdet.pipeline.tracking.kalman import KalmanBoxFilter

__all__ = ["MAX_EXACT_ID", "KalmanBoxFilter", "Tracker", "TrackerSettings"]
