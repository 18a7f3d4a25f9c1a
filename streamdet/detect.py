"""`streamdet detect`: run a Detector over image and video files, one JSON line per image/frame.

A batch tool, not the daemon: sources are read one after the other, video frames are batched.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

import numpy as np

from streamdet.errors import SourceError
from streamdet.wire import detection_records

T = TypeVar("T")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass(frozen=True)
class SourceFrame:
    """One image, or one frame of a video, with where it came from."""

    source: str
    frame: int
    image: np.ndarray


def expand_sources(sources: Iterable[str]) -> list[Path]:
    """Files as given; a directory becomes its images and videos in name order."""
    paths: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            paths.extend(sorted(c for c in p.iterdir() if c.is_file()))
        elif p.is_file():
            paths.append(p)
        else:
            raise SourceError(f"{s}: no such file or directory")
    return paths


def read_frames(path: Path) -> Iterator[SourceFrame]:
    """Yield the BGR frames of an image file (one) or a video file (all, in order)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise SourceError(f"{path}: not a readable image")
        yield SourceFrame(str(path), 0, img)
        return
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise SourceError(f"{path}: cannot open as video: {exc}") from exc
    with container:
        if not container.streams.video:
            raise SourceError(f"{path}: has no video stream")
        try:
            for i, frame in enumerate(container.decode(video=0)):
                yield SourceFrame(str(path), i, frame.to_ndarray(format="bgr24"))
        except av.FFmpegError as exc:
            raise SourceError(f"{path}: decoding failed: {exc}") from exc


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Group items into lists of at most ``size`` (``itertools.batched`` needs Python 3.12)."""
    batch: list[T] = []
    for f in items:
        batch.append(f)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_detect(detector, sources: Iterable[str], batch_size: int = 8, out: TextIO = sys.stdout) -> int:
    """Detect on every source and print one JSON line per image/frame; returns the frame count."""
    names = detector.names
    count = 0
    for path in expand_sources(sources):
        for batch in batched(read_frames(path), batch_size):
            for item, det in zip(batch, detector([f.image for f in batch]), strict=True):
                record = {"source": item.source, "frame": item.frame, "detections": detection_records(det, names)}
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
                count += 1
            out.flush()
    return count
