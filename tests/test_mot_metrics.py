"""CLEAR MOT and IDF1: small cases worked out by hand, and random sequences against py-motmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamdet.mot_metrics import MotAccumulator, mot_scores


def box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> list[float]:
    return [x, y, x + w, y + h]


def boxes(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float64).reshape(-1, 4)


def test_perfect_tracking() -> None:
    seq = [(boxes(box(0, 0), box(50, 0)), [7, 8], boxes(box(0, 0), box(50, 0)), [1, 2]) for _ in range(3)]
    s = mot_scores(seq)
    assert (s.mota, s.idf1, s.id_switches, s.fp, s.fn, s.idtp, s.num_gt, s.num_pred, s.frames) == (
        1.0,
        1.0,
        0,
        0,
        0,
        6,
        6,
        6,
        3,
    )
    assert s.id_switches_per_100_gt == 0.0


def test_one_id_switch() -> None:
    # object 1 is followed by track 10 for two frames, then by track 11 for two
    seq = [(boxes(box(5 * f, 0)), [1], boxes(box(5 * f, 0)), [10 if f < 2 else 11]) for f in range(4)]
    s = mot_scores(seq)
    assert s.id_switches == 1 and s.fp == 0 and s.fn == 0
    assert s.mota == pytest.approx(1 - 1 / 4)
    assert s.idtp == 2 and s.idf1 == pytest.approx(2 * 2 / (4 + 4))
    assert s.id_switches_per_100_gt == pytest.approx(25.0)


def test_misses_and_false_positives() -> None:
    seq = [
        (boxes(box(0, 0), box(50, 0)), [1, 2], boxes(box(0, 0), box(50, 0), box(100, 100)), [1, 2, 3]),
        (boxes(box(0, 0), box(50, 0)), [1, 2], boxes(box(0, 0)), [1]),  # object 2 missed
        (boxes(box(0, 0)), [1], boxes(box(30, 30)), [1]),  # the track is far off: one miss and one FP
    ]
    s = mot_scores(seq)
    assert (s.fn, s.fp, s.id_switches, s.num_gt, s.num_pred) == (2, 2, 0, 5, 5)
    assert s.mota == pytest.approx(1 - 4 / 5)
    assert s.idtp == 3 and s.idf1 == pytest.approx(2 * 3 / (5 + 5))


def test_match_needs_iou_of_one_half() -> None:
    gt = boxes(box(0, 0))
    at_half = mot_scores([(gt, [1], boxes(box(0, 0, 10, 5)), [1])])  # IoU exactly 0.5
    below = mot_scores([(gt, [1], boxes(box(0, 0, 10, 4.9)), [1])])
    assert (at_half.fn, at_half.fp, at_half.idtp) == (0, 0, 1)
    assert (below.fn, below.fp, below.idtp) == (1, 1, 0)


def test_an_earlier_match_is_kept_over_a_better_overlap() -> None:
    acc = MotAccumulator()
    acc.update(boxes(box(0, 0)), [1], boxes(box(0, 0)), [1])
    # track 2 overlaps better now, but track 1 still overlaps enough: no switch, track 2 is a FP
    acc.update(boxes(box(0, 0)), [1], boxes(box(2, 0), box(0, 0.2)), [1, 2])
    s = acc.scores()
    assert (s.id_switches, s.fp, s.fn) == (0, 1, 0)


def test_switch_is_against_the_last_match_even_after_a_gap() -> None:
    gt = boxes(box(0, 0))
    back_to_same = mot_scores([(gt, [1], gt, [1]), (gt, [1], boxes(), []), (gt, [1], gt, [1])])
    to_other = mot_scores([(gt, [1], gt, [1]), (gt, [1], boxes(), []), (gt, [1], gt, [2])])
    assert back_to_same.id_switches == 0 and to_other.id_switches == 1
    # switching back to the first track is a second switch
    again = mot_scores([(gt, [1], gt, [1]), (gt, [1], gt, [2]), (gt, [1], gt, [1])])
    assert again.id_switches == 2


def test_idf1_pairs_ids_globally() -> None:
    # object 1: track 1 for three frames, then track 2; object 2: track 2 for three frames, then track 3
    a, b = box(0, 0), box(50, 0)
    seq = [(boxes(a, b), [1, 2], boxes(a, b), [1, 2])] * 3 + [(boxes(a, b), [1, 2], boxes(a, b), [2, 3])]
    s = mot_scores(seq)
    assert s.idtp == 6  # 1<->1 (3 frames), 2<->2 (3 frames); track 3 and object 1's last frame unpaired
    assert s.idf1 == pytest.approx(2 * 6 / 16) and s.id_switches == 2


def test_no_ground_truth_gives_nan_scores() -> None:
    s = mot_scores([(boxes(), [], boxes(box(0, 0)), [1])])
    assert math.isnan(s.mota) and math.isnan(s.id_switches_per_100_gt)
    assert s.idf1 == 0.0 and s.fp == 1 and s.frames == 1
    empty = MotAccumulator().scores()
    assert empty.frames == 0 and math.isnan(empty.idf1)


def test_bad_input() -> None:
    acc = MotAccumulator()
    with pytest.raises(ValueError, match="1 ids for 2 boxes"):
        acc.update(boxes(box(0, 0), box(9, 9)), [1], boxes(), [])
    with pytest.raises(ValueError, match="unique"):
        acc.update(boxes(), [], boxes(box(0, 0), box(9, 9)), [4, 4])
    with pytest.raises(ValueError, match="integers"):
        acc.update(boxes(box(0, 0)), [1.5], boxes(), [])


# --- against py-motmetrics on random sequences -------------------------------------------------


def _iou_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain IoU, pair by pair (independent of the implementation under test)."""
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def _random_sequence(seed: int, frames: int = 60) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Objects that come and go and move with noise; a noisy tracker: misses, FPs, id swaps, new ids."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    pos = rng.uniform(0, 200, (n, 2))
    vel = rng.normal(0, 3, (n, 2))
    size = rng.uniform(15, 40, (n, 2))
    present = rng.random(n) < 0.8
    track_of = np.arange(n) + 100  # the tracker's id for each object, changed at random
    next_track = 200
    seq = []
    for _ in range(frames):
        pos += vel + rng.normal(0, 1, (n, 2))
        present ^= rng.random(n) < 0.05  # objects leave and come back
        gt_rows = np.flatnonzero(present)
        gt = np.column_stack([pos[gt_rows], pos[gt_rows] + size[gt_rows]])
        if rng.random() < 0.1 and n >= 2:  # two tracks trade objects
            i, j = rng.choice(n, 2, replace=False)
            track_of[[i, j]] = track_of[[j, i]]
        if rng.random() < 0.05:  # a track is lost and a new one takes over
            track_of[rng.integers(n)] = next_track
            next_track += 1
        seen = gt_rows[rng.random(len(gt_rows)) > 0.15]  # misses
        jitter = rng.normal(0, 3, (len(seen), 4))  # some boxes fall below IoU 0.5
        pred = np.column_stack([pos[seen], pos[seen] + size[seen]]) + jitter
        pred_ids = track_of[seen]
        n_fp = int(rng.poisson(0.7))
        fp = np.column_stack([rng.uniform(0, 250, (n_fp, 2))] * 2) + np.column_stack(
            [np.zeros((n_fp, 2)), rng.uniform(10, 40, (n_fp, 2))]
        )
        pred = np.concatenate([pred, fp])
        pred_ids = np.concatenate([pred_ids, np.arange(n_fp) + 10_000 + 10 * len(seq)])
        seq.append((gt, gt_rows.astype(np.int64), pred, pred_ids.astype(np.int64)))
    return seq


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_py_motmetrics(seed: int) -> None:
    mm = pytest.importorskip("motmetrics")
    seq = _random_sequence(seed)
    acc = mm.MOTAccumulator(auto_id=True)
    for gt, gt_ids, pred, pred_ids in seq:
        iou = _iou_loop(gt, pred)
        acc.update(gt_ids, pred_ids, np.where(iou >= 0.5, 1.0 - iou, np.nan))
    names = ["mota", "idf1", "num_switches", "num_false_positives", "num_misses", "idtp", "num_objects"]
    ref = mm.metrics.create().compute(acc, metrics=names, name="seq").iloc[0]
    ours = mot_scores(seq)
    assert ref["num_switches"] > 0 and ref["num_false_positives"] > 0 and ref["num_misses"] > 0
    assert ours.num_gt == ref["num_objects"]
    assert ours.id_switches == ref["num_switches"]
    assert ours.fp == ref["num_false_positives"] and ours.fn == ref["num_misses"]
    assert ours.idtp == pytest.approx(ref["idtp"])
    assert ours.mota == pytest.approx(ref["mota"], abs=1e-12)
    assert ours.idf1 == pytest.approx(ref["idf1"], abs=1e-12)
