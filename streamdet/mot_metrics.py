"""Multi-object tracking accuracy: CLEAR MOT (MOTA, ID switches) and the identity metric IDF1.

As the MOTChallenge defines them (computed independently here; checked against py-motmetrics in
the tests). A predicted box may match a ground-truth box when their IoU is >= 0.5
(:func:`streamdet.evaluation.box_iou`, continuous boxes).

CLEAR MOT, frame by frame: a ground-truth object keeps the track it was last matched to if that
track is in the frame and still overlaps it enough; the other objects and tracks are matched by
an optimal assignment (the most matches, then the least total ``1 - IoU``). An object matched to
a track other than the one it was last matched to (in any earlier frame) is an ID switch.
Unmatched objects are misses (FN), unmatched predictions false positives (FP).
``MOTA = 1 - (FN + FP + IDSW) / num_gt``.

Identity: over the whole sequence, each ground-truth id is paired with at most one track id so
that the number of (frame, object) boxes covered by their paired track at IoU >= 0.5 (IDTP) is
largest. ``IDF1 = 2 IDTP / (num_gt + num_pred)``.

Ids must be unique within a frame. Scores that divide by zero (no ground truth) are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]  # scipy ships no type hints

from streamdet.evaluation import box_iou

__all__ = ["MATCH_IOU", "MotAccumulator", "MotScores", "mot_scores"]

MATCH_IOU = 0.5


@dataclass(frozen=True)
class MotScores:
    """Tracking scores of one sequence (clip); counts are over all its frames."""

    mota: float
    idf1: float
    id_switches: int
    id_switches_per_100_gt: float
    num_gt: int
    num_pred: int
    fp: int
    fn: int
    idtp: int
    frames: int


def _assign(allowed: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most allowed pairs, then least cost (costs in [0, 1]); (rows, cols) of the allowed pairs chosen."""
    if not allowed.any():
        empty = np.zeros(0, np.intp)
        return empty, empty
    forbidden_cost = 2.0 * min(allowed.shape) + 1.0  # worse than any set of allowed pairs
    rows, cols = linear_sum_assignment(np.where(allowed, cost, forbidden_cost))
    ok = allowed[rows, cols]
    return rows[ok], cols[ok]


def _ids(ids: np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(ids).reshape(-1)
    if len(arr) != n:
        raise ValueError(f"{what}: {len(arr)} ids for {n} boxes")
    integral = np.issubdtype(arr.dtype, np.integer) or bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    if not integral:
        raise ValueError(f"{what}: ids must be integers")
    arr = arr.astype(np.int64)
    if len(np.unique(arr)) != len(arr):
        raise ValueError(f"{what}: ids must be unique within a frame")
    return arr


class MotAccumulator:
    """Feed it the frames of one sequence in order with :meth:`update`, then read :meth:`scores`."""

    def __init__(self) -> None:
        self._last_track: dict[int, int] = {}  # gt id -> track id of its latest match
        self._frames = 0
        self._num_gt = 0
        self._num_pred = 0
        self._fp = 0
        self._fn = 0
        self._switches = 0
        self._pairs: list[np.ndarray] = []  # per frame (k, 2) [gt id, track id] at IoU >= MATCH_IOU

    def update(self, gt_boxes: np.ndarray, gt_ids: np.ndarray, pred_boxes: np.ndarray, pred_ids: np.ndarray) -> None:
        """One frame: ground truth (k, 4) xyxy with ids (k,), predictions (m, 4) xyxy with track ids (m,)."""
        gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
        pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
        gids = _ids(gt_ids, len(gt_boxes), "ground truth")
        pids = _ids(pred_ids, len(pred_boxes), "predictions")
        self._frames += 1
        self._num_gt += len(gids)
        self._num_pred += len(pids)
        iou = box_iou(gt_boxes, pred_boxes)
        allowed = iou >= MATCH_IOU
        gi, pj = np.nonzero(allowed)
        self._pairs.append(np.stack([gids[gi], pids[pj]], axis=1))

        gt_done = np.zeros(len(gids), bool)
        pred_done = np.zeros(len(pids), bool)
        column = {int(p): j for j, p in enumerate(pids)}
        for i, g in enumerate(gids):  # carry earlier correspondences forward
            j = column.get(self._last_track.get(int(g), -1), -1)
            if j >= 0 and allowed[i, j] and not pred_done[j]:
                gt_done[i] = pred_done[j] = True
        free = allowed & ~gt_done[:, None] & ~pred_done[None, :]
        rows, cols = _assign(free, 1.0 - iou)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            g, p = int(gids[i]), int(pids[j])
            if self._last_track.get(g, p) != p:
                self._switches += 1
            self._last_track[g] = p
        gt_done[rows] = True
        pred_done[cols] = True
        self._fn += int(np.count_nonzero(~gt_done))
        self._fp += int(np.count_nonzero(~pred_done))

    def _idtp(self) -> int:
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), np.int64)
        if len(pairs) == 0:
            return 0
        gt_u, gt_row = np.unique(pairs[:, 0], return_inverse=True)
        tr_u, tr_col = np.unique(pairs[:, 1], return_inverse=True)
        overlap = np.zeros((len(gt_u), len(tr_u)), np.int64)
        np.add.at(overlap, (gt_row.reshape(-1), tr_col.reshape(-1)), 1)
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        return int(overlap[rows, cols].sum())

    def scores(self) -> MotScores:
        """The scores of the frames fed so far."""
        idtp = self._idtp()
        n_gt, n_pred = self._num_gt, self._num_pred
        nan = math.nan
        return MotScores(
            mota=1.0 - (self._fn + self._fp + self._switches) / n_gt if n_gt else nan,
            idf1=2.0 * idtp / (n_gt + n_pred) if n_gt + n_pred else nan,
            id_switches=self._switches,
            id_switches_per_100_gt=100.0 * self._switches / n_gt if n_gt else nan,
            num_gt=n_gt,
            num_pred=n_pred,
            fp=self._fp,
            fn=self._fn,
            idtp=idtp,
            frames=self._frames,
        )


def mot_scores(frames: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> MotScores:
    """Scores of a sequence given as ``(gt_boxes, gt_ids, pred_boxes, pred_ids)`` per frame, in order."""
    acc = MotAccumulator()
    for gt_boxes, gt_ids, pred_boxes, pred_ids in frames:
        acc.update(gt_boxes, gt_ids, pred_boxes, pred_ids)
    return acc.scores()
