"""The tracker on a synthetic scene with a noisy detector, scored with the MOT metrics.

Objects bounce around a frame, cross each other, and the detector jitters boxes, misses some,
dips in score and reports clutter. Tracking every frame and every third frame (predicted boxes
between) must meet the issue's targets on this easy scene.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.mot_metrics import MotScores, mot_scores
from streamdet.pipeline.tracking import Tracker

W, H = 1280, 720


def _scene(seed: int, frames: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per frame: ground-truth boxes (k, 4), their object ids (k,), detections (n, 6)."""
    rng = np.random.default_rng(seed)
    n = 10
    size = rng.uniform(40, 120, (n, 1)) * np.array([[1.0, 0.8]])
    pos = rng.uniform(0, 1, (n, 2)) * (np.array([W, H]) - size)
    vel = rng.uniform(-8, 8, (n, 2))
    cls = rng.integers(0, 3, n)
    out = []
    for _ in range(frames):
        pos += vel
        for axis, limit in ((0, W), (1, H)):  # bounce off the edges
            hit = (pos[:, axis] < 0) | (pos[:, axis] + size[:, axis] > limit)
            vel[hit, axis] *= -1
            pos[:, axis] = np.clip(pos[:, axis], 0, limit - size[:, axis])
        gt = np.column_stack([pos, pos + size])
        seen = rng.random(n) > 0.08
        boxes = gt[seen] + rng.normal(0, 2.0, (int(seen.sum()), 4))
        scores = np.where(rng.random(int(seen.sum())) < 0.15, rng.uniform(0.15, 0.5), rng.uniform(0.5, 0.95))
        dets = np.column_stack([boxes, scores, cls[seen]])
        k = int(rng.poisson(1.0))  # clutter: mostly low scores, at random places
        xy = rng.uniform(0, 1, (k, 2)) * np.array([W - 80, H - 80])
        wh = rng.uniform(20, 80, (k, 2))
        clutter = np.column_stack([xy, xy + wh, rng.uniform(0.1, 0.6, k), rng.integers(0, 3, k)])
        out.append((gt, np.arange(n), np.concatenate([dets, clutter]).astype(np.float32)))
    return out


def _track(scene: list[tuple[np.ndarray, np.ndarray, np.ndarray]], detect_every: int) -> MotScores:
    tracker = Tracker()
    seq = []
    for i, (gt, gt_ids, dets) in enumerate(scene):
        out = tracker.update(dets) if i % detect_every == 0 else tracker.predict()
        seq.append((gt, gt_ids, out[:, :4], out[:, 6].astype(np.int64)))
    return mot_scores(seq)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scene_meets_the_targets(seed: int) -> None:
    scene = _scene(seed, 300)
    every = _track(scene, 1)
    third = _track(scene, 3)
    assert every.idf1 >= 0.90 and every.mota >= 0.80 and every.id_switches_per_100_gt <= 1.0
    assert third.idf1 >= every.idf1 - 0.05 and third.mota >= every.mota - 0.05
    assert third.id_switches_per_100_gt <= every.id_switches_per_100_gt + 1.0
