"""Which decoded file frames the decoder keeps, and when it writes them (one pass over a file).

- ``max_fps`` keeps a frame only when its pts is at least ``1 / max_fps`` after the previous
  kept frame's schedule; the decoder counts the others in ``frames_skipped``.
- pacing (files with ``realtime``): a frame is due at a wall-clock time anchored at the pass's
  first frame (a loop continues one frame period after the previous pass's last frame).
  Behind rule: a frame already late by more than 2 output frame periods (the larger of
  ``1 / fps`` and ``1 / max_fps``) is not written (``frames_behind``); when more than 1 s late
  the schedule re-anchors at the current frame (written) instead of bursting.
- timestamps that go back (a discontinuity) restart both schedules.

Pure arithmetic on media times and ``time.monotonic()`` values: no clock is read here.
"""

from __future__ import annotations

__all__ = ["BEHIND_PERIODS", "BEHIND_RESET_S", "Schedule"]

BEHIND_RESET_S = 1.0  # a paced file this far behind schedule re-anchors instead of bursting
BEHIND_PERIODS = 2.0  # a paced frame later than this many frame periods is not written


class Schedule:
    """One pass over a file: max_fps thinning and wall-clock pacing (see the module docstring)."""

    def __init__(self, fps: float, max_fps: float | None, start_wall: float | None) -> None:
        """``fps``: the file's rate; ``start_wall``: when this pass's first frame is due (the
        continuation of a loop), or None to anchor at the first frame."""
        self.interval = 1.0 / max_fps if max_fps else 0.0
        self.late_s = BEHIND_PERIODS * max(1.0 / fps, self.interval)
        self.start_wall = start_wall  # when this pass's first frame is due (a loop's continuation)
        self.anchor: tuple[float, float] | None = None  # (wall monotonic, media time)
        self.next_keep: float | None = None  # max_fps: earliest media time of the next kept frame

    def set_max_fps(self, fps: float, max_fps: float | None) -> None:
        """A new max_fps (live reload) from the next frame on; the pacing anchor is kept."""
        self.interval = 1.0 / max_fps if max_fps else 0.0
        self.late_s = BEHIND_PERIODS * max(1.0 / fps, self.interval)
        self.next_keep = None

    def restart(self) -> None:
        """Timestamps went back (discontinuity): restart both schedules."""
        self.anchor = self.next_keep = None

    def keep(self, t: float) -> bool:
        """max_fps: whether the frame at media time ``t`` is kept."""
        if not self.interval:
            return True
        if self.next_keep is not None and t < self.next_keep - self.interval * 0.01:
            return False
        self.next_keep = t + self.interval if self.next_keep is None or t - self.next_keep >= self.interval \
            else self.next_keep + self.interval
        return True

    def delay(self, t: float, now: float) -> float:
        """Seconds until the frame at ``t`` is due (negative: late); re-anchors when > 1 s late."""
        if self.anchor is None:
            self.anchor = (now if self.start_wall is None else self.start_wall, t)
            self.start_wall = None
        due = self.anchor[0] + (t - self.anchor[1])
        if now - due > BEHIND_RESET_S:
            self.anchor = (now, t)
            return 0.0
        return due - now

    def behind(self, delay: float) -> bool:
        """Whether a frame with this :meth:`delay` is too late to be written."""
        return -delay > self.late_s

    def next_pass_wall(self, last_t: float, fps: float) -> float | None:
        """When the next loop's first frame is due: one frame after this pass's last frame."""
        return None if self.anchor is None else self.anchor[0] + (last_t - self.anchor[1]) + 1.0 / fps
