"""What the tracker costs per frame: Tracker.update (and predict) times with many objects.

    .venv/bin/python tools/tracker_cost.py [--objects 50] [--frames 2000] [--detect-every 1] [--json out.json]

A synthetic scene: ``--objects`` boxes of three classes moving at constant speed (bouncing off the
frame edges) with jittered boxes, a few misses, score dips and clutter, so that every matching
stage does work. Times each call with ``time.perf_counter`` after a warm-up and prints the median,
the 99th percentile and the mean in milliseconds (one process, one thread: set OMP_NUM_THREADS=1
for a number that does not depend on the BLAS thread pool).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from streamdet.pipeline.tracking import Tracker

W, H = 1920, 1080


def scene(objects: int, frames: int, seed: int = 0) -> list[np.ndarray]:
    """Detections (n, 6) float32 of each frame of a synthetic scene."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 150, (objects, 1)) * np.array([[1.0, 0.8]])
    pos = rng.uniform(0, 1, (objects, 2)) * (np.array([W, H]) - size)
    vel = rng.uniform(-6, 6, (objects, 2))
    cls = rng.integers(0, 3, objects)
    out = []
    for _ in range(frames):
        pos += vel
        for axis, limit in ((0, W), (1, H)):
            hit = (pos[:, axis] < 0) | (pos[:, axis] + size[:, axis] > limit)
            vel[hit, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 0, limit - size[:, axis])
        seen = rng.random(objects) > 0.05
        boxes = np.column_stack([pos, pos + size])[seen] + rng.normal(0, 2.0, (int(seen.sum()), 4))
        scores = np.where(
            rng.random(len(boxes)) < 0.1, rng.uniform(0.15, 0.5, len(boxes)), rng.uniform(0.5, 0.95, len(boxes))
        )
        k = int(rng.poisson(2.0))
        xy = rng.uniform(0, 1, (k, 2)) * np.array([W - 100, H - 100])
        clutter = np.column_stack(
            [xy, xy + rng.uniform(20, 100, (k, 2)), rng.uniform(0.1, 0.6, k), rng.integers(0, 3, k)]
        )
        out.append(np.concatenate([np.column_stack([boxes, scores, cls[seen]]), clutter]).astype(np.float32))
    return out


def measure(objects: int = 50, frames: int = 2000, detect_every: int = 1, warmup: int = 50) -> dict[str, float]:
    """Per-call times (ms) of ``update`` and, with ``detect_every > 1``, of ``predict``."""
    dets = scene(objects, frames + warmup)
    tracker = Tracker()
    update_ms: list[float] = []
    predict_ms: list[float] = []
    for i, d in enumerate(dets):
        start = time.perf_counter()
        if i % detect_every == 0:
            tracker.update(d)
            spent, times = time.perf_counter() - start, update_ms
        else:
            tracker.predict()
            spent, times = time.perf_counter() - start, predict_ms
        if i >= warmup:
            times.append(spent * 1e3)
    result = {"objects": float(objects), "tracks_at_end": float(tracker.num_tracks)}
    for name, times in (("update", update_ms), ("predict", predict_ms)):
        if times:
            result[f"{name}_median_ms"] = statistics.median(times)
            result[f"{name}_p99_ms"] = float(np.percentile(times, 99))
            result[f"{name}_mean_ms"] = statistics.fmean(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--detect-every", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    result = measure(args.objects, args.frames, args.detect_every)
    for key, value in result.items():
        print(f"{key:>20}: {value:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
