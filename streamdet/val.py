"""``streamdet val``: the daemon's accuracy (COCO-style mAP) on a YOLO-layout data set or a clip.

Frames go through :class:`streamdet.detector.Detector`, the daemon's own preprocessing, model and
postprocessing, so the number measured here is the daemon's accuracy. ``data`` is a YOLO-layout
folder (see :mod:`streamdet.datasets.yolo`) or an ``.mp4`` clip with its ground truth
``<stem>.jsonl`` beside it (frames decoded with PyAV, matched to ground truth by index, their
presentation times checked against the ground truth's ``pts``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from streamdet.datasets.groundtruth import DatasetError, groundtruth_path, read_groundtruth
from streamdet.detect import batched
from streamdet.evaluation import ClassAP, EvalResult, evaluate, format_table
from streamdet.pipeline.image import Image
from streamdet.progress import Progress

__all__ = ["PTS_TOLERANCE", "ValResult", "format_result", "iter_clip", "iter_yolo", "run_val", "val_main"]

PTS_TOLERANCE = 1e-3  # seconds between a decoded frame's time and its ground-truth pts
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".ts", ".webm"})


@dataclass(frozen=True)
class ValResult:
    """mAP@0.5, mAP@0.5:0.95, per-class APs keyed by class name (classes with ground truth, in
    class order), number of images/frames, wall time in seconds, the class names used, and the
    full :class:`~streamdet.evaluation.EvalResult` (not part of the JSON form)."""

    map50: float
    map50_95: float
    per_class: dict[str, ClassAP]
    images: int
    seconds: float
    names: list[str]
    detail: EvalResult

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form: ``{"map50", "map50_95", "images", "seconds", "per_class": {name:
        {"ap50", "ap50_95", "n_gt"}}}`` (NaN becomes null)."""

        def num(x: float) -> float | None:
            return None if x != x else round(float(x), 6)

        return {
            "map50": num(self.map50),
            "map50_95": num(self.map50_95),
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "per_class": {
                name: {"ap50": num(r.ap50), "ap50_95": num(r.ap50_95), "n_gt": r.n_gt}
                for name, r in self.per_class.items()
            },
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict())


def iter_yolo(data: Path) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(count, iterator of (BGR image, ground truth (m, 5))) over a YOLO-layout data set."""
    import cv2

    from streamdet.datasets.yolo import read_yolo_dir

    samples = read_yolo_dir(data)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for s in samples:
            img = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(f"cannot decode image {s.image}")
            if img.shape[:2] != (s.height, s.width):
                raise DatasetError(
                    f"{s.image}: decoded size {img.shape[1]}x{img.shape[0]} differs from {s.width}x{s.height}"
                )
            yield img, s.ground_truth()

    return len(samples), gen()


def iter_clip(clip: Path) -> tuple[int, Iterator[tuple[Image, np.ndarray]]]:
    """(count, iterator of (frame, ground truth (m, 5))) over a clip and its ``.jsonl``.

    Frames are the daemon's: the decoded YUV planes exactly as a decoder writes them into the ring
    (:func:`streamdet.pipeline.frames.frame_to_image`), so the worker and val see the same bytes.
    Frames are matched to ground-truth lines by index; each decoded frame's time must equal the
    line's ``pts`` within :data:`PTS_TOLERANCE`, and the counts must agree.
    """
    import av

    from streamdet.pipeline.frames import frame_to_image

    gt_path = groundtruth_path(clip)
    truth = read_groundtruth(gt_path)
    if not clip.is_file():
        raise DatasetError(f"clip not found: {clip}")

    def gen() -> Iterator[tuple[Image, np.ndarray]]:
        n = 0
        try:
            container = av.open(str(clip))
        except av.FFmpegError as exc:
            raise DatasetError(f"cannot open clip {clip}: {exc}") from None
        with container:
            for frame in container.decode(video=0):
                if n >= len(truth):
                    raise DatasetError(f"{clip}: more frames than the {len(truth)} lines of {gt_path}")
                gt = truth[n]
                t = frame.time
                if t is None or abs(t - gt.pts) > PTS_TOLERANCE:
                    raise DatasetError(f"{clip}: frame {n} is at {t} s but {gt_path} line {n + 1} has pts {gt.pts}")
                yield frame_to_image(frame)[0], gt.boxes
                n += 1
        if n != len(truth):
            raise DatasetError(f"{clip}: {n} frames decoded but {gt_path} has {len(truth)}")

    return len(truth), gen()


def _open_data(data: Path) -> tuple[int, Iterator[tuple[np.ndarray | Image, np.ndarray]]]:
    """(count, iterator of (image or frame, ground truth)) over a YOLO-layout folder or a clip."""
    if data.is_dir():
        return iter_yolo(data)
    if data.suffix.lower() in VIDEO_SUFFIXES:
        return iter_clip(data)
    if not data.exists():
        raise DatasetError(f"data not found: {data}")
    raise DatasetError(f"data must be a YOLO-layout folder or a video clip with a .jsonl beside it: {data}")


def run_val(
    weights: str | Path,
    data: str | Path,
    *,
    device: str = "cpu",
    half: bool = False,
    img_size: int = 640,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    batch_size: int = 8,
    progress: bool = True,
    backend: str = "auto",
) -> ValResult:
    """Run the detector over ``data`` and score it (see the module doc)."""
    from streamdet.detector import Detector

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data = Path(data)
    start = time.perf_counter()
    total, items = _open_data(data)
    det = Detector(
        weights,
        device=device,
        img_size=img_size,
        half=half,
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        max_det=max_det,
        backend=backend,
    )
    names = [str(n) for n in det.names]
    bar = Progress(total, "val") if progress else None
    predictions: list[np.ndarray] = []
    truths: list[np.ndarray] = []
    try:
        for batch in batched(items, batch_size):
            frames = [f for f, _ in batch]
            out = det(frames)
            if len(out) != len(frames):
                raise RuntimeError(f"detector returned {len(out)} results for {len(frames)} frames")
            predictions.extend(np.asarray(o, np.float64).reshape(-1, 6) for o in out)
            truths.extend(g for _, g in batch)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    top = max([len(names) - 1] + [int(g[:, 4].max()) for g in truths if len(g)])
    top = max([top] + [int(p[:, 5].max()) for p in predictions if len(p)])
    nc = top + 1
    names = names + [str(c) for c in range(len(names), nc)]
    result = evaluate(predictions, truths, nc)
    return ValResult(
        map50=result.map50,
        map50_95=result.map50_95,
        per_class={names[c]: r for c, r in sorted(result.per_class.items())},
        images=result.n_images,
        seconds=time.perf_counter() - start,
        names=names,
        detail=result,
    )


def format_result(result: ValResult) -> str:
    """The human-readable table of a :class:`ValResult`, with the wall time."""
    return f"{format_table(result.detail, result.names)}\n{result.images} images in {result.seconds:.1f} s"


def val_main(
    weights: str | Path,
    data: str | Path,
    *,
    device: str = "cpu",
    half: bool = False,
    img_size: int = 640,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    batch_size: int = 8,
    as_json: bool = False,
    progress: bool = True,
    out: TextIO | None = None,
    backend: str = "auto",
) -> int:
    """``streamdet val``: run :func:`run_val` and print the table (or one JSON line); returns 0.

    Errors propagate as exceptions (``DatasetError`` and other ``StreamdetError`` kinds) for the
    CLI to map to exit codes.
    """
    result = run_val(
        weights,
        data,
        device=device,
        half=half,
        img_size=img_size,
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        max_det=max_det,
        batch_size=batch_size,
        progress=progress,
        backend=backend,
    )
    stream = out if out is not None else sys.stdout
    stream.write((result.to_json() if as_json else format_result(result)) + "\n")
    stream.flush()
    return 0
