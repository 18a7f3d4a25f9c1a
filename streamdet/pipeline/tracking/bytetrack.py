"""ByteTrack-style multi-object tracker of one camera: Kalman-predicted boxes, two-stage score matching.

Per frame with detections (:meth:`Tracker.update`), after every track's Kalman state is advanced
one frame:

1. detections with ``score >= high_thresh`` are matched to all confirmed tracks, tracked or lost;
2. detections with ``low_thresh <= score < high_thresh`` are matched to the confirmed tracks still
   unmatched that were tracked (not lost) in the previous frame: a detection whose score dipped
   keeps its track, while low-score clutter cannot revive lost tracks. Those left are then matched
   to the tracked tracks still unmatched by the Kalman filter's gate of their current state
   (Mahalanobis distance within the 95 % chi-square bound) instead of IoU: a dim small object that
   moves its own size between detector runs keeps its track while its velocity is still unknown
   (a new track's gate is wide) or once its track has learnt it, though its boxes no longer overlap;
3. the remaining high-score detections are matched to the tentative tracks (born in an earlier
   frame, not yet confirmed); a tentative track that misses a frame with detections is dropped;
4. the high-score detections still unmatched are matched to the unmatched tracks (confirmed, or
   tentative and matched in the previous detector run) that were lost for at most three detector
   runs, as if each track had started afresh at its last matched box with an unknown velocity:
   by the Kalman filter's gate (Mahalanobis distance within the 95 % chi-square bound) instead of
   IoU. A new object's velocity is unknown, and an object that turns or bounces leaves its
   predicted box; when the detector skips frames a small fast one has moved off both boxes by the
   time it runs again, and would otherwise get a new id. A track matched here restarts its motion
   from its last box (the velocity becomes the displacement since). The limit of three runs keeps
   the gate, which widens with the frames since the last match, from handing the id of an object
   gone for long to a new one far away;
5. the detections still unmatched are matched, whatever their class, to the confirmed tracks still
   unmatched (the high-score ones to tracked and lost tracks, the others to tracked ones) at
   ``IoU >= duplicate_iou`` with the predicted box: a detector that suppresses overlaps per class
   reports a small or unclear object as one class in one frame and another in the next (or as
   both in one frame), and the track must follow it; the track keeps its class;
6. the high-score detections still unmatched with ``score >= new_track_thresh`` start tentative
   tracks, confirmed after ``min_hits`` matches in a row (at once in the tracker's first frame,
   as ByteTrack does, so that objects present at start-up are reported from the first frame),
   except duplicates: a detection overlapping any track's box (where its detection is when it
   matched in this frame, else where predicted) or a better-scoring starter at ``IoU >=
   duplicate_iou``, whatever the classes, starts none, so that one object never gets two ids
   that take turns.

Each IoU stage is one assignment problem solved by :func:`scipy.optimize.linear_sum_assignment` over
cost ``1 - IoU`` with the predicted boxes, only between a detection and a track of the same class
and at ``IoU >= match_iou``; among the allowed pairs it finds the most matches, then the lowest
total cost. In stages 1 to 3 a track tracked in the previous detector run also needs the detection
within its Kalman gate: where two same-class objects overlap and one is hidden, the visible one's
box overlaps both predicted boxes, and IoU alone may hand it to the hidden object's track, which
then carries on as the other object; the gate, tight for a track whose motion the filter knows,
refuses a box that jumps off its course. A track refused this way is still unmatched for stage 4,
whose wider gate takes it back when the object has only turned. Lost tracks are matched by IoU
alone (their prediction is only a guess). The gated stages' cost is the Mahalanobis distance over
the bound. Confirmed tracks left unmatched become lost. A track may go ``lost_frames`` frames in
a row unmatched and still be matched in the next one (as ByteTrack's ``max_time_lost``); at the end
of a frame in which it has gone unmatched for more than that, it is removed.

Frames without a detector run (:meth:`Tracker.predict`) advance the Kalman states and report the
predicted boxes; they count as frames for the lost ageing.

Track ids start at 1, grow by one per new track and are never reused, also not across
:meth:`Tracker.reset`: one tracker per camera for the daemon's life keeps its ids unique. The
output is float64, which carries them exactly up to ``2**53`` (:data:`MAX_EXACT_ID`).

The tracks are kept as arrays (one row per track), so that a frame costs a fixed number of numpy
calls, not a Python loop over tracks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]  # scipy ships no type hints

from streamdet.evaluation import box_iou
from streamdet.pipeline.tracking.kalman import CHI2_95, KalmanBoxFilter, boxes_to_xyxy

__all__ = ["MAX_EXACT_ID", "Tracker", "TrackerSettings"]

MAX_EXACT_ID = 2**53  # float64 holds every integer up to here exactly: ids for the daemon's life
_NO_MATCH = -1
# Stage 4 takes tracks lost for at most this many detector runs (see the module doc)
_RESTART_RUNS = 3
# the per-track arrays of a Tracker, one row per track
_TRACK_ARRAYS = (
    "_ids",
    "_cls",
    "_score",
    "_mean",
    "_cov",
    "_runs_missed",
    "_confirmed",
    "_hits",
    "_last_box",
    "_missed",
)


def _check_fraction(name: str, value: object) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def _check_count(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class TrackerSettings:
    """Tracker thresholds; invalid values raise ValueError naming the field.

    ``high_thresh``: detections at or above it take part in the first stage and may start tracks;
    ``low_thresh``: detections below it are ignored, those between the two only keep tracks alive;
    ``match_iou``: the least IoU between a detection and a predicted box that may match;
    ``new_track_thresh``: the least score that starts a track (None: ``high_thresh``; not below it);
    ``lost_frames``: frames in a row a track may go unmatched and still be re-found; ``min_hits``:
    matches in a row that confirm a new track (1: report it from its first frame);
    ``duplicate_iou``: a detection left unmatched whose box overlaps a track's box at least this
    much is that track's object whatever its class (the module doc's stages 5 and 6): it may match
    the track when that is unmatched, and never starts another track.
    """

    high_thresh: float = 0.5
    low_thresh: float = 0.1
    match_iou: float = 0.3
    new_track_thresh: float | None = None
    lost_frames: int = 30
    min_hits: int = 2
    duplicate_iou: float = 0.5

    def __post_init__(self) -> None:
        _check_fraction("high_thresh", self.high_thresh)
        _check_fraction("low_thresh", self.low_thresh)
        if self.low_thresh > self.high_thresh:
            raise ValueError(f"low_thresh ({self.low_thresh}) must not exceed high_thresh ({self.high_thresh})")
        _check_fraction("match_iou", self.match_iou)
        if self.match_iou <= 0:
            raise ValueError(f"match_iou must be > 0 (a match needs some overlap), got {self.match_iou}")
        if self.new_track_thresh is not None:
            _check_fraction("new_track_thresh", self.new_track_thresh)
            if self.new_track_thresh < self.high_thresh:
                raise ValueError(
                    f"new_track_thresh ({self.new_track_thresh}) must not be below high_thresh ({self.high_thresh}):"
                    " only high-score detections start tracks"
                )
        _check_fraction("duplicate_iou", self.duplicate_iou)
        if self.duplicate_iou <= 0:
            raise ValueError(f"duplicate_iou must be > 0, got {self.duplicate_iou}")
        _check_count("lost_frames", self.lost_frames, 0)
        _check_count("min_hits", self.min_hits, 1)

    @property
    def start_thresh(self) -> float:
        """The score that starts a track: ``new_track_thresh``, or ``high_thresh`` when that is None."""
        return self.high_thresh if self.new_track_thresh is None else self.new_track_thresh


def _rows(mask: np.ndarray) -> np.ndarray:
    """Indices of the True entries of a 1-D mask (``np.flatnonzero`` without its Python-level
    wrappers: the matching stages call this a dozen times a frame)."""
    return mask.nonzero()[0]


def _assign(allowed: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal matching over the allowed pairs (costs in [0, 1]): (rows, cols) of the pairs chosen."""
    if not allowed.any():
        empty = np.zeros(0, np.intp)
        return empty, empty
    # A forbidden pair costs more than any set of allowed ones, so the solver first maximises the
    # number of allowed matches, then minimises their cost; then the forbidden pairs are dropped.
    forbidden_cost = 2.0 * min(allowed.shape) + 1.0
    rows, cols = linear_sum_assignment(np.where(allowed, cost, forbidden_cost))
    ok = allowed[rows, cols]
    return rows[ok], cols[ok]


class Tracker:
    """Multi-object tracker of one camera (see the module doc); not thread-safe."""

    def __init__(self, settings: TrackerSettings | None = None, kalman: KalmanBoxFilter | None = None) -> None:
        self.settings = settings if settings is not None else TrackerSettings()
        self._kf = kalman if kalman is not None else KalmanBoxFilter()
        self._next_id = 1
        self._clear()

    def _clear(self) -> None:
        self._ids = np.zeros(0, np.int64)
        self._cls = np.zeros(0, np.float32)
        self._score = np.zeros(0, np.float32)
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._runs_missed = np.zeros(0, np.int64)  # detector runs in a row without a match: 0 tracked, else lost
        self._confirmed = np.zeros(0, bool)
        self._hits = np.zeros(0, np.int64)  # matches in a row
        self._last_box = np.zeros((0, 4))  # the box of the last matched detection
        self._missed = np.zeros(0, np.int64)  # frames since the last match
        self._first_frame = True

    def reset(self) -> None:
        """Forget all tracks (a new stream); the id counter carries on, so ids are never reused."""
        self._clear()

    @property
    def num_tracks(self) -> int:
        """Tracks held now: confirmed (tracked or lost) and tentative."""
        return len(self._ids)

    def _keep(self, keep: np.ndarray) -> None:
        for name in _TRACK_ARRAYS:
            setattr(self, name, getattr(self, name)[keep])

    def _advance(self) -> None:
        """One frame passes: Kalman prediction of every track, one more frame since its last match."""
        self._first_frame = False
        if len(self._ids) == 0:
            return
        lost = self._runs_missed > 0
        if lost.any():  # an unseen object's size is held (ByteTrack), only its position moves on
            self._mean[lost, 6:8] = 0.0
        self._mean, self._cov = self._kf.predict(self._mean, self._cov)
        self._missed += 1

    def _expire(self) -> None:
        """End of a frame: remove the tracks unmatched for more than ``lost_frames`` frames."""
        expired = self._missed > self.settings.lost_frames
        if expired.any():
            self._keep(~expired)

    def predict(self) -> np.ndarray:
        """A frame without detections: advance every track; (m, 7) float64 predicted boxes of tracked tracks.

        Rows ``[x1, y1, x2, y2, score, cls, track_id]`` of the confirmed tracks not lost, in id order;
        score is each track's last detection score.
        """
        first = self._first_frame
        self._advance()
        self._expire()
        self._first_frame = first  # no detector ran: the first detections still start confirmed tracks
        show = self._confirmed & (self._runs_missed == 0)
        out = np.empty((int(show.sum()), 7), np.float64)
        out[:, :4] = boxes_to_xyxy(self._mean[show])
        out[:, 4] = self._score[show]
        out[:, 5] = self._cls[show]
        out[:, 6] = self._ids[show]
        return out

    def update(self, dets: np.ndarray) -> np.ndarray:
        """Track one frame's detections (n, 6) ``[x1, y1, x2, y2, score, cls]``; returns (m, 7) float64.

        Rows ``[x1, y1, x2, y2, score, cls, track_id]``: the detections (their boxes and scores) that
        matched a confirmed track in this frame, in the input order. Rows with a non-finite value or
        an empty box are ignored.
        """
        dets = np.asarray(dets, np.float32)
        if dets.size == 0:
            dets = dets.reshape(0, 6)
        if dets.ndim != 2 or dets.shape[1] != 6:
            raise ValueError(f"dets must be (n, 6) [x1, y1, x2, y2, score, cls], got shape {dets.shape}")
        s = self.settings
        first = self._first_frame
        self._advance()
        usable = (
            np.isfinite(dets).all(axis=1)
            & (dets[:, 4] >= s.low_thresh)
            & (dets[:, 2] > dets[:, 0])
            & (dets[:, 3] > dets[:, 1])
        )
        dets = dets[usable]
        boxes, scores = dets[:, :4].astype(np.float64), dets[:, 4]
        det_track, restart = self._associate(boxes, scores, dets[:, 5])
        track_hit = np.zeros(len(self._ids), bool)
        track_hit[det_track[det_track != _NO_MATCH]] = True

        # Kalman update of the matched tracks; those matched in stage 4 from their restarted state
        d = _rows(restart)
        self._mean[det_track[d]], self._cov[det_track[d]] = self._restarted(det_track[d])
        d = _rows(det_track != _NO_MATCH)
        rows = det_track[d]
        self._mean[rows], self._cov[rows] = self._kf.update(self._mean[rows], self._cov[rows], boxes[d])
        self._last_box[rows] = boxes[d]
        self._score[rows] = scores[d]
        self._missed[rows] = 0
        self._hits[rows] += 1
        self._hits[~track_hit] = 0
        self._runs_missed = np.where(track_hit, 0, self._runs_missed + 1)
        self._confirmed |= self._hits >= s.min_hits

        # drop tentative tracks that missed this frame and expired ones, then start tracks from the high leftovers
        keep = (self._confirmed | track_hit) & (self._missed <= s.lost_frames)
        if not keep.all():
            old_to_new = np.cumsum(keep) - 1
            self._keep(keep)
            det_track = np.where(det_track == _NO_MATCH, _NO_MATCH, old_to_new[det_track])
        born = self._unique(
            _rows((det_track == _NO_MATCH) & (scores >= s.high_thresh) & (scores >= s.start_thresh)),
            boxes, scores,
        )
        if len(born):
            det_track[born] = len(self._ids) + np.arange(len(born))
            self._add(boxes[born], scores[born], dets[born, 5], confirmed=first or s.min_hits <= 1)

        out_rows = _rows(det_track != _NO_MATCH)
        out_rows = out_rows[self._confirmed[det_track[out_rows]]]
        out = np.empty((len(out_rows), 7), np.float64)
        out[:, :6] = dets[out_rows]
        out[:, 6] = self._ids[det_track[out_rows]]
        return out

    def _unique(self, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The detections ``rows`` that may start tracks: not duplicates of a track or of a better one among them.

        A detection duplicates a track when its box overlaps the track's box (the detection matched
        in this frame, else the predicted box) at IoU >= ``duplicate_iou``, whatever the classes: a
        detector that suppresses overlaps per class reports one object as two classes, and the
        second box must not start a second track that then takes turns with the first.
        """
        if len(rows) == 0:
            return rows
        limit = self.settings.duplicate_iou
        if len(self._ids):  # a track matched in this frame is where its detection is, the others where predicted
            current = np.where((self._missed == 0)[:, None], self._last_box, boxes_to_xyxy(self._mean))
            rows = rows[box_iou(boxes[rows], current).max(axis=1) < limit]
        if len(rows) > 1:
            rows = rows[np.argsort(-scores[rows], kind="stable")]
            iou = box_iou(boxes[rows], boxes[rows])
            keep = np.ones(len(rows), bool)
            for i in range(1, len(rows)):
                keep[i] = not (iou[i, :i][keep[:i]] >= limit).any()
            rows = np.sort(rows[keep])
        return rows

    def _restarted(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Kalman states of tracks ``rows`` as if started at their last boxes and predicted to now."""
        return self._kf.initiate_ago(self._last_box[rows], self._missed[rows])

    def _associate(self, boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The matching stages of the module doc: per detection its track row (or -1) and whether it restarts."""
        s = self.settings
        det_track = np.full(len(boxes), _NO_MATCH, np.intp)
        restart = np.zeros(len(boxes), bool)
        track_hit = np.zeros(len(self._ids), bool)
        predicted = boxes_to_xyxy(self._mean)

        def stage(det_rows: np.ndarray, track_rows: np.ndarray, how: str) -> None:
            if len(det_rows) == 0 or len(track_rows) == 0:
                return
            same_class = cls[det_rows][:, None] == self._cls[track_rows][None, :]
            if how == "restart":
                cost = self._kf.gating_distance(*self._restarted(track_rows), boxes[det_rows]) / CHI2_95
                allowed = same_class & (cost <= 1.0)
            elif how == "gated":
                mean, cov = self._mean[track_rows], self._cov[track_rows]
                cost = self._kf.gating_distance(mean, cov, boxes[det_rows]) / CHI2_95
                allowed = same_class & (cost <= 1.0)
            elif how == "any class":
                iou = box_iou(boxes[det_rows], predicted[track_rows])
                cost = 1.0 - iou
                allowed = iou >= s.duplicate_iou
            else:
                iou = box_iou(boxes[det_rows], predicted[track_rows])
                cost = 1.0 - iou
                allowed = same_class & (iou >= s.match_iou)
                # a track tracked in the previous detector run also needs the detection within its gate
                d, t = np.nonzero(allowed & (self._runs_missed[track_rows] == 0)[None, :])
                if len(d):
                    rows = track_rows[t]
                    dist = self._kf.paired_distance(self._mean[rows], self._cov[rows], boxes[det_rows[d]])
                    allowed[d, t] = dist <= CHI2_95
            d, t = _assign(allowed, cost)
            det_track[det_rows[d]] = track_rows[t]
            restart[det_rows[d]] = how == "restart"
            track_hit[track_rows[t]] = True

        high = scores >= s.high_thresh
        stage(_rows(high), _rows(self._confirmed), "predicted")
        tracked = self._runs_missed == 0
        stage(_rows(~high), _rows(self._confirmed & tracked & ~track_hit), "predicted")
        left = _rows(~high & (det_track == _NO_MATCH))
        stage(left, _rows(self._confirmed & tracked & ~track_hit), "gated")
        stage(_rows(high & (det_track == _NO_MATCH)), _rows(~self._confirmed), "predicted")
        recent = (self._runs_missed <= _RESTART_RUNS) & (tracked | self._confirmed)
        stage(_rows(high & (det_track == _NO_MATCH)), _rows(recent & ~track_hit), "restart")
        left = _rows(high & (det_track == _NO_MATCH))
        stage(left, _rows(self._confirmed & ~track_hit), "any class")
        left = _rows(~high & (det_track == _NO_MATCH))
        stage(left, _rows(self._confirmed & tracked & ~track_hit), "any class")
        return det_track, restart

    def _add(self, boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, *, confirmed: bool) -> None:
        n = len(boxes)
        mean, cov = self._kf.initiate(boxes)
        self._ids = np.concatenate([self._ids, np.arange(self._next_id, self._next_id + n, dtype=np.int64)])
        self._next_id += n
        self._cls = np.concatenate([self._cls, cls])
        self._score = np.concatenate([self._score, scores])
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._runs_missed = np.concatenate([self._runs_missed, np.zeros(n, np.int64)])
        self._confirmed = np.concatenate([self._confirmed, np.full(n, confirmed)])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._last_box = np.concatenate([self._last_box, boxes])
        self._missed = np.concatenate([self._missed, np.zeros(n, np.int64)])
