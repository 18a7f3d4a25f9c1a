"""YOLO-layout data sets: read them into pixel boxes, and write label files.

Layout (the usual Ultralytics one): an image ``.../images/NAME.png`` has its labels in
``.../labels/NAME.txt`` (the last ``images`` folder of the path replaced by ``labels``); an image
whose path has no ``images`` folder has its label file beside it. One line per object,
``class cx cy w h`` normalised to [0, 1] by the image width and height. A missing label file means
the image has no objects; a malformed line raises :class:`DatasetError` naming ``file:line``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from streamdet.datasets.groundtruth import DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetError",
    "YoloSample",
    "format_label_lines",
    "image_size",
    "label_path",
    "list_images",
    "read_label_file",
    "read_yolo_dir",
    "write_label_file",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
_COORD_TOL = 1e-6  # rounding slack for normalised coordinates written with a few decimals


@dataclass(frozen=True)
class YoloSample:
    """One image of a data set: its path, size, boxes (n, 4) float64 x1y1x2y2 pixels, classes (n,) int64."""

    image: Path
    width: int
    height: int
    boxes: np.ndarray
    classes: np.ndarray

    def ground_truth(self) -> np.ndarray:
        """Boxes and classes as one (n, 5) float64 array [x1, y1, x2, y2, cls] (the evaluator's form)."""
        return np.concatenate([self.boxes, self.classes[:, None].astype(np.float64)], axis=1)


def label_path(image: str | Path) -> Path:
    """The label file of ``image``: ``images`` -> ``labels`` (last occurrence), suffix ``.txt``."""
    image = Path(image)
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def list_images(root: str | Path) -> list[Path]:
    """Image files of a data set, sorted: those under ``root/images`` if it exists, else under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data set folder not found: {root}")
    base = root / "images" if (root / "images").is_dir() else root
    found = [
        Path(dirpath) / name
        for dirpath, _, names in os.walk(base)
        for name in names
        if Path(name).suffix.lower() in IMAGE_SUFFIXES
    ]
    return sorted(found)


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return int(w), int(h)
    return None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image: from the PNG header when it is a PNG, else by decoding it.

    Other formats are decoded with cv2 so that the size is the one cv2.imread gives (JPEG EXIF
    orientation included), which is what the detector sees.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = _png_size(fh.read(24))
    except OSError as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None
    if size is not None:
        return size
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot decode image {path}")
    return int(img.shape[1]), int(img.shape[0])


def read_label_file(path: str | Path, nc: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Parse a label file into normalised boxes (n, 4) float64 [cx, cy, w, h] and classes (n,) int64.

    A missing file gives no objects. Blank lines are skipped. Every other line must be
    ``class cx cy w h`` with an integer class (``< nc`` when given), finite coordinates in [0, 1],
    ``w, h > 0`` and the box inside the image; otherwise :class:`DatasetError` names ``file:line``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return np.zeros((0, 4), np.float64), np.zeros((0,), np.int64)
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read label file {path}: {exc}") from None
    boxes: list[list[float]] = []
    classes: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 fields 'class cx cy w h', got {len(fields)}: {line.strip()!r}")
        try:
            cls_f = float(fields[0])
            vals = [float(v) for v in fields[1:]]
        except ValueError:
            raise DatasetError(f"{where}: not numbers: {line.strip()!r}") from None
        if not np.isfinite(cls_f) or cls_f < 0 or not cls_f.is_integer():
            raise DatasetError(f"{where}: class {fields[0]!r} is not a non-negative integer")
        cls = int(cls_f)
        if nc is not None and cls >= nc:
            raise DatasetError(f"{where}: class {cls} is out of range (data set has {nc} classes)")
        cx, cy, w, h = vals
        if not all(np.isfinite(vals)) or min(vals) < -_COORD_TOL or max(vals) > 1 + _COORD_TOL:
            raise DatasetError(f"{where}: coordinates must be finite and normalised to [0, 1]: {line.strip()!r}")
        if w <= 0 or h <= 0:
            raise DatasetError(f"{where}: box width and height must be > 0: {line.strip()!r}")
        if (
            cx - w / 2 < -_COORD_TOL
            or cy - h / 2 < -_COORD_TOL
            or cx + w / 2 > 1 + _COORD_TOL
            or cy + h / 2 > 1 + _COORD_TOL
        ):
            raise DatasetError(f"{where}: box extends outside the image: {line.strip()!r}")
        boxes.append(vals)
        classes.append(cls)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(classes, np.int64)


def read_yolo_dir(root: str | Path, nc: int | None = None) -> list[YoloSample]:
    """Read every image of a YOLO-layout data set (sorted by path) with its boxes in pixels.

    ``root`` holds ``images/`` and ``labels/``, or images with their label files side by side (an
    ``.../images/<split>`` folder works too: its labels are found in ``.../labels/<split>``).
    """
    images = list_images(root)
    if not images:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in {root}")
    samples = []
    for image in images:
        xywh, classes = read_label_file(label_path(image), nc=nc)
        width, height = image_size(image)
        boxes = np.empty_like(xywh)
        boxes[:, 0] = (xywh[:, 0] - xywh[:, 2] / 2) * width
        boxes[:, 1] = (xywh[:, 1] - xywh[:, 3] / 2) * height
        boxes[:, 2] = (xywh[:, 0] + xywh[:, 2] / 2) * width
        boxes[:, 3] = (xywh[:, 1] + xywh[:, 3] / 2) * height
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        samples.append(YoloSample(image=image, width=width, height=height, boxes=boxes, classes=classes))
    return samples


def format_label_lines(boxes: np.ndarray | Sequence[Sequence[float]], width: int, height: int) -> str:
    """YOLO label text for pixel boxes (n, 5) [x1, y1, x2, y2, cls]: ``class cx cy w h`` lines, 6 decimals."""
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    lines = []
    for x1, y1, x2, y2, cls in arr:
        cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
        w, h = (x2 - x1) / width, (y2 - y1) / height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def write_label_file(path: str | Path, boxes: np.ndarray, width: int, height: int) -> Path:
    """Write pixel boxes (n, 5) [x1, y1, x2, y2, cls] as a YOLO label file (empty file if none)."""
    path = Path(path)
    path.write_text(format_label_lines(boxes, width, height), encoding="utf-8")
    return path
