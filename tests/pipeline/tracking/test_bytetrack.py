"""The ByteTrack-style tracker: association, the low-score stage, lost tracks, ids, classes, predict()."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.pipeline.tracking import Tracker, TrackerSettings


def det(cx: float, cy: float, score: float = 0.9, cls: int = 0, size: float = 40.0) -> list[float]:
    """One detection row: a size x size box centred at (cx, cy)."""
    h = size / 2
    return [cx - h, cy - h, cx + h, cy + h, score, cls]


def frame(*rows: list[float]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(-1, 6)


def ids_by_class(out: np.ndarray) -> dict[int, int]:
    return {int(r[5]): int(r[6]) for r in out}


def test_output_rows_are_the_detections_with_their_ids() -> None:
    t = Tracker()
    dets = frame(det(100, 100, 0.8, 0), det(300, 100, 0.7, 1), det(500, 100, 0.05, 2))  # the last below low
    out = t.update(dets)
    assert out.dtype == np.float64 and out.shape == (2, 7)
    assert np.array_equal(out[:, :6], dets[:2])
    assert out[:, 6].tolist() == [1.0, 2.0]


def test_crossing_objects_keep_their_ids() -> None:
    t = Tracker()
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for f in range(60):
        a = det(40 + 6 * f, 100)  # rightwards
        b = det(400 - 6 * f, 108)  # leftwards, same class, crossing a near f = 30
        out = t.update(frame(a, b))
        assert len(out) == 2
        assert np.array_equal(out[:, :6], frame(a, b))  # rows come in the input order
        seen["a"].add(int(out[0, 6]))
        seen["b"].add(int(out[1, 6]))
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1 and seen["a"] != seen["b"]


def test_swapped_input_order_does_not_swap_ids() -> None:
    t = Tracker()
    first = t.update(frame(det(100, 100), det(300, 300, size=60)))
    out = t.update(frame(det(302, 301, size=60), det(101, 99)))
    assert out[:, 6].tolist() == first[::-1, 6].tolist() == [2.0, 1.0]


def test_low_score_detections_carry_a_track_through_a_score_dip() -> None:
    t = Tracker()
    ids, dip_rows = set(), 0
    for f in range(30):
        score = 0.3 if 10 <= f < 16 else 0.9
        out = t.update(frame(det(50 + 5 * f, 200, score)))
        assert len(out) == 1
        ids.add(int(out[0, 6]))
        dip_rows += int(out[0, 4] == np.float32(0.3))
    assert ids == {1} and dip_rows == 6
    # without the second stage (low_thresh == high_thresh) the dip frames lose the object
    t = Tracker(TrackerSettings(low_thresh=0.5))
    outs = [t.update(frame(det(50 + 5 * f, 200, 0.3 if 10 <= f < 16 else 0.9))) for f in range(30)]
    assert [len(o) for o in outs[10:16]] == [0] * 6 and int(outs[-1][0, 6]) == 1


def test_low_score_detections_neither_start_nor_revive_tracks() -> None:
    t = Tracker()
    assert len(t.update(frame(det(100, 100, 0.4)))) == 0 and t.num_tracks == 0
    for _ in range(3):
        t.update(frame(det(300, 300, 0.9)))
    t.update(frame())  # the track is lost
    assert len(t.update(frame(det(300, 300, 0.4)))) == 0  # a lost track is not matched by a low score
    out = t.update(frame(det(300, 300, 0.9)))
    assert out[:, 6].tolist() == [1.0]


def test_lost_track_is_refound_within_lost_frames() -> None:
    lost_frames = 5
    t = Tracker(TrackerSettings(lost_frames=lost_frames))
    x = 100.0
    for _ in range(15):
        out = t.update(frame(det(x, 150)))
        x += 4
    first_id = int(out[0, 6])
    for _ in range(lost_frames):  # gone for lost_frames frames; the filter carries the box on
        assert len(t.update(frame())) == 0
        x += 4
    assert t.num_tracks == 1
    out = t.update(frame(det(x, 150)))
    assert out[:, 6].tolist() == [first_id]


def test_track_removed_after_lost_frames_and_its_id_not_reused() -> None:
    lost_frames = 5
    t = Tracker(TrackerSettings(lost_frames=lost_frames))
    for _ in range(10):
        out = t.update(frame(det(100, 150)))
    old_id = int(out[0, 6])
    for _ in range(lost_frames + 1):
        t.update(frame())
    assert t.num_tracks == 0
    t.update(frame(det(100, 150)))  # tentative: a new object needs min_hits = 2 frames
    out = t.update(frame(det(100, 150)))
    assert len(out) == 1 and int(out[0, 6]) > old_id


def test_ids_are_never_reused_also_across_reset() -> None:
    t = Tracker(TrackerSettings(min_hits=1))
    seen: list[int] = []
    for _ in range(3):
        for f in range(4):
            out = t.update(frame(det(100 + 3 * f, 100), det(400, 300 + 2 * f, cls=1)))
            assert len(out) == 2
        seen.extend(int(i) for i in out[:, 6])
        t.reset()
        assert t.num_tracks == 0
    assert seen == [1, 2, 3, 4, 5, 6]


def test_a_new_object_is_confirmed_after_min_hits_except_in_the_first_frame() -> None:
    t = Tracker(TrackerSettings(min_hits=3))
    assert len(t.update(frame(det(100, 100)))) == 1  # objects at start-up are reported at once
    outs = [t.update(frame(det(100, 100), det(400, 400, cls=2))) for _ in range(3)]
    assert [len(o) for o in outs] == [1, 1, 2]
    # a detection seen once is never reported, and a tentative track missing a frame is dropped
    t.update(frame(det(100, 100), det(400, 400, cls=2), det(700, 100)))
    assert t.num_tracks == 3
    t.update(frame(det(100, 100), det(400, 400, cls=2)))
    assert t.num_tracks == 2


def test_matching_is_per_class() -> None:
    t = Tracker(TrackerSettings(min_hits=1))
    # two objects of different classes overlapping at IoU 0.33, below duplicate_iou: two tracks
    out = t.update(frame(det(100, 100, cls=0), det(120, 100, cls=1)))
    ids = ids_by_class(out)
    assert len(set(ids.values())) == 2
    for f in range(1, 6):  # they move apart and back; each keeps its id, whatever the input order
        out = t.update(frame(det(120 + f, 100, cls=1), det(100 - f, 100, cls=0)))
        assert ids_by_class(out) == ids
    # a third class where both are matched, overlapping one at IoU 0.33: another object
    out = t.update(frame(det(95, 100, cls=0), det(125, 100, cls=1), det(75, 100, cls=2)))
    assert len(out) == 3 and int(out[2, 6]) not in ids.values()


def test_an_object_reported_as_another_class_keeps_its_track() -> None:
    # per-class NMS reports an unclear object as class 0 in one frame and class 1 in the next, or
    # as both at once: it keeps one id, and the second box starts no second track
    t = Tracker()
    for f in range(5):
        out = t.update(frame(det(100 + 4 * f, 200, cls=0)))
    first = int(out[0, 6])
    for f in range(5, 25):
        x = 100 + 4 * f
        rows = [det(x, 200, 0.6, cls=f % 2)]  # the class flips every frame
        if f % 3 == 0:
            rows.append(det(x + 1, 201, 0.55, cls=1 - f % 2))  # both classes at once
        out = t.update(frame(*rows))
        assert out[:, 6].tolist() == [first], f
        assert t.num_tracks == 1
    # a low-score detection of another class keeps a tracked track alive too
    out = t.update(frame(det(200, 200, 0.3, cls=2)))
    assert out[:, 6].tolist() == [first]


def test_a_new_object_reported_as_two_classes_starts_one_track() -> None:
    t = Tracker(TrackerSettings(min_hits=1))
    t.update(frame(det(500, 500)))
    out = t.update(frame(det(500, 500), det(100, 100, 0.7, cls=1), det(102, 101, 0.9, cls=2)))
    assert t.num_tracks == 2
    assert len(out) == 2 and out[1, 5] == 2  # the better-scoring of the two is the one kept


def test_a_detection_of_another_class_overlapping_less_than_duplicate_iou_is_not_matched() -> None:
    t = Tracker(TrackerSettings(min_hits=1))
    for _ in range(3):
        t.update(frame(det(100, 100, cls=0)))
    out = t.update(frame(det(120, 100, cls=1)))  # IoU 0.33 with the track's box
    assert out[:, 6].tolist() == [2.0]
    t = Tracker(TrackerSettings(min_hits=1, duplicate_iou=0.3))
    for _ in range(3):
        t.update(frame(det(100, 100, cls=0)))
    assert t.update(frame(det(120, 100, cls=1)))[:, 6].tolist() == [1.0]


def test_predict_moves_boxes_by_the_velocity() -> None:
    t = Tracker()
    v = np.array([5.0, -3.0])
    for f in range(30):
        out = t.update(frame(det(100 + v[0] * f, 300 + v[1] * f, 0.8)))
    last = out[0].copy()
    for k in range(1, 4):
        pred = t.predict()
        assert pred.shape == (1, 7) and pred.dtype == np.float64
        assert pred[0, :4] == pytest.approx(last[:4] + np.tile(v, 2) * k, abs=0.3)
        assert pred[0, 4:].tolist() == pytest.approx([0.8, 0.0, last[6]])
    # the next detections land where the prediction went: same id
    out = t.update(frame(det(100 + v[0] * 33, 300 + v[1] * 33)))
    assert out[0, 6] == last[6]
    # lost tracks are not predicted as present
    t.update(frame())
    assert t.predict().shape == (0, 7)


def test_detect_every_third_frame_keeps_ids_and_predicts_between() -> None:
    t = Tracker()
    for f in range(45):
        a, b = (80 + 7 * f, 100), (600 - 7 * f, 130)
        if f % 3 == 0:
            out = t.update(frame(det(*a), det(*b, cls=0)))
        else:
            out = t.predict()
            if f > 6:  # after two detector runs the velocity is known
                assert out[:, :2].mean(axis=0) == pytest.approx([(a[0] + b[0]) / 2 - 20, 95], abs=3)
        assert sorted(int(i) for i in out[:, 6]) == [1, 2]


def test_predict_frames_count_as_lost_frames() -> None:
    t = Tracker(TrackerSettings(lost_frames=3))
    for _ in range(3):
        t.update(frame(det(100, 100)))
    t.update(frame())  # lost, 1 frame unmatched
    t.predict()
    t.predict()  # 3 frames unmatched: kept
    assert t.num_tracks == 1
    t.predict()  # 4: removed
    assert t.num_tracks == 0


def test_bad_detections() -> None:
    t = Tracker()
    with pytest.raises(ValueError, match=r"\(n, 6\)"):
        t.update(np.zeros((3, 5), np.float32))
    bad = frame(det(100, 100), [np.nan, 0, 10, 10, 0.9, 0], [50, 50, 40, 60, 0.9, 0])  # NaN, empty box
    out = t.update(bad)
    assert len(out) == 1 and t.num_tracks == 1
    assert t.update(np.zeros((0,), np.float32)).shape == (0, 7)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"high_thresh": 1.5}, "high_thresh"),
        ({"high_thresh": float("nan")}, "high_thresh"),
        ({"low_thresh": -0.1}, "low_thresh"),
        ({"low_thresh": 0.6, "high_thresh": 0.5}, "low_thresh"),
        ({"match_iou": 0.0}, "match_iou"),
        ({"match_iou": True}, "match_iou"),
        ({"new_track_thresh": 0.4}, "new_track_thresh"),
        ({"new_track_thresh": 2.0}, "new_track_thresh"),
        ({"lost_frames": -1}, "lost_frames"),
        ({"lost_frames": 2.0}, "lost_frames"),
        ({"min_hits": 0}, "min_hits"),
        ({"duplicate_iou": 0.0}, "duplicate_iou"),
        ({"duplicate_iou": 1.5}, "duplicate_iou"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrackerSettings(**kwargs)  # type: ignore[arg-type]


def test_new_track_thresh_defaults_to_high_thresh() -> None:
    assert TrackerSettings(high_thresh=0.6).start_thresh == 0.6
    t = Tracker(TrackerSettings(new_track_thresh=0.8))
    assert len(t.update(frame(det(100, 100, 0.7), det(300, 100, 0.85)))) == 1


def test_a_small_fast_object_is_tracked_when_the_detector_skips_frames() -> None:
    # 30 px wide, 9 px per frame on each axis: after three frames it no longer overlaps its first box
    t = Tracker()
    ids = set()
    for f in range(30):
        out = t.update(frame(det(100 + 9 * f, 100 + 9 * f, size=30))) if f % 3 == 0 else t.predict()
        assert len(out) == 1
        ids.add(int(out[0, 6]))
    assert ids == {1}


def test_a_bouncing_object_keeps_its_id() -> None:
    t = Tracker()
    ids = set()
    x = 100.0
    for f in range(40):
        x += 8 if f < 20 else -8  # turns back at once, as the shapes clips' objects do at the edges
        out = t.update(frame(det(x, 200, size=40))) if f % 3 == 0 else t.predict()
        ids.update(int(i) for i in out[:, 6])
    assert ids == {1}


def test_a_nearby_detection_restarts_a_track_but_a_far_one_is_a_new_object() -> None:
    t = Tracker()
    for _ in range(5):
        t.update(frame(det(200, 200)))
    t.update(frame())
    out = t.update(frame(det(225, 200)))  # IoU with the box 0.23, below match_iou, but within the gate
    assert out[:, 6].tolist() == [1.0]
    # lost for more than three detector runs: no longer restarted; the jump makes a new object
    t = Tracker()
    for _ in range(5):
        t.update(frame(det(200, 200)))
    for _ in range(4):
        t.update(frame())
    t.update(frame(det(225, 200)))
    assert t.update(frame(det(225, 200)))[:, 6].tolist() == [2.0]
    t.update(frame(det(900, 600)))  # far away: a new object, whatever the gate
    assert sorted(t.update(frame(det(225, 200), det(900, 600)))[:, 6].tolist()) == [2.0, 3.0]


def test_duplicate_iou_one_keeps_classes_apart() -> None:
    """A person getting on a bicycle: heavily overlapping boxes of two classes. With the default they
    are one object (the second class starts no track); with duplicate_iou 1 each gets its own track."""
    bike = det(200, 200, 0.9, cls=1, size=60)
    person = det(205, 195, 0.9, cls=0, size=60)  # IoU about 0.72 with the bicycle
    merged, apart = Tracker(TrackerSettings(min_hits=1)), Tracker(TrackerSettings(min_hits=1, duplicate_iou=1.0))
    for t in (merged, apart):
        t.update(frame(bike))
        t.update(frame(bike))
    both = frame(bike, person)
    assert sorted(ids_by_class(apart.update(both))) == [0, 1] and apart.num_tracks == 2
    assert merged.update(both).shape[0] == 1 and merged.num_tracks == 1


def test_a_box_off_a_steady_tracks_course_goes_to_the_lost_track_it_overlaps() -> None:
    """Two same-class objects side by side; B is hidden for two frames, then reappears a little
    towards A. Its box overlaps A's predicted box more (IoU 0.51) than B's (0.40), but A has stood
    still for 20 frames: a 13 px jump is far outside A's Kalman gate, so the box is B's."""
    t = Tracker()
    for _ in range(20):
        assert t.update(frame(det(100, 100), det(130, 100)))[:, 6].tolist() == [1.0, 2.0]
    for _ in range(2):
        t.update(frame(det(100, 100)))  # B hidden
    assert t.update(frame(det(113, 100)))[:, 6].tolist() == [2.0]
    assert t.update(frame(det(100, 100), det(118, 100)))[:, 6].tolist() == [1.0, 2.0]


def test_a_dim_fast_object_keeps_its_track_between_detector_runs() -> None:
    """Born at a high score, then only low scores, moving more than its size between detector runs:
    its boxes never overlap the track's prediction before the velocity is known, but lie within the
    Kalman gate of the new track (wide: the velocity is unknown), and later within the learnt one."""
    t = Tracker()
    outs = []
    for f in range(30):
        if f % 3 == 0:
            outs.append(t.update(frame(det(100 + 15 * f, 200, 0.9 if f == 0 else 0.3, size=40))))
        else:
            t.predict()
    assert [o[:, 6].tolist() for o in outs] == [[1.0]] * 10
    assert t.num_tracks == 1
