"""The published message contract, version 1 (docs/wire.md), and the daemon's one detection message.

The contract is defined in the light client, :mod:`streamdet_client.wire`, and re-exported here:
the daemon and every subscriber share this one definition (``pip install ./client`` installs it
alone, with pyzmq only). Validation (:func:`validate`, :func:`decode`) is for messages that come
in from outside.

:class:`DetectionMessage` is how the daemon builds a detection message: once, from the
postprocessor's (n, 6) array, checked once as it is built (finite boxes and scores, counts,
camera id, track ids), and then trusted: :meth:`DetectionMessage.frames` encodes it without
validating it again (the worker's hot path). It reads like the wire dict (a ``Mapping``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamdet_client.wire import (
    CAMERA_ID_PATTERN,
    DETECTIONS,
    DETECTIONS_PREFIX,
    STATS,
    STATS_TOPIC,
    VERSION,
    WireError,
    decode,
    detection_message,
    detection_topic,
    encode,
    is_camera_id,
    stats_message,
    validate,
)

__all__ = ["CAMERA_ID_PATTERN", "DETECTIONS", "DETECTIONS_PREFIX", "STATS", "STATS_TOPIC", "VERSION",
           "DetectionMessage", "decode", "detection_message", "detection_records", "detection_topic", "encode",
           "is_camera_id", "stats_message", "validate"]

_SEPARATORS = (",", ":")


def detection_records(det: np.ndarray, names: Sequence[str] | Mapping[int, str],
                      track_ids: Sequence[int] | np.ndarray | None = None) -> list[dict[str, Any]]:
    """(n, 6) [x1, y1, x2, y2, score, class] -> the wire's detection records, compact floats (boxes
    2 dp, score 4 dp); the label is ``names[class_id]`` or ``str(class_id)`` when out of range;
    ``track_ids`` (one per row) add ``track_id``. Raises WireError for a non-finite value."""
    arr = np.asarray(det, dtype=np.float64).reshape(-1, 6)
    if not np.isfinite(arr).all():
        raise WireError("detections: a box or score is not a finite number")
    ids = None if track_ids is None else [int(t) for t in np.asarray(track_ids).reshape(-1).tolist()]
    if ids is not None and (len(ids) != len(arr) or any(t < 1 for t in ids)):
        raise WireError(f"detections: expected {len(arr)} track ids >= 1, got {ids}")
    records = []
    for i, (x1, y1, x2, y2, score, cls) in enumerate(arr.tolist()):
        class_id = int(cls)
        if class_id < 0:
            raise WireError(f"detections[{i}].class_id: expected an integer >= 0, got {class_id}")
        if isinstance(names, Mapping):
            label = names.get(class_id, str(class_id))
        else:
            label = names[class_id] if class_id < len(names) else str(class_id)
        record: dict[str, Any] = {
            # + 0.0 turns -0.0 into 0.0 so the JSON stays "0.0"
            "box": [round(x1, 2) + 0.0, round(y1, 2) + 0.0, round(x2, 2) + 0.0, round(y2, 2) + 0.0],
            "score": round(score, 4) + 0.0,
            "class_id": class_id,
            "label": str(label),
        }
        if ids is not None:
            record["track_id"] = ids[i]
        records.append(record)
    return records


def _count(name: str, value: int, minimum: int = 0) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise WireError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _finite(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise WireError(f"{name}: expected a finite number, got {value!r}")
    return v


@dataclass(frozen=True)
class DetectionMessage(Mapping[str, Any]):
    """One frame's detection message, built and checked once (:meth:`build`), encoded as it is."""

    camera: str
    seq: int
    frame: int
    pts: float | None
    ts_capture: float
    ts_publish: float
    width: int
    height: int
    dropped: int
    detections: tuple[dict[str, Any], ...]
    inferred: bool | None = None  # with tracking only: whether the detector ran on this frame
    _wire: dict[str, Any] = field(init=False, repr=False, compare=False)

    @classmethod
    def build(cls, *, camera: str, seq: int, frame: int, pts: float | None, ts_capture: float,
              width: int, height: int, dropped: int, det: np.ndarray, names: Sequence[str] | Mapping[int, str],
              track_ids: Sequence[int] | np.ndarray | None = None, inferred: bool | None = None,
              ts_publish: float | None = None) -> DetectionMessage:
        """The message of one frame from the postprocessor's (n, 6) array (see :func:`detection_records`).
        A non-finite ``pts`` becomes None; anything else that breaks the contract raises WireError."""
        detection_topic(camera)  # validates the id
        p = None if pts is None or not math.isfinite(float(pts)) else float(pts)
        return cls(camera=camera, seq=_count("seq", seq), frame=_count("frame", frame), pts=p,
                   ts_capture=_finite("ts_capture", ts_capture),
                   ts_publish=_finite("ts_publish", time.time() if ts_publish is None else ts_publish),
                   width=_count("width", width, 1), height=_count("height", height, 1),
                   dropped=_count("dropped", dropped),
                   detections=tuple(detection_records(det, names, track_ids)),
                   inferred=None if inferred is None else bool(inferred))

    def __post_init__(self) -> None:
        wire: dict[str, Any] = {
            "v": VERSION, "type": DETECTIONS, "camera": self.camera, "seq": self.seq, "frame": self.frame,
            "pts": self.pts, "ts_capture": self.ts_capture, "ts_publish": self.ts_publish, "width": self.width,
            "height": self.height, "dropped": self.dropped, "detections": list(self.detections),
        }
        if self.inferred is not None:
            wire["inferred"] = self.inferred
        object.__setattr__(self, "_wire", wire)

    def as_dict(self) -> dict[str, Any]:
        """The wire form (a new dict; the detection records are shared)."""
        return dict(self._wire)

    def frames(self) -> list[bytes]:
        """``[topic, payload]`` as :func:`encode` makes them, without validating again."""
        payload = json.dumps(self._wire, separators=_SEPARATORS, ensure_ascii=False, allow_nan=False)
        return [DETECTIONS_PREFIX + self.camera.encode("ascii") + b"/", payload.encode("utf-8")]

    def __getitem__(self, key: str) -> Any:
        return self._wire[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._wire)

    def __len__(self) -> int:
        return len(self._wire)
