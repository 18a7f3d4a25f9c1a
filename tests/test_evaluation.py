"""COCO-style mAP: hand-computed cases and a randomised cross-check against a naive implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamdet.evaluation import ClassAP, box_iou, evaluate, format_table

SQ = [0.0, 0.0, 100.0, 100.0]


def gt(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 5)


def pred(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 6)


def test_iou_continuous_boxes() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10], [0, 0, 0, 0]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0, 0.0]])


def test_perfect_predictions() -> None:
    g = [gt([*SQ, 0], [200, 200, 260, 240, 1]), gt([10, 10, 30, 50, 1])]
    p = [pred([*SQ, 0.9, 0], [200, 200, 260, 240, 0.8, 1]), pred([10, 10, 30, 50, 0.7, 1])]
    r = evaluate(p, g, nc=2)
    assert r.map50 == 1.0 and r.map50_95 == 1.0 and r.n_images == 2
    assert r.per_class == {0: ClassAP(1.0, 1.0, 1), 1: ClassAP(1.0, 1.0, 2)}


def test_false_positive_ranked_above_true_positive() -> None:
    # one GT; a FP (score 0.9) then the TP (0.8): recall [0, 1], precision [0, 1/2], envelope [1/2, 1/2]
    # -> every one of the 101 recall points reads 1/2.
    r = evaluate([pred([300, 300, 350, 350, 0.9, 0], [*SQ, 0.8, 0])], [gt([*SQ, 0])], nc=1)
    assert r.map50 == 0.5 and r.map50_95 == 0.5
    # two GT; TP (0.9), FP (0.8), TP (0.7): recall [1/2, 1/2, 1], precision [1, 1/2, 2/3],
    # envelope [1, 2/3, 2/3]; recall points 0.00..0.50 (51) read 1, 0.51..1.00 (50) read 2/3.
    g = gt([*SQ, 0], [200, 0, 300, 100, 0])
    p = pred([*SQ, 0.9, 0], [500, 500, 550, 550, 0.8, 0], [200, 0, 300, 100, 0.7, 0])
    r = evaluate([p], [g], nc=1)
    assert r.map50 == pytest.approx((51 * 1 + 50 * (2 / 3)) / 101, abs=1e-12)
    assert r.map50 == pytest.approx(0.834983498349835, abs=1e-12)


@pytest.mark.parametrize(
    ("height", "ap50", "ap50_95"),
    [
        (49.9, 0.0, 0.0),  # IoU 0.499
        (50.0, 1.0, 0.1),  # IoU exactly 0.5: a match (IoU >= threshold)
        (50.1, 1.0, 0.1),
        (74.9, 1.0, 0.5),  # thresholds 0.50 .. 0.70
        (75.1, 1.0, 0.6),  # .. 0.75
        (94.9, 1.0, 0.9),
        (95.1, 1.0, 1.0),
    ],
)
def test_iou_just_below_and_above_thresholds(height: float, ap50: float, ap50_95: float) -> None:
    r = evaluate([pred([0, 0, 100, height, 0.5, 0])], [gt([*SQ, 0])], nc=1)
    assert r.map50 == ap50
    assert r.map50_95 == pytest.approx(ap50_95, abs=1e-12)
    assert r.ap[0].tolist() == [1.0] * round(ap50_95 * 10) + [0.0] * (10 - round(ap50_95 * 10))


def test_duplicate_detection_is_a_false_positive() -> None:
    # GT A and B; detections A (0.9), A again (0.8), B (0.7): the duplicate is a FP ranked above a TP,
    # so the same precision/recall as TP, FP, TP above.
    g = gt([*SQ, 0], [200, 0, 300, 100, 0])
    p = pred([*SQ, 0.9, 0], [1, 1, 100, 100, 0.8, 0], [200, 0, 300, 100, 0.7, 0])
    r = evaluate([p], [g], nc=1)
    assert r.map50 == pytest.approx((51 + 50 * (2 / 3)) / 101, abs=1e-12)
    # a duplicate after full recall costs nothing (the envelope is taken at recall 1)
    r = evaluate([pred([*SQ, 0.9, 0], [*SQ, 0.8, 0])], [gt([*SQ, 0])], nc=1)
    assert r.map50 == 1.0


def test_multiple_classes_and_class_without_ground_truth() -> None:
    g = [gt([*SQ, 0], [200, 0, 300, 100, 1])]
    p = [
        pred(
            [*SQ, 0.9, 0],  # class 0: perfect
            [500, 500, 560, 560, 0.95, 1],  # class 1: FP above its TP -> 0.5
            [200, 0, 300, 100, 0.6, 1],
            [200, 0, 300, 100, 0.99, 0],  # class 1 box labelled class 0: a FP of class 0
            [10, 10, 20, 20, 0.9, 2],  # class 2 has no GT: excluded from the mean
        )
    ]
    r = evaluate(p, g, nc=3)
    assert r.per_class[0] == ClassAP(0.5, 0.5, 1)  # the wrong-class box (0.99) is a FP ranked first
    assert r.per_class[1] == ClassAP(0.5, 0.5, 1)
    assert 2 not in r.per_class and np.isnan(r.ap[2]).all()
    assert r.map50 == 0.5 and r.map50_95 == 0.5
    assert r.n_gt.tolist() == [1, 1, 0] and r.n_pred.tolist() == [2, 2, 1]
    table = format_table(r, ["circle", "square", "triangle"])
    assert "circle" in table and "square" in table and "triangle" not in table
    assert table.splitlines()[1].split() == ["all", "1", "2", "0.5000", "0.5000"]


def test_empty_predictions_and_images_without_ground_truth() -> None:
    r = evaluate([pred(), pred()], [gt([*SQ, 0]), gt()], nc=2)
    assert r.map50 == 0.0 and r.map50_95 == 0.0 and list(r.per_class) == [0]
    # a detection on an image with no GT is a FP; ranked above the TP it halves AP
    r = evaluate([pred([*SQ, 0.5, 0]), pred([*SQ, 0.9, 0]), pred()], [gt([*SQ, 0]), gt(), gt()], nc=1)
    assert r.map50 == 0.5 and r.n_images == 3
    r = evaluate([pred([*SQ, 0.9, 0])], [gt()], nc=1)
    assert math.isnan(r.map50) and r.per_class == {}


def test_input_validation() -> None:
    with pytest.raises(ValueError, match="prediction arrays"):
        evaluate([pred()], [], nc=1)
    with pytest.raises(ValueError, match="class id"):
        evaluate([pred([*SQ, 0.9, 3])], [gt()], nc=2)
    with pytest.raises(ValueError, match="shape"):
        evaluate([np.zeros((2, 5))], [gt()], nc=2)


# --- randomised cross-check -------------------------------------------------------------------


def _naive_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _naive_ap(preds: list[np.ndarray], gts: list[np.ndarray], c: int, t: float) -> float | None:
    """Straight from the definition, one class and one threshold, in plain Python."""
    n_gt = sum(int((g[:, 4] == c).sum()) for g in gts)
    if n_gt == 0:
        return None
    scored: list[tuple[float, bool]] = []
    for p, g in zip(preds, gts, strict=True):
        dets = sorted([row.tolist() for row in p if row[5] == c], key=lambda d: -d[4])
        truth = [row.tolist() for row in g if row[4] == c]
        used = [False] * len(truth)
        for d in dets:
            best, best_j = -1.0, -1
            for j, tb in enumerate(truth):
                iou = _naive_iou(d[:4], tb[:4])
                if not used[j] and iou >= t and iou > best:
                    best, best_j = iou, j
            if best_j >= 0:
                used[best_j] = True
            scored.append((d[4], best_j >= 0))
    scored.sort(key=lambda s: -s[0])
    precision, recall, tp = [], [], 0
    for k, (_, is_tp) in enumerate(scored, start=1):
        tp += is_tp
        precision.append(tp / k)
        recall.append(tp / n_gt)
    for k in range(len(precision) - 2, -1, -1):
        precision[k] = max(precision[k], precision[k + 1])
    total = 0.0
    for r in np.linspace(0, 1, 101):
        total += next((precision[k] for k in range(len(recall)) if recall[k] >= r), 0.0)
    return total / 101


def test_random_cross_check_against_naive_implementation() -> None:
    rng = np.random.default_rng(1234)
    nc = 3
    for _ in range(6):
        preds, gts = [], []
        for _ in range(int(rng.integers(1, 6))):
            m = int(rng.integers(0, 6))
            xy = rng.uniform(0, 200, (m, 2))
            wh = rng.uniform(10, 80, (m, 2))
            g = np.column_stack([xy, xy + wh, rng.integers(0, nc, m)])
            rows = []
            for box in g:  # jittered copies (varied IoU), sometimes with a duplicate or a wrong class
                for _ in range(int(rng.integers(0, 3))):
                    size = np.r_[box[2:4] - box[:2], box[2:4] - box[:2]]
                    jit = box[:4] + rng.normal(0, 0.15, 4) * size * rng.uniform(0, 1)
                    cls = box[4] if rng.random() < 0.85 else rng.integers(0, nc)
                    rows.append([*jit[:2], *np.maximum(jit[2:], jit[:2] + 1), rng.random(), cls])
            for _ in range(int(rng.integers(0, 4))):  # background false positives
                x, y = rng.uniform(0, 250, 2)
                rows.append([x, y, x + rng.uniform(5, 50), y + rng.uniform(5, 50), rng.random(), rng.integers(0, nc)])
            p = np.array(rows, np.float64).reshape(-1, 6)
            p[:, 4] = np.round(p[:, 4], 1)  # score ties: both implementations break them stably
            preds.append(p)
            gts.append(g.reshape(-1, 5))
        r = evaluate(preds, gts, nc)
        thresholds = np.linspace(0.5, 0.95, 10)
        means = []
        for c in range(nc):
            naive = [_naive_ap(preds, gts, c, t) for t in thresholds]
            if naive[0] is None:
                assert c not in r.per_class
                continue
            np.testing.assert_allclose(r.ap[c], naive, atol=1e-12)
            means.append(naive)
        if means:
            assert r.map50 == pytest.approx(np.mean([m[0] for m in means]), abs=1e-12)
            assert r.map50_95 == pytest.approx(np.mean(means), abs=1e-12)
