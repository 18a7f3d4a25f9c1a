"""COCO-style detection accuracy: mAP@0.5 and mAP@0.5:0.95.

The metric as COCO defines it (computed independently here; no COCO or Ultralytics code):

- IoU thresholds 0.50, 0.55, ..., 0.95. Boxes are continuous ``[x1, y1, x2, y2]`` (x2 one past the
  last pixel), IoU = intersection / union without "+1".
- Matching, per image, per class, per threshold: detections in descending score order (stable for
  ties); each takes the unmatched ground-truth box of the same class with the highest IoU, if that
  IoU is >= the threshold (true positive); otherwise it is a false positive. A ground-truth box is
  matched at most once, so a duplicate detection is a false positive.
- Per class: all detections of all images sorted by descending score (stable: image order, then
  the per-image order), cumulative precision/recall, the precision envelope (precision made
  non-increasing in recall), sampled at the 101 recall points ``linspace(0, 1, 101)`` (the first
  point with recall >= r; 0 where recall never reaches r); AP = the mean of those 101 values.
- mAP = mean AP over the classes that have ground truth. Classes with no ground-truth box in the
  whole set are excluded (their AP is undefined, NaN), as COCO does, even if they have detections.
  If no class has ground truth, mAP is NaN.
- No area ranges, no crowd boxes, no per-image cap on detections (COCO's ``maxDets=100`` is a
  parameter; here the detector's ``max_det`` is the cap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["IOU_THRESHOLDS", "RECALL_POINTS", "ClassAP", "EvalResult", "box_iou", "evaluate", "format_table"]

IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class ClassAP:
    """AP of one class: at IoU 0.5, averaged over 0.5:0.95, and its number of ground-truth boxes."""

    ap50: float
    ap50_95: float
    n_gt: int


@dataclass(frozen=True)
class EvalResult:
    """Result of :func:`evaluate`.

    ``per_class`` maps class index to :class:`ClassAP` for the classes that have ground truth;
    ``ap`` is (nc, 10) AP per class per IoU threshold (NaN for classes without ground truth);
    ``n_gt`` and ``n_pred`` (nc,) count boxes per class.
    """

    map50: float
    map50_95: float
    per_class: dict[int, ClassAP]
    n_images: int
    ap: np.ndarray
    n_gt: np.ndarray
    n_pred: np.ndarray


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of continuous xyxy boxes; 0 where the union is empty."""
    # ufuncs with ``out=`` rather than np.clip / np.where: the tracker calls this several times a
    # frame on a few dozen boxes, where numpy's Python-level wrappers cost more than the arithmetic
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2])
    iw -= np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3])
    ih -= np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(iw, 0.0, out=iw)
    inter *= np.maximum(ih, 0.0, out=ih)
    area_a = np.maximum(a[:, 2] - a[:, 0], 0.0) * np.maximum(a[:, 3] - a[:, 1], 0.0)
    area_b = np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    return np.divide(inter, union, out=np.zeros_like(union), where=union > 0)


def _match(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy matching of score-sorted detections (rows of ``iou``) to GT (columns), per threshold.

    Returns tp (n_det, n_thr) bool.
    """
    n_det, n_gt = iou.shape
    tp = np.zeros((n_det, len(thresholds)), dtype=bool)
    if n_det == 0 or n_gt == 0:
        return tp
    matched = np.zeros((len(thresholds), n_gt), dtype=bool)
    # A detection whose best IoU is below the lowest threshold is a FP at every threshold and does
    # not change what others match: skip it.
    for d in np.flatnonzero(iou.max(axis=1) >= thresholds.min()):
        cand = np.where(matched, -1.0, iou[d][None, :])  # (n_thr, n_gt); matched GT are unavailable
        best = cand.argmax(axis=1)
        best_iou = cand[np.arange(len(thresholds)), best]
        ok = best_iou >= thresholds
        tp[d] = ok
        matched[np.flatnonzero(ok), best[ok]] = True
    return tp


def _average_precision(tp: np.ndarray, scores_order: np.ndarray, n_gt: int) -> np.ndarray:
    """101-point interpolated AP per threshold from tp (n_det, n_thr) in global score order."""
    n_thr = tp.shape[1]
    if n_gt == 0:
        return np.full(n_thr, np.nan)
    if tp.shape[0] == 0:
        return np.zeros(n_thr)
    tp = tp[scores_order]
    tpc = np.cumsum(tp, axis=0, dtype=np.float64)
    fpc = np.cumsum(~tp, axis=0, dtype=np.float64)
    recall = tpc / n_gt
    precision = tpc / (tpc + fpc)
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    ap = np.zeros(n_thr)
    for t in range(n_thr):
        idx = np.searchsorted(recall[:, t], RECALL_POINTS, side="left")
        valid = idx < len(recall)
        q = np.zeros(len(RECALL_POINTS))
        q[valid] = envelope[idx[valid], t]
        ap[t] = q.mean()
    return ap


def _check(arr: np.ndarray, cols: int, what: str, i: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.size == 0:
        return a.reshape(0, cols)
    if a.ndim != 2 or a.shape[1] != cols:
        raise ValueError(f"{what} {i}: expected an (n, {cols}) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} {i}: contains non-finite values")
    return a


def evaluate(predictions: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], nc: int) -> EvalResult:
    """COCO-style mAP of ``predictions`` (per image (n, 6) x1y1x2y2 score cls) against ``ground_truth``
    (per image (m, 5) x1y1x2y2 cls), for classes ``0 .. nc - 1`` (see the module doc)."""
    if len(predictions) != len(ground_truth):
        raise ValueError(f"{len(predictions)} prediction arrays for {len(ground_truth)} images")
    thresholds = IOU_THRESHOLDS
    n_thr = len(thresholds)
    tps: list[list[np.ndarray]] = [[] for _ in range(nc)]
    scores: list[list[np.ndarray]] = [[] for _ in range(nc)]
    n_gt = np.zeros(nc, np.int64)
    for i, (pred, gt) in enumerate(zip(predictions, ground_truth, strict=True)):
        pred = _check(pred, 6, "predictions", i)
        gt = _check(gt, 5, "ground truth", i)
        for name, cls in (("predictions", pred[:, 5]), ("ground truth", gt[:, 4])):
            bad = (cls < 0) | (cls >= nc) | (cls != np.floor(cls))
            if bad.any():
                raise ValueError(f"{name} {i}: class id {cls[bad][0]} is not an integer in [0, {nc})")
        pred_cls, gt_cls = pred[:, 5].astype(np.int64), gt[:, 4].astype(np.int64)
        n_gt += np.bincount(gt_cls, minlength=nc)
        for c in np.unique(pred_cls):
            p = pred[pred_cls == c]
            p = p[np.argsort(-p[:, 4], kind="stable")]
            g = gt[gt_cls == c]
            tps[c].append(_match(box_iou(p[:, :4], g[:, :4]), thresholds))
            scores[c].append(p[:, 4])
    ap = np.full((nc, n_thr), np.nan)
    n_pred = np.zeros(nc, np.int64)
    for c in range(nc):
        tp = np.concatenate(tps[c]) if tps[c] else np.zeros((0, n_thr), bool)
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        n_pred[c] = len(s)
        ap[c] = _average_precision(tp, np.argsort(-s, kind="stable"), int(n_gt[c]))
    has_gt = n_gt > 0
    per_class = {
        int(c): ClassAP(ap50=float(ap[c, 0]), ap50_95=float(ap[c].mean()), n_gt=int(n_gt[c]))
        for c in np.flatnonzero(has_gt)
    }
    if has_gt.any():
        map50, map50_95 = float(ap[has_gt, 0].mean()), float(ap[has_gt].mean())
    else:
        map50 = map50_95 = math.nan
    return EvalResult(
        map50=map50,
        map50_95=map50_95,
        per_class=per_class,
        n_images=len(predictions),
        ap=ap,
        n_gt=n_gt,
        n_pred=n_pred,
    )


def _class_name(names: Sequence[str] | Mapping[int, str], c: int) -> str:
    if isinstance(names, Mapping):
        return str(names.get(c, c))
    return names[c] if 0 <= c < len(names) else str(c)


def format_table(result: EvalResult, names: Sequence[str] | Mapping[int, str]) -> str:
    """A plain-text table: one row for all classes, then one per class with ground truth."""
    rows = [("class", "images", "boxes", "AP50", "AP50-95")]
    rows.append(
        ("all", str(result.n_images), str(int(result.n_gt.sum())), f"{result.map50:.4f}", f"{result.map50_95:.4f}")
    )
    for c, r in sorted(result.per_class.items()):
        rows.append((_class_name(names, c), "", str(r.n_gt), f"{r.ap50:.4f}", f"{r.ap50_95:.4f}"))
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if k == 0 else cell.rjust(w) for k, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join(lines)
