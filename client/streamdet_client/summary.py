"""``streamdet subscribe --summary``: one line per camera per stats interval, for people.

Consumes decoded stats messages (docs/wire.md): each worker sends one per
``publish.stats_interval_s`` covering its cameras, so a line per camera entry is a line per camera
per interval. Produces lines such as::

    12:00:05 door: 5.0 fps, latency p50 38 ms p99 51 ms, 1.20 objects/frame, 0 dropped, 20 skipped by max_fps, streaming

Objects per frame come from the stats' ``objects`` (detections in the interval's published
messages), so the summary needs the stats topic only, not the detection stream. Fields an older
daemon does not send print as ``-``; malformed optional fields never raise. Standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

#: Decoder states in which the last error explains what is going on, so it is always shown.
TROUBLED_STATES = frozenset({"backoff", "failed", "connecting"})


def _number(value: object) -> float | None:
    """``value`` as a float when it is a JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _clock(ts: float | None) -> str:
    """Local wall-clock time of a UNIX timestamp, ``HH:MM:SS`` (``--:--:--`` when unknown)."""
    return time.strftime("%H:%M:%S", time.localtime(ts)) if ts is not None else "--:--:--"


def _ms(value: object) -> str:
    number = _number(value)
    return f"{number:.0f} ms" if number is not None else "-"


def _objects_per_frame(stats: Mapping[str, Any]) -> str:
    objects, published = _number(stats.get("objects")), _number(stats.get("published"))
    if objects is None or not published:
        return "- objects/frame"
    return f"{objects / published:.2f} objects/frame"


#: Drop reasons that are intended, not losses: frames ``max_fps`` skips on purpose.
INTENDED_SKIPS = ("max_fps",)


def _drops(stats: Mapping[str, Any]) -> str:
    """Lost frames with their reasons, then the frames skipped on purpose (the stats' ``dropped``
    counts both, docs/wire.md): ``2 dropped (overwritten 2), 75 skipped by max_fps``."""
    dropped = _number(stats.get("dropped"))
    drops = stats.get("drops")
    counts = {str(reason): count for reason, raw in drops.items()
              if (count := _number(raw)) is not None and count > 0} if isinstance(drops, Mapping) else {}
    skipped = sum(counts.get(reason, 0.0) for reason in INTENDED_SKIPS)
    text = "- dropped" if dropped is None else f"{max(0.0, dropped - skipped):.0f} dropped"
    losses = [f"{reason} {count:.0f}" for reason, count in counts.items() if reason not in INTENDED_SKIPS]
    if losses:
        text += f" ({', '.join(losses)})"
    if skipped:
        text += f", {skipped:.0f} skipped by max_fps"
    return text


def _state(stats: Mapping[str, Any], ts: float | None, interval_s: float | None) -> str:
    """The decoder state, with its last error when it is in trouble or the error is from this interval."""
    state = str(stats.get("state", "?"))
    error = stats.get("last_error")
    if not isinstance(error, str) or not error:
        return state
    error_ts = _number(stats.get("last_error_ts"))
    recent = error_ts is not None and ts is not None and error_ts >= ts - (interval_s or 0.0)
    if state not in TROUBLED_STATES and not recent:
        return state
    when = f" at {_clock(error_ts)}" if error_ts is not None else ""
    return f"{state} (last error{when}: {error})"


def camera_line(camera: str, stats: Mapping[str, Any], ts: float | None = None,
                interval_s: float | None = None) -> str:
    """One camera's line from its stats entry; ``ts``/``interval_s`` are the message's."""
    fps = _number(stats.get("fps"))
    latency = stats.get("latency_ms")
    latency = latency if isinstance(latency, Mapping) else {}
    return (f"{_clock(ts)} {camera}: {f'{fps:.1f}' if fps is not None else '-'} fps, "
            f"latency p50 {_ms(latency.get('p50'))} p99 {_ms(latency.get('p99'))}, "
            f"{_objects_per_frame(stats)}, {_drops(stats)}, {_state(stats, ts, interval_s)}")


def summary_lines(msg: Mapping[str, Any], cameras: Collection[str] | None = None) -> list[str]:
    """The lines for one stats message: one per camera it covers (only ``cameras`` when given),
    sorted by camera id; no line for any other message type."""
    if msg.get("type") != "stats":
        return []
    entries = msg.get("cameras")
    if not isinstance(entries, Mapping):
        return []
    ts, interval_s = _number(msg.get("ts")), _number(msg.get("interval_s"))
    return [camera_line(camera, stats, ts, interval_s) for camera, stats in sorted(entries.items())
            if isinstance(stats, Mapping) and (cameras is None or camera in cameras)]
