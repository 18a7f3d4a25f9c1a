"""A clip's ground truth as JSON Lines (shapes-v1 format), read with validation and written.

One line per frame, in order: ``{"frame": 0, "pts": 0.0, "boxes": [[x1, y1, x2, y2, class_id], ...]}``;
``frame`` is the 0-based frame index, ``pts`` the presentation time in seconds as a PyAV decoder
reports it, boxes in pixels of the original frame with x2/y2 one past the last covered pixel.
The file lies beside the clip: same stem, suffix ``.jsonl``. A line may also carry ``"ids"``, as
many as boxes: ``ids[i]`` is box i's object, the same for that object in every frame of the clip
(tracking ground truth, shapes-v1 "Tracking ground truth"); files without it read as ``ids=None``.

Reading checks every line (a JSON object with ``frame`` equal to its position, finite increasing
``pts``, boxes of five finite numbers with ``x2 > x1``, ``y2 > y1`` and a non-negative integer class)
and raises :class:`DatasetError` naming the file and line; ``ids``, where present, must be distinct
non-negative integers, one per box. Other keys are ignored, so later versions may add fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamdet.errors import StreamdetError

__all__ = [
    "DatasetError",
    "GroundTruthFrame",
    "format_groundtruth_line",
    "groundtruth_path",
    "read_groundtruth",
    "write_groundtruth",
]


class DatasetError(StreamdetError, ValueError):
    """A data set or ground-truth file is missing or malformed; the message names file and line."""


@dataclass(frozen=True)
class GroundTruthFrame:
    """The ground truth of one frame: index, presentation time (s), boxes (m, 5) [x1, y1, x2, y2, cls].

    ``ids`` (m,) int64: each box's object id (tracking ground truth), or None where the file has none.
    """

    frame: int
    pts: float
    boxes: np.ndarray
    ids: np.ndarray | None = None


def groundtruth_path(clip: str | Path) -> Path:
    """The ground-truth file that belongs to ``clip``: same folder and stem, suffix ``.jsonl``."""
    return Path(clip).with_suffix(".jsonl")


def _number_text(value: float) -> int | float:
    """Integral values as JSON integers (the generator's boxes are whole pixels), others as floats."""
    value = float(value)
    return int(value) if value.is_integer() else value


def format_groundtruth_line(
    frame: int,
    pts: float,
    boxes: np.ndarray | Sequence[Sequence[float]],
    ids: np.ndarray | Sequence[int] | None = None,
) -> str:
    """One JSON Lines record (without the newline); ``ids`` (one per box) written when given."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    rows = [[_number_text(v) for v in row[:4]] + [int(row[4])] for row in arr]
    record: dict[str, object] = {"frame": int(frame), "pts": float(pts), "boxes": rows}
    if ids is not None:
        id_list = [int(i) for i in np.asarray(ids).reshape(-1)]
        if len(id_list) != len(rows):
            raise ValueError(f"frame {frame}: {len(id_list)} ids for {len(rows)} boxes")
        record["ids"] = id_list
    return json.dumps(record, separators=(", ", ": "))


def write_groundtruth(path: str | Path, frames: Iterable[GroundTruthFrame]) -> Path:
    """Write ``frames`` (in order) as JSON Lines to ``path``; returns the path."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for gt in frames:
            fh.write(format_groundtruth_line(gt.frame, gt.pts, gt.boxes, gt.ids) + "\n")
    return path


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_line(text: str, expected_frame: int, last_pts: float | None, where: str) -> GroundTruthFrame:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("frame", "pts", "boxes"):
        if key not in record:
            raise DatasetError(f"{where}: missing key {key!r}")
    frame, pts, boxes = record["frame"], record["pts"], record["boxes"]
    if not isinstance(frame, int) or isinstance(frame, bool):
        raise DatasetError(f"{where}: 'frame' must be an integer, got {frame!r}")
    if frame != expected_frame:
        raise DatasetError(f"{where}: 'frame' is {frame}, expected {expected_frame} (one line per frame, in order)")
    if not _is_number(pts) or pts < 0:
        raise DatasetError(f"{where}: 'pts' must be a finite number >= 0, got {pts!r}")
    if last_pts is not None and pts <= last_pts:
        raise DatasetError(f"{where}: 'pts' {pts} is not after the previous frame's {last_pts}")
    if not isinstance(boxes, list):
        raise DatasetError(f"{where}: 'boxes' must be a list, got {type(boxes).__name__}")
    arr = np.zeros((len(boxes), 5), dtype=np.float64)
    for j, box in enumerate(boxes):
        if not isinstance(box, list) or len(box) != 5 or not all(_is_number(v) for v in box):
            raise DatasetError(f"{where}: box {j} must be [x1, y1, x2, y2, class_id] of finite numbers, got {box!r}")
        x1, y1, x2, y2, cls = box
        if not (x2 > x1 and y2 > y1):
            raise DatasetError(f"{where}: box {j} {box!r} is empty (needs x2 > x1 and y2 > y1)")
        if cls < 0 or float(cls) != int(cls):
            raise DatasetError(f"{where}: box {j} class id {cls!r} is not a non-negative integer")
        arr[j] = box
    ids = _parse_ids(record["ids"], len(boxes), where) if "ids" in record else None
    return GroundTruthFrame(frame=frame, pts=float(pts), boxes=arr, ids=ids)


def _parse_ids(ids: object, n_boxes: int, where: str) -> np.ndarray:
    if not isinstance(ids, list):
        raise DatasetError(f"{where}: 'ids' must be a list, got {type(ids).__name__}")
    if len(ids) != n_boxes:
        raise DatasetError(f"{where}: 'ids' has {len(ids)} entries for {n_boxes} boxes")
    for j, value in enumerate(ids):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise DatasetError(f"{where}: id {j} must be a non-negative integer, got {value!r}")
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{where}: 'ids' must be distinct within a frame, got {ids!r}")
    return np.array(ids, dtype=np.int64)


def read_groundtruth(path: str | Path) -> list[GroundTruthFrame]:
    """Read and validate a JSON Lines ground-truth file; blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetError(f"ground truth file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    out: list[GroundTruthFrame] = []
    last_pts: float | None = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        gt = _parse_line(line, len(out), last_pts, f"{path}:{lineno}")
        out.append(gt)
        last_pts = gt.pts
    return out
