"""The naive baseline: one process, round-robin ``cv2.VideoCapture`` reads, batched detection.

This is what YOLOv5's detect.py stream loop amounts to: take one frame from each stream, letterbox
and batch them, run the torch model and NMS (``streamdet.Detector`` with the torch backend), repeat.
``run_unpaced`` reads every clip once as fast as possible. ``run_trial`` plays ``n`` virtual live
cameras: frame ``k`` of each is due at ``t0 + k / 25``; each round takes, per camera, the newest
frame already due that the detection rate keeps, and skips (grabs) the ones before it, which is
how a single-threaded reader keeps up with live streams. Accounting is in
:mod:`streamdet.bench.accounting`, shared with the daemon side.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.bench.accounting import TrialResult, account_schedule, is_kept
from streamdet.bench.workload import CLIP_FPS


def make_detector(weights: Path, device: str, img_size: int) -> Any:
    """``streamdet.Detector`` on the torch backend (the keyword is passed only where it exists)."""
    from streamdet.detector import Detector

    kwargs: dict[str, Any] = {"device": device, "img_size": img_size}
    if "backend" in inspect.signature(Detector).parameters:
        kwargs["backend"] = "torch"
    return Detector(weights, **kwargs)


def _open(path: Path) -> Any:
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        from streamdet.bench.daemon import BenchError

        raise BenchError(f"OpenCV cannot open {path}")
    return cap


class LoopingCapture:
    """A ``cv2.VideoCapture`` over a clip of known length that restarts at its end (reopening)."""

    def __init__(self, path: Path, clip_frames: int) -> None:
        self.path = path
        self.clip_frames = clip_frames
        self.cap = _open(path)
        self.pos = 0  # index in the clip of the next frame

    def _wrap(self) -> None:
        if self.pos >= self.clip_frames:
            self.cap.release()
            self.cap = _open(self.path)
            self.pos = 0

    def grab(self) -> None:
        """Skip one frame (demuxed and decoded by OpenCV, not converted)."""
        self._wrap()
        self.cap.grab()
        self.pos += 1

    def read(self) -> np.ndarray:
        """The next frame as BGR."""
        self._wrap()
        ok, frame = self.cap.read()
        if not ok:
            from streamdet.bench.daemon import BenchError

            raise BenchError(f"{self.path}: cannot read frame {self.pos}")
        self.pos += 1
        return frame

    def release(self) -> None:
        self.cap.release()


def run_unpaced(detector: Any, clips: Sequence[Path], on_frame: Callable[[int], None] | None = None,
                ) -> dict[str, Any]:
    """Read every clip once, one frame per stream per round, detect each round as one batch.

    frames/s is defined as for the daemon: frames processed over the time from the first
    batch's results to the last batch's results (``wall_s`` includes the first batch too).
    """
    caps = [_open(c) for c in clips]
    try:
        first = [cap.read() for cap in caps]
        shapes = [f.shape[:2] for ok, f in first if ok]
        detector.warmup(shapes or [(720, 1280)], len(caps))
        for cap in caps:
            cap.release()
        caps = [_open(c) for c in clips]
        per_cam = [0] * len(caps)
        active = list(range(len(caps)))
        read_s = detect_s = 0.0
        batches = processed = 0
        t_first: float | None = None
        t_last = t_begin = time.perf_counter()
        while active:
            t = time.perf_counter()
            frames, owners = [], []
            for i in list(active):
                ok, frame = caps[i].read()
                if not ok:
                    active.remove(i)
                    continue
                frames.append(frame)
                owners.append(i)
            read_s += time.perf_counter() - t
            if not frames:
                break
            t = time.perf_counter()
            detector(frames)
            t_last = time.perf_counter()
            detect_s += t_last - t
            t_first = t_last if t_first is None else t_first
            batches += 1
            processed += len(frames)
            for i in owners:
                per_cam[i] += 1
            if on_frame is not None:
                on_frame(processed)
    finally:
        for cap in caps:
            cap.release()
    span = t_last - t_first if t_first is not None else 0.0
    return {
        "cameras": len(clips),
        "frames_processed": processed,
        "per_camera": {f"cam{i}": n for i, n in enumerate(per_cam)},
        "batches": batches,
        "span_s": round(span, 3),
        "wall_s": round(t_last - t_begin, 3),
        "fps": processed / span if span > 0 else None,
        "fps_definition": "frames processed / (last batch done - first batch done)",
        "read_ms_per_frame": round(1000.0 * read_s / processed, 3) if processed else None,
        "detect_ms_per_batch": round(1000.0 * detect_s / batches, 3) if batches else None,
    }


def _newest_kept(lo: int, hi: int, rate: float, clip_frames: int) -> int | None:
    """The largest kept frame index in ``[lo, hi]``, or None."""
    for k in range(hi, lo - 1, -1):
        if is_kept(k, rate, CLIP_FPS, clip_frames):
            return k
    return None


def run_trial(detector: Any, clips: Sequence[Path], clip_frames: int, n: int, rate: float, *, seconds: float,
              warmup_s: float, latency_ms: float, max_drop_pct: float = 1.0,
              clock: Callable[[], float] = time.time) -> TrialResult:
    """``n`` virtual 25 fps cameras served by one loop at detection rate ``rate`` (see module docstring)."""
    caps = [LoopingCapture(clips[i % len(clips)], clip_frames) for i in range(n)]
    try:
        probe = caps[0].read()
        caps[0].release()
        caps[0] = LoopingCapture(clips[0], clip_frames)
        detector.warmup([probe.shape[:2]], n)
        next_k = [0] * n
        records: dict[int, list[tuple[int, float]]] = {i: [] for i in range(n)}
        t0 = clock()
        t_start = t0 + warmup_s
        t_end = t_start + seconds
        while True:
            now = clock()
            if now >= t_end:
                break
            k_due = math.floor((now - t0) * CLIP_FPS)
            frames, taken = [], []
            for i, cap in enumerate(caps):
                target = _newest_kept(next_k[i], k_due, rate, clip_frames)
                if target is None:
                    continue
                for _ in range(target - next_k[i]):
                    cap.grab()
                frames.append(cap.read())
                taken.append((i, target))
                next_k[i] = target + 1
            if not frames:
                nxt = min(next_k)
                while not is_kept(nxt, rate, CLIP_FPS, clip_frames):
                    nxt += 1
                time.sleep(min(0.05, max(0.0005, t0 + nxt / CLIP_FPS - clock())))
                continue
            detector(frames)
            t_pub = clock()
            for i, k in taken:
                records[i].append((k, t_pub))
    finally:
        for cap in caps:
            cap.release()
    return account_schedule(records, n, t0=t0, rate=rate, fps=CLIP_FPS, clip_frames=clip_frames, t_start=t_start,
                            t_end=t_end, latency_bound_ms=latency_ms, max_drop_pct=max_drop_pct)
