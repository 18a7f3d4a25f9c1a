"""One device's share of ``streamdet val`` and the scoring of all shares (no process group here).

:func:`predict_shard` runs the daemon's own stages (:class:`streamdet.detector.Detector`) over the
images of one rank; :func:`score` puts every rank's per-image predictions back in image order and
scores them once, so any number of devices gives one device's result. Used by
:mod:`streamdet.val` (one device) and :mod:`streamdet.val_distributed` (several).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.datasets.groundtruth import DatasetError, groundtruth_path, read_groundtruth
from streamdet.detect import batched
from streamdet.evaluation import ClassAP, EvalResult, evaluate
from streamdet.pipeline.settings import InferenceOptions, NmsSettings
from streamdet.pipeline.types import Image
from streamdet.progress import Progress

__all__ = ["PTS_TOLERANCE", "VIDEO_SUFFIXES", "VAL_NMS", "Shard", "ValJob", "ValResult", "iter_clip", "iter_yolo",
           "predict_shard", "score"]

PTS_TOLERANCE = 1e-3  # seconds between a decoded frame's time and its ground-truth pts
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".ts", ".webm"})

Keep = Callable[[int], bool]
"""Which image/frame indices to read (the others are skipped without decoding where possible)."""

Shard = list[tuple[int, np.ndarray, np.ndarray]]
"""One process's share: (image index, predictions (n, 6) float64, ground truth (m, 5)) in index order."""


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
    devices: list[str] = field(default_factory=lambda: ["cpu"])

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON form: ``{"map50", "map50_95", "images", "seconds", "per_class": {name:
        {"ap50", "ap50_95", "n_gt"}}, "devices": [...]}`` (NaN becomes null)."""

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
            "devices": list(self.devices),
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as one line of JSON."""
        return json.dumps(self.to_dict())


def iter_yolo(data: Path, keep: Keep | None = None) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(count, iterator of (BGR image, ground truth (m, 5))) over a YOLO-layout data set; with
    ``keep``, only the images whose index it accepts are read and yielded (count is still all)."""
    import cv2

    from streamdet.datasets.yolo import read_yolo_dir

    samples = read_yolo_dir(data)

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i, s in enumerate(samples):
            if keep is not None and not keep(i):
                continue
            img = cv2.imread(str(s.image), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(f"cannot decode image {s.image}")
            if img.shape[:2] != (s.height, s.width):
                raise DatasetError(
                    f"{s.image}: decoded size {img.shape[1]}x{img.shape[0]} differs from {s.width}x{s.height}"
                )
            yield img, s.ground_truth()

    return len(samples), gen()


def iter_clip(clip: Path, keep: Keep | None = None) -> tuple[int, Iterator[tuple[Image, np.ndarray]]]:
    """(count, iterator of (frame, ground truth (m, 5))) over a clip and its ``.jsonl``.

    Frames are the daemon's: the decoded YUV planes exactly as a decoder writes them into the ring
    (:func:`streamdet.pipeline.decode.frames.frame_to_image`), so the worker and val see the same bytes.
    Frames are matched to ground-truth lines by index; each decoded frame's time must equal the
    line's ``pts`` within :data:`PTS_TOLERANCE`, and the counts must agree. With ``keep``, every
    frame is still decoded and checked (decoding is sequential) but only the kept ones are yielded.
    """
    import av

    from streamdet.pipeline.decode.frames import frame_to_image

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
                if keep is None or keep(n):
                    yield frame_to_image(frame)[0], gt.boxes
                n += 1
        if n != len(truth):
            raise DatasetError(f"{clip}: {n} frames decoded but {gt_path} has {len(truth)}")

    return len(truth), gen()


def _open_data(data: Path, keep: Keep | None) -> tuple[int, Iterator[tuple[np.ndarray | Image, np.ndarray]]]:
    """(count, iterator of (image or frame, ground truth)) over a YOLO-layout folder or a clip."""
    if data.is_dir():
        return iter_yolo(data, keep)
    if data.suffix.lower() in VIDEO_SUFFIXES:
        return iter_clip(data, keep)
    if not data.exists():
        raise DatasetError(f"data not found: {data}")
    raise DatasetError(f"data must be a YOLO-layout folder or a video clip with a .jsonl beside it: {data}")


#: val's NMS settings unless told otherwise: the official val.py's (conf 0.001, IoU 0.6), which
#: keep the low-score detections the precision-recall curve needs
VAL_NMS = NmsSettings(conf_thres=0.001, iou_thres=0.6)


@dataclass(frozen=True)
class ValJob:
    """What to validate and how (picklable, sent to each rank); each rank runs ``options`` on its
    own device."""

    options: InferenceOptions
    data: str | Path
    batch_size: int = 8
    progress: bool = True


def predict_shard(job: ValJob, device: str, rank: int = 0, world: int = 1) -> tuple[int, list[str], Shard]:
    """Run the detector on ``device`` over this rank's share of the data: (image count of the whole
    set, the model's class names, this rank's :data:`Shard`).

    The share is whole batches: image ``i`` is in batch ``i // batch_size`` and batch ``k`` is
    rank ``k % world``'s, so every batch holds the same images (and is letterboxed to the same
    input shape) as in a one-device run, and each image gets the same predictions. A progress
    bar (rank 0 only) counts this rank's images.
    """
    from streamdet.detector import Detector

    if job.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {job.batch_size}")

    def keep(i: int) -> bool:
        return (i // job.batch_size) % world == rank

    total, items = _open_data(Path(job.data), None if world == 1 else keep)
    indices = [i for i in range(total) if keep(i)]
    det = Detector.from_options(job.options.on(device))
    names = [str(n) for n in det.names]
    bar = Progress(len(indices), "val") if job.progress and rank == 0 else None
    shard: Shard = []
    try:
        for batch in batched(items, job.batch_size):
            frames = [f for f, _ in batch]
            out = det(frames)
            if len(out) != len(frames):
                raise RuntimeError(f"detector returned {len(out)} results for {len(frames)} frames")
            for (_, gt), o in zip(batch, out, strict=True):
                shard.append((indices[len(shard)], np.asarray(o, np.float64).reshape(-1, 6), gt))
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    if len(shard) != len(indices):
        raise RuntimeError(f"rank {rank}: {len(shard)} images read, expected {len(indices)}")
    return total, names, shard


def score(names: list[str], total: int, shards: Sequence[Shard], seconds: float, devices: list[str]) -> ValResult:
    """Reassemble the shards in image order and score them with :func:`~streamdet.evaluation.evaluate`."""
    merged = sorted((item for shard in shards for item in shard), key=lambda item: item[0])
    if [i for i, _, _ in merged] != list(range(total)):
        raise RuntimeError(f"the shards hold {len(merged)} images, not each of the {total} once")
    predictions = [p for _, p, _ in merged]
    truths = [g for _, _, g in merged]
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
        seconds=seconds,
        names=names,
        detail=result,
        devices=list(devices),
    )


