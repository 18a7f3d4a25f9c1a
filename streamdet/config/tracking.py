"""The ``tracking:`` section: per-camera multi-object tracking in the worker (off by default).

With tracking on, every detection carries a ``track_id`` (unique per camera for the daemon's life,
never reused) and every message says whether the detector ran on its frame (``inferred``); a
camera's ``detect_every: N`` runs the detector on every Nth frame the worker takes and publishes
the tracker's predicted boxes in between. The tracker is ByteTrack-style
(:mod:`streamdet.pipeline.tracking`): two-stage association by score, Kalman-predicted boxes,
IoU matching solved as an assignment problem.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamdet.config.problems import _cross_error

_MODEL_CONFIG = ConfigDict(
    extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False, validate_default=False
)


class TrackingConfig(BaseModel):
    """Tracker parameters, the same for every camera that tracks."""

    model_config = _MODEL_CONFIG

    enabled: bool = Field(False, description="Track objects on every camera (a camera may opt out).")
    high_thresh: float = Field(0.5, gt=0, lt=1, description="Detections at or above this score start and "
                               "continue tracks (first association stage).")
    low_thresh: float = Field(0.1, gt=0, lt=1, description="Detections between this and high_thresh only keep "
                              "existing tracks alive (second stage); below it they are ignored.")
    match_iou: float = Field(0.3, gt=0, lt=1, description="Least IoU between a detection and a track's "
                             "predicted box for them to match.")
    lost_frames: int = Field(30, ge=0, le=100000, description="Frames a track may go unmatched and still be "
                             "re-found with its id; then it ends.")
    min_hits: int = Field(1, ge=1, le=100, description="Matches in a row before a new track is published "
                          "(1: from its first frame).")
    duplicate_iou: float = Field(0.5, gt=0, le=1, description="A detection of another class whose box overlaps a "
                                 "track's box at least this much continues that track, and starts no new one "
                                 "(a model that reports one object as two classes in turn); 1 keeps classes apart "
                                 "(e.g. a person getting on a bicycle).")

    @model_validator(mode="after")
    def _ordered(self) -> TrackingConfig:
        if self.low_thresh > self.high_thresh:
            raise _cross_error([(("low_thresh",), f"must not exceed high_thresh ({self.high_thresh})",
                                 ("high_thresh",))])
        return self

    def tracker_settings(self) -> dict[str, Any]:
        """The keyword arguments of :class:`streamdet.pipeline.tracking.bytetrack.TrackerSettings`."""
        return {"high_thresh": self.high_thresh, "low_thresh": self.low_thresh, "match_iou": self.match_iou,
                "lost_frames": self.lost_frames, "min_hits": self.min_hits, "duplicate_iou": self.duplicate_iou}
