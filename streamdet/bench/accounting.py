"""Drop and latency accounting for benchmark trials: pure functions over plain data.

Both systems are judged by the same rule: of the frames a live camera would have offered at the
detection rate during the measurement window, how many were published (the rest are dropped),
and how late. Frames that the camera's ``max_fps`` skips on purpose are neither expected nor
dropped: which source frames are kept comes from the decoder's own rule
(:class:`streamdet.pipeline.decode.pacing.Schedule`), applied to both systems. The daemon's side is
reconstructed from its detection messages (``frame``, ``dropped``, ``ts_capture``, ``ts_publish``)
and, when present, the per-reason drops of its stats messages; the naive loop's side from its own
log of (frame index, publish time) pairs against the ideal 25 fps schedule. No I/O here, so tests
can feed synthetic message lists.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

from streamdet.pipeline.decode.pacing import Schedule

#: drop reasons of the stats messages that are real losses (``max_fps`` skips are intentional)
LOSS_REASONS = ("overwritten", "behind", "unsent", "torn")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), or None for no values."""
    if not len(values):
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of a latency sample in milliseconds (None when the sample is empty)."""

    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    count: int

    @classmethod
    def from_ms(cls, values: Sequence[float]) -> LatencySummary:
        """Summarise a list of latencies in milliseconds."""
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99),
                   float(max(values)) if len(values) else None, len(values))

    def to_dict(self) -> dict[str, Any]:
        """JSON form, rounded to 0.01 ms."""
        return {k: (None if v is None else round(v, 2)) for k, v in
                (("p50", self.p50), ("p95", self.p95), ("p99", self.p99), ("max", self.max))} | {"count": self.count}


@dataclass(frozen=True)
class TrialResult:
    """One capacity trial: ``n`` cameras at ``rate`` detections/s each, over ``window_s`` seconds."""

    n: int
    rate: float
    window_s: float
    expected: int
    published: int
    latency: LatencySummary
    drop_reasons: dict[str, int] = field(default_factory=dict)  # diagnostics only, see account_daemon_window
    max_drop_pct: float = 1.0
    latency_bound_ms: float = 200.0

    @property
    def dropped(self) -> int:
        """Frames expected at the detection rate that were not published."""
        return max(0, self.expected - self.published)

    @property
    def drop_pct(self) -> float:
        """Dropped frames in percent of the expected ones (100 when nothing was expected)."""
        return 100.0 * self.dropped / self.expected if self.expected > 0 else 100.0

    @property
    def passed(self) -> bool:
        """Held: drops below ``max_drop_pct`` percent and p99 latency below the bound."""
        return (self.published > 0 and self.drop_pct < self.max_drop_pct and self.latency.p99 is not None
                and self.latency.p99 < self.latency_bound_ms)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"n": self.n, "rate": self.rate, "window_s": round(self.window_s, 3), "expected": self.expected,
                "published": self.published, "dropped": self.dropped, "drop_pct": round(self.drop_pct, 3),
                "latency_ms": self.latency.to_dict(), "drop_reasons": dict(self.drop_reasons),
                "passed": self.passed}


@lru_cache(maxsize=64)
def _kept_in_pass(rate: float, fps: float, clip_frames: int) -> tuple[bool, ...]:
    """Which frames of one pass over a constant-rate clip the decoder keeps at ``max_fps = rate``.

    Runs the decoder's own rule (a fresh :class:`Schedule` per pass, frame ``j`` at pts ``j / fps``),
    so the benchmark cannot drift from what the daemon really does.
    """
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    if rate <= 0 or fps <= 0:
        raise ValueError(f"rate and fps must be > 0, got rate {rate}, fps {fps}")
    sched = Schedule(fps, rate if rate < fps else None, None)
    return tuple(sched.keep(j / fps) for j in range(clip_frames))


def is_kept(k: int, rate: float, fps: float, clip_frames: int) -> bool:
    """Whether source frame ``k`` (counted across the passes of a looping clip) is one the
    detection rate keeps: the decoder's ``max_fps`` rule, restarted with each pass."""
    return rate >= fps or _kept_in_pass(rate, fps, clip_frames)[k % clip_frames]


def count_kept(first: int, last: int, rate: float, fps: float, clip_frames: int) -> int:
    """Number of kept source frames with index in ``[first, last]``."""
    if last < first:
        return 0
    if rate >= fps:
        return last - first + 1
    return sum(1 for k in range(first, last + 1) if is_kept(k, rate, fps, clip_frames))


def field_losses(prev_frame: int, msg: Mapping[str, Any], rate: float, fps: float, clip_frames: int) -> int:
    """Kept frames lost before ``msg`` according to its ``dropped`` field (``prev_frame``: the
    camera's previous message received).

    ``dropped`` counts every frame not published since the camera's previous message, the ones
    ``max_fps`` skipped on purpose included (wire.md). Those are the non-kept indices between the
    two messages; what the field reports beyond them is a real loss.
    """
    gap = msg["frame"] - prev_frame - 1
    intended = gap - count_kept(prev_frame + 1, msg["frame"] - 1, rate, fps, clip_frames)
    return max(0, int(msg.get("dropped", 0)) - intended)


def _segments(msgs: list[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Split one camera's messages (in capture order) where ``frame`` goes back (source reopened)."""
    out: list[list[Mapping[str, Any]]] = []
    for m in msgs:
        if out and m["frame"] > out[-1][-1]["frame"]:
            out[-1].append(m)
        elif out and m["frame"] == out[-1][-1]["frame"]:
            continue  # duplicate delivery
        else:
            out.append([m])
    return out


@dataclass(frozen=True)
class CameraAccount:
    """One camera's window: kept frames expected and published, and where the difference shows."""

    expected: int
    published: int
    missing: int = 0  # kept frame indices absent between the first and last message (or `dropped` fields)
    behind: int = 0  # detection intervals of capture-time slip (paced decoder fell behind)


def account_camera(msgs: Sequence[Mapping[str, Any]], rate: float, fps: float, clip_frames: int,
                   window_s: float) -> CameraAccount:
    """Expected and published kept frames of one camera from its messages captured in the window.

    Expected kept frames are counted over the frame-index span of the messages (a missing kept
    index is a dropped frame, whatever dropped it: ring overwrite, behind, queue, transport); the
    messages' ``dropped`` fields, less the ``max_fps`` skips they include, are a lower bound of the
    same (:func:`field_losses`). A paced decoder that fell behind re-anchors its schedule instead
    of skipping frames, so capture time that grew faster than the frame indices is counted too:
    each whole detection interval of such slip is one dropped frame (a live camera would have sent
    it). A camera with no message in the window lost all of them.
    """
    eff_rate = min(rate, fps)
    if not msgs:
        expected = max(1, math.floor(window_s * eff_rate))
        return CameraAccount(expected, 0, missing=expected)
    ordered = sorted(msgs, key=lambda m: m["ts_capture"])
    published = missing = behind = 0
    for seg in _segments(ordered):
        first, last = seg[0], seg[-1]
        n_pub = len(seg)
        by_index = count_kept(first["frame"], last["frame"], rate, fps, clip_frames)
        by_field = n_pub + sum(field_losses(a["frame"], b, rate, fps, clip_frames) for a, b in pairwise(seg))
        slip = (last["ts_capture"] - first["ts_capture"]) - (last["frame"] - first["frame"]) / fps
        behind += math.floor(max(0.0, slip) * eff_rate)
        missing += max(by_index, by_field) - n_pub
        published += n_pub
    return CameraAccount(published + missing + behind, published, missing, behind)


def stats_losses(stats_msgs: Iterable[Mapping[str, Any]], cameras: Iterable[str], t_start: float,
                 t_end: float) -> dict[str, int]:
    """Per-reason drops reported by stats messages whose interval lies inside ``[t_start, t_end]``.

    Reads ``cameras[cam]["drops"]`` defensively (absent or malformed fields count as nothing);
    returns totals over the given cameras, ``max_fps`` included for information.
    """
    wanted = set(cameras)
    totals: dict[str, int] = defaultdict(int)
    for msg in stats_msgs:
        ts, interval = msg.get("ts"), msg.get("interval_s")
        if not isinstance(ts, int | float) or not isinstance(interval, int | float):
            continue
        if ts - interval < t_start - 0.05 or ts > t_end + 0.05:
            continue
        for cam, entry in (msg.get("cameras") or {}).items():
            drops = entry.get("drops") if cam in wanted and isinstance(entry, Mapping) else None
            if not isinstance(drops, Mapping):
                continue
            for reason, value in drops.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    totals[str(reason)] += int(value)
    return dict(totals)


def account_daemon_window(
    messages: Iterable[Mapping[str, Any]],
    cameras: Sequence[str],
    *,
    rate: float,
    fps: float,
    clip_frames: int,
    t_start: float,
    t_end: float,
    stats: Iterable[Mapping[str, Any]] = (),
    latency_bound_ms: float = 200.0,
    max_drop_pct: float = 1.0,
) -> TrialResult:
    """Judge a daemon trial from the detection (and stats) messages it published.

    Only messages with ``t_start <= ts_capture < t_end`` count. Latency is the daemon's own
    capture-to-publish time. Expected are the frames due at the detection rate (``max_fps``
    skips are intended, never drops). The dropped total is the larger of the message-based count
    and the loss reasons (``overwritten``, ``behind``, ``unsent``) of the stats messages inside the
    window.
    ``drop_reasons`` shows the parts: ``missing_frames`` (index gaps), ``capture_slip`` (decoder
    behind schedule) and the stats' per-reason counts as ``stats_<reason>``.
    """
    window_s = t_end - t_start
    by_cam: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for m in messages:
        if m.get("type", "detections") == "detections" and t_start <= m["ts_capture"] < t_end:
            by_cam[m["camera"]].append(m)
    expected = published = missing = behind = 0
    latencies: list[float] = []
    for cam in cameras:
        acc = account_camera(by_cam.get(cam, []), rate, fps, clip_frames, window_s)
        expected, published = expected + acc.expected, published + acc.published
        missing, behind = missing + acc.missing, behind + acc.behind
        latencies.extend((m["ts_publish"] - m["ts_capture"]) * 1000.0 for m in by_cam.get(cam, []))
    reasons = stats_losses(stats, cameras, t_start, t_end)
    stats_lost = sum(reasons.get(r, 0) for r in LOSS_REASONS)
    expected = max(expected, published + stats_lost)
    reasons = {"missing_frames": missing, "capture_slip": behind} | {f"stats_{k}": v for k, v in reasons.items()}
    return TrialResult(n=len(cameras), rate=rate, window_s=window_s, expected=expected, published=published,
                       latency=LatencySummary.from_ms(latencies), drop_reasons=reasons,
                       max_drop_pct=max_drop_pct, latency_bound_ms=latency_bound_ms)


def account_schedule(
    records: Mapping[int, Sequence[tuple[int, float]]],
    n: int,
    *,
    t0: float,
    rate: float,
    fps: float,
    clip_frames: int,
    t_start: float,
    t_end: float,
    latency_bound_ms: float = 200.0,
    max_drop_pct: float = 1.0,
) -> TrialResult:
    """Judge the naive paced loop from its log: ``records[cam]`` = [(frame k, publish time)].

    Frame ``k`` of every virtual camera is due at ``t0 + k / fps``. Expected: kept frames (the
    daemon's ``max_fps`` rule, :func:`is_kept`) due in ``[t_start, t_end)``; published: those of
    them in the log; latency: publish time - due time.
    """
    k_first = math.ceil((t_start - t0) * fps - 1e-9)
    k_last = math.ceil((t_end - t0) * fps - 1e-9) - 1
    expected = n * count_kept(max(0, k_first), k_last, rate, fps, clip_frames)
    published = 0
    latencies: list[float] = []
    for cam in range(n):
        for k, t_pub in records.get(cam, ()):
            if k_first <= k <= k_last and is_kept(k, rate, fps, clip_frames):
                published += 1
                latencies.append((t_pub - (t0 + k / fps)) * 1000.0)
    return TrialResult(n=n, rate=rate, window_s=t_end - t_start, expected=expected, published=published,
                       latency=LatencySummary.from_ms(latencies), max_drop_pct=max_drop_pct,
                       latency_bound_ms=latency_bound_ms)
