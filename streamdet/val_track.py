"""``streamdet val --track``: tracking accuracy (MOTA, IDF1, ID switches) of what the daemon publishes.

Each clip needs ground truth with object ids (its ``.jsonl`` lines carry ``ids``, shapes-v1
"Tracking ground truth"). Its frames go through :class:`streamdet.detector.Detector` (the daemon's
preprocessing, model and postprocessing) and then through the worker's own tracking step,
:class:`streamdet.pipeline.worker.tracks.CameraTracks`: ``detect`` decides which frames the
detector's boxes are used for (every ``detect_every``-th), ``step`` updates or predicts the tracker,
exactly as the worker's feeder and publisher do. The boxes and track ids that ``step`` returns are
what the daemon publishes; they are scored against the ground truth with
:mod:`streamdet.mot_metrics` (CLEAR MOT and IDF1 at IoU >= 0.5, as the MOTChallenge defines them).

The detector runs once per frame and clip; each ``detect_every`` value replays the same detections
through a fresh tracker (a frame's detections do not depend on which other frames the detector sees).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from streamdet.config.schema import ModelConfig
from streamdet.config.tracking import TrackingConfig
from streamdet.datasets.groundtruth import DatasetError, GroundTruthFrame, groundtruth_path, read_groundtruth
from streamdet.detect import batched
from streamdet.mot_metrics import MotAccumulator, MotScores
from streamdet.pipeline.settings import InferenceOptions
from streamdet.pipeline.types import Frame
from streamdet.pipeline.worker.tracks import CameraTracks
from streamdet.progress import Progress

__all__ = [
    "MAX_DETECT_EVERY", "TRACK_CONF", "TRACK_IOU", "ClipDetections", "TrackCell", "TrackResult", "detect_clip",
    "find_clips", "format_track_table", "gt_detections", "parse_detect_every", "read_track_truth",
    "run_val_track", "track_clip", "val_track_main",
]

TRACK_CONF = float(ModelConfig.model_fields["conf_thres"].default)  # the daemon's defaults: what it publishes
TRACK_IOU = float(ModelConfig.model_fields["iou_thres"].default)
MAX_DETECT_EVERY = 100  # the configuration's limit for a camera's detect_every
_CAMERA, _RING = "val", "val-ring"  # the one camera CameraTracks serves here, and its ring's name


def parse_detect_every(text: str) -> tuple[int, ...]:
    """``"1,2,3"`` -> ``(1, 2, 3)``: distinct integers in 1..:data:`MAX_DETECT_EVERY`, in the order given."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            n = int(part)
        except ValueError:
            raise ValueError(f"--detect-every: {part!r} is not an integer (give e.g. 1,2,3)") from None
        if not 1 <= n <= MAX_DETECT_EVERY:
            raise ValueError(f"--detect-every: {n} is not in 1..{MAX_DETECT_EVERY}")
        if n not in out:
            out.append(n)
    return tuple(out)


def find_clips(paths: Sequence[str | Path]) -> list[Path]:
    """The clips named, a folder standing for its video files (sorted by name)."""
    from streamdet.val_core import VIDEO_SUFFIXES

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise DatasetError(f"no video clips in folder {p}")
            out.extend(found)
        elif not p.exists():
            raise DatasetError(f"clip not found: {p}")
        else:
            out.append(p)
    if not out:
        raise DatasetError("no clips given")
    return out


def read_track_truth(clip: Path) -> list[GroundTruthFrame]:
    """The clip's ground truth; every line must carry object ids, else :class:`DatasetError` naming the file."""
    path = groundtruth_path(clip)
    truth = read_groundtruth(path)
    for gt in truth:
        if gt.ids is None:
            raise DatasetError(f"{clip}: no tracking ground truth: line {gt.frame + 1} of {path} has no 'ids' "
                               "(clips from streamdet.datasets.shapes.write_clip / tools/make_shapes.py have them)")
    return truth


def gt_detections(truth: Sequence[GroundTruthFrame]) -> list[np.ndarray]:
    """The ground-truth boxes as perfect detections (n, 6) ``[x1, y1, x2, y2, 1.0, cls]``: the tracker's ceiling."""
    out = []
    for gt in truth:
        det = np.ones((len(gt.boxes), 6), np.float32)
        det[:, :4] = gt.boxes[:, :4]
        det[:, 5] = gt.boxes[:, 4]
        out.append(det)
    return out


@dataclass(frozen=True)
class ClipDetections:
    """One clip's detector output, one (n, 6) float32 array per frame, with its ground truth."""

    clip: Path
    width: int
    height: int
    dets: list[np.ndarray]
    truth: list[GroundTruthFrame]


def detect_clip(detector: Any, clip: Path, batch_size: int = 8, progress: bool = False) -> ClipDetections:
    """Run ``detector`` (a :class:`~streamdet.detector.Detector`) on every frame of ``clip``.

    Frames are decoded as :func:`streamdet.val.iter_clip` decodes them (the daemon's YUV planes,
    each frame's time checked against the ground truth's ``pts``)."""
    from streamdet.val_core import iter_clip

    truth = read_track_truth(clip)
    total, items = iter_clip(clip)
    dets: list[np.ndarray] = []
    width = height = 0
    bar = Progress(total, clip.name) if progress else None
    try:
        for batch in batched(items, batch_size):
            frames = [f for f, _ in batch]
            width, height = frames[0].width, frames[0].height
            out = detector(frames)
            if len(out) != len(frames):
                raise RuntimeError(f"detector returned {len(out)} results for {len(frames)} frames")
            dets.extend(np.asarray(o, np.float32).reshape(-1, 6) for o in out)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return ClipDetections(clip, width, height, dets, truth)


def track_clip(
    dets: Sequence[np.ndarray],
    truth: Sequence[GroundTruthFrame],
    detect_every: int,
    settings: dict[str, Any],
    size: tuple[int, int],
) -> MotScores:
    """Replay one clip's detections through the worker's tracking step and score what it publishes.

    ``settings``: :class:`~streamdet.pipeline.tracking.bytetrack.TrackerSettings` keyword arguments
    (:meth:`TrackingConfig.tracker_settings`); ``size``: the frames' (width, height)."""
    if len(dets) != len(truth):
        raise ValueError(f"{len(dets)} frames of detections for {len(truth)} frames of ground truth")
    tracks = CameraTracks()
    tracks.configure({"settings": dict(settings), "cameras": {_CAMERA: detect_every}})
    acc = MotAccumulator()
    width, height = size
    empty = np.zeros(0, np.uint8)
    for i, (det, gt) in enumerate(zip(dets, truth, strict=True)):
        run = tracks.detect(_CAMERA)  # as the feeder asks, once per frame taken
        frame = Frame(_CAMERA, i + 1, i, gt.pts, 0.0, width, height, width, height, "yuv420p", empty, 0)
        out = tracks.step(frame, _RING, det if run else None)
        if out is None:
            raise RuntimeError("CameraTracks did not track the camera it was configured for")
        assert gt.ids is not None  # read_track_truth checked
        acc.update(gt.boxes[:, :4], gt.ids, out.det[:, :4], out.track_ids)
    return acc.scores()


@dataclass(frozen=True)
class TrackCell:
    """The scores of one clip at one ``detect_every``."""

    clip: str
    width: int
    height: int
    detect_every: int
    scores: MotScores

    def to_dict(self) -> dict[str, Any]:
        s = self.scores

        def num(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        return {
            "clip": self.clip, "width": self.width, "height": self.height, "detect_every": self.detect_every,
            "frames": s.frames, "num_gt": s.num_gt, "num_pred": s.num_pred, "mota": num(s.mota), "idf1": num(s.idf1),
            "id_switches": s.id_switches, "id_switches_per_100_gt": num(s.id_switches_per_100_gt),
            "fp": s.fp, "fn": s.fn, "idtp": s.idtp,
        }


@dataclass(frozen=True)
class TrackResult:
    """Every (clip, detect_every) cell, and what produced them."""

    cells: list[TrackCell]
    tracker: dict[str, Any]
    img_size: int
    conf_thres: float
    iou_thres: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form: ``{"cells": [...], "tracker": {...}, "img_size", "conf_thres", "iou_thres",
        "seconds"}`` (NaN becomes null)."""
        return {
            "cells": [c.to_dict() for c in self.cells], "tracker": dict(self.tracker), "img_size": self.img_size,
            "conf_thres": self.conf_thres, "iou_thres": self.iou_thres, "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def format_track_table(result: TrackResult) -> str:
    """A text table, one row per clip and ``detect_every``, then what produced it."""
    head = f"{'clip':<28} {'size':>9} {'every':>5} {'frames':>6} {'gt':>6} {'MOTA':>7} {'IDF1':>7} " \
           f"{'IDsw':>5} {'/100gt':>6} {'FP':>5} {'FN':>5}"
    lines = [head]
    for c in result.cells:
        s = c.scores
        lines.append(f"{c.clip[-28:]:<28} {f'{c.width}x{c.height}':>9} {c.detect_every:>5} {s.frames:>6} "
                     f"{s.num_gt:>6} {s.mota:>7.4f} {s.idf1:>7.4f} {s.id_switches:>5} "
                     f"{s.id_switches_per_100_gt:>6.2f} {s.fp:>5} {s.fn:>5}")
    tracker = ", ".join(f"{k} {v}" for k, v in result.tracker.items())
    lines.append(f"img_size {result.img_size}, conf {result.conf_thres}, NMS IoU {result.iou_thres}; tracker: "
                 f"{tracker}; {result.seconds:.1f} s")
    return "\n".join(lines)


def run_val_track(
    options: InferenceOptions,
    clips: Sequence[str | Path],
    *,
    detect_every: Sequence[int] = (1,),
    batch_size: int = 8,
    tracking: TrackingConfig | None = None,
    progress: bool = True,
) -> TrackResult:
    """Detect with the model ``options`` and track every clip (folders stand for their clips) at
    each ``detect_every``, and score them. The daemon's NMS settings are ``InferenceOptions``'
    defaults (:data:`TRACK_CONF`, :data:`TRACK_IOU`)."""
    from streamdet.detector import Detector

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not detect_every or any(not 1 <= n <= MAX_DETECT_EVERY for n in detect_every):
        raise ValueError(f"detect_every must be values in 1..{MAX_DETECT_EVERY}, got {list(detect_every)}")
    paths = find_clips(clips)
    for p in paths:
        read_track_truth(p)  # a clip without ids fails before the model loads
    settings = (tracking if tracking is not None else TrackingConfig()).tracker_settings()
    start = time.perf_counter()
    detector = Detector.from_options(options)
    cells: list[TrackCell] = []
    try:
        for p in paths:
            found = detect_clip(detector, p, batch_size, progress)
            for n in detect_every:
                scores = track_clip(found.dets, found.truth, n, settings, (found.width, found.height))
                cells.append(TrackCell(str(p), found.width, found.height, n, scores))
    finally:
        detector.close()
    nms = options.nms
    return TrackResult(cells, settings, options.img_size, nms.conf_thres, nms.iou_thres, time.perf_counter() - start)


def val_track_main(
    options: InferenceOptions,
    clips: Sequence[str | Path],
    *,
    as_json: bool = False,
    out: TextIO | None = None,
    **kwargs: Any,
) -> int:
    """``streamdet val --track``: :func:`run_val_track` (``kwargs`` are its keywords), print the table or
    one JSON line; returns 0. Errors propagate (``DatasetError`` names the clip)."""
    result = run_val_track(options, clips, **kwargs)
    stream = out if out is not None else sys.stdout
    stream.write((result.to_json() if as_json else format_track_table(result)) + "\n")
    stream.flush()
    return 0
