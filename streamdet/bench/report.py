"""The benchmark's outputs: ratios, the side-by-side table, the JSON file and the capacity plot.

Works on the result dict built by :mod:`streamdet.bench.runner` (``{"settings", "environment",
"streamdet": {...}, "naive": {...}, "ratios": {...}}``, plus ``"tracking": {"<detect_every>":
{"unpaced", "capacity"}}`` with ``--tracking``); a part that was skipped is simply absent and shows
as "-". The naive loop never tracks: tracked rows set the daemon with tracking against it untracked.
matplotlib is an optional extra (``streamdet[bench]``), imported only to plot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SYSTEMS = ("streamdet", "naive")


def rate_key(rate: float) -> str:
    """JSON key of a detection rate: ``5.0`` -> ``"5"``."""
    return f"{rate:g}"


def tracking_key(detect_every: int) -> str:
    """JSON key of a tracked run: ``3`` -> ``"3"``."""
    return str(int(detect_every))


def _tracking_keys(result: Mapping[str, Any]) -> list[str]:
    return sorted((_get(result, "tracking") or {}), key=int)


def _rate_keys(result: Mapping[str, Any]) -> list[str]:
    keys = {k for part in (_get(result, "streamdet"), _get(result, "naive"), *(_get(result, "tracking") or {}).values())
            for k in (_get(part, "capacity") or {})}
    return sorted(keys, key=float)


def _get(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def ratio(a: Any, b: Any) -> float | None:
    """``a / b`` for numbers with ``b > 0``, else None."""
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int | float) or not isinstance(b, int | float):
        return None
    return a / b if b > 0 else None


def compute_ratios(result: Mapping[str, Any]) -> dict[str, float | None]:
    """streamdet / naive for the unpaced frames/s and for each rate's capacity; with tracking, each
    tracked run / the (untracked) naive loop, and each detect_every's capacity / the smallest one's."""
    s, n = result.get("streamdet", {}), result.get("naive", {})
    out = {"unpaced_fps": ratio(_get(s, "unpaced", "fps"), _get(n, "unpaced", "fps"))}
    for key in sorted(set(_get(s, "capacity") or {}) | set(_get(n, "capacity") or {}), key=float):
        out[f"capacity_{key}fps"] = ratio(_get(s, "capacity", key, "capacity"), _get(n, "capacity", key, "capacity"))
    tracking = _tracking_keys(result)
    for every in tracking:
        t = _get(result, "tracking", every)
        out[f"tracking_de{every}_unpaced_fps"] = ratio(_get(t, "unpaced", "fps"), _get(n, "unpaced", "fps"))
        for key in sorted(_get(t, "capacity") or {}, key=float):
            held = _get(t, "capacity", key, "capacity")
            out[f"tracking_de{every}_capacity_{key}fps"] = ratio(held, _get(n, "capacity", key, "capacity"))
            if every != tracking[0]:
                base = _get(result, "tracking", tracking[0], "capacity", key, "capacity")
                out[f"tracking_de{every}_vs_de{tracking[0]}_capacity_{key}fps"] = ratio(held, base)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _p99_at_capacity(cap: Mapping[str, Any] | None) -> Any:
    if not isinstance(cap, Mapping):
        return None
    for t in cap.get("trials", []):
        if t.get("n") == cap.get("capacity"):
            return _get(t, "latency_ms", "p99")
    return None


def format_table(result: Mapping[str, Any]) -> str:
    """A plain-text table: one row per figure, columns streamdet, naive and their ratio."""
    s, n, r = result.get("streamdet", {}), result.get("naive", {}), result.get("ratios", {})
    rows: list[tuple[str, Any, Any, Any]] = [
        ("unpaced frames/s", _get(s, "unpaced", "fps"), _get(n, "unpaced", "fps"), r.get("unpaced_fps")),
        ("unpaced frames lost", _get(s, "unpaced", "frames_lost"),
         None if _get(n, "unpaced") is None else 0, None),
    ]
    keys = _rate_keys(result)
    tracking = _tracking_keys(result)
    for key in keys:
        sc, nc = _get(s, "capacity", key), _get(n, "capacity", key)
        rows.append((f"cameras held @ {key} fps", _get(sc, "capacity"), _get(nc, "capacity"),
                     r.get(f"capacity_{key}fps")))
        rows.append(("  p99 latency ms at that N", _p99_at_capacity(sc), _p99_at_capacity(nc), None))
        for every in tracking:
            tc = _get(result, "tracking", every, "capacity", key)
            rows.append((f"  + tracking, detect_every {every}", _get(tc, "capacity"), _get(nc, "capacity"),
                         r.get(f"tracking_de{every}_capacity_{key}fps")))
            rows.append(("    p99 latency ms at that N", _p99_at_capacity(tc), None, None))
            if every != tracking[0]:
                rows.append((f"    detect_every {every} / detect_every {tracking[0]}", None, None,
                             r.get(f"tracking_de{every}_vs_de{tracking[0]}_capacity_{key}fps")))
    rows.extend(_stage_rows(s))
    if _get(n, "unpaced") is not None:
        rows.append(("  naive detect ms/batch", None, _get(n, "unpaced", "detect_ms_per_batch"), None))
        rows.append(("  naive read ms/frame", None, _get(n, "unpaced", "read_ms_per_frame"), None))
    for every in tracking:
        t = _get(result, "tracking", every)
        if _get(t, "unpaced") is None:
            continue
        rows.append((f"tracking, detect_every {every}: unpaced frames/s", _get(t, "unpaced", "fps"),
                     _get(n, "unpaced", "fps"), r.get(f"tracking_de{every}_unpaced_fps")))
        rows.append(("  unpaced frames lost", _get(t, "unpaced", "frames_lost"), None, None))
        rows.append(("  frames published tracked only", _get(t, "unpaced", "tracked_only"), None, None))
        rows.extend(_stage_rows(t))
    width = max(len(row[0]) for row in rows)
    lines = [f"{'':<{width}}  {'streamdet':>10}  {'naive':>10}  {'ratio':>7}"]
    for label, a, b, q in rows:
        lines.append(f"{label:<{width}}  {_fmt(a):>10}  {_fmt(b):>10}  {(_fmt(q, 2) + 'x') if q else '-':>7}")
    incomplete = [f"{sys_} @ {key} fps" for sys_ in SYSTEMS for key in keys
                  if _get(result, sys_, "capacity", key, "complete") is False]
    incomplete += [f"streamdet + tracking, detect_every {every} @ {key} fps" for every in tracking for key in keys
                   if _get(result, "tracking", every, "capacity", key, "complete") is False]
    if incomplete:
        lines.append(f"capacity search stopped by the time budget: {', '.join(incomplete)} (lower bound)")
    if (_get(s, "unpaced", "frames_lost") or 0) > 0:
        lines.append("WARNING: streamdet lost frames of unpaced files (expected 0)")
    if any((_get(result, "tracking", every, "unpaced", "frames_lost") or 0) > 0 for every in tracking):
        lines.append("WARNING: streamdet with tracking lost frames of unpaced files (expected 0)")
    if tracking:
        lines.append("The naive loop does not track: its column in the tracking rows is the same untracked loop.")
    return "\n".join(lines)


def _stage_rows(part: Mapping[str, Any] | None) -> list[tuple[str, Any, Any, Any]]:
    """Per-stage rows of one daemon run: ms per batch of each stage, and the tracker's ms per frame
    (the ``track`` stage is timed apart from ``publish``)."""
    rows: list[tuple[str, Any, Any, Any]] = []
    for w in _get(part, "unpaced", "stages", "workers") or []:
        name = w.get("name", "worker")
        for stage, ms in (w.get("stage_ms") or {}).items():
            if stage == "track" and not w.get("tracked_frames"):
                continue  # tracking was off
            rows.append((f"  {name} {stage} ms/batch", ms, None, None))
        per_frame = w.get("track_ms_per_frame")
        if w.get("tracked_frames"):  # a fraction of a millisecond: three decimals
            rows.append((f"  {name} track ms/frame", f"{per_frame:.3f}" if isinstance(per_frame, float) else per_frame,
                         None, None))
    return rows


def write_json(result: Mapping[str, Any], path: Path) -> None:
    """Write the result (indented JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")


def plot_available() -> bool:
    """Whether matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plot(result: Mapping[str, Any], path: Path) -> None:
    """Drop % and p99 latency vs number of cameras, both systems, one line per detection rate."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator, ScalarFormatter
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'streamdet[bench]'") from exc
    settings = result.get("settings", {})
    fig, (ax_drop, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"streamdet": "-o", "naive": "--s"}
    keys = _rate_keys(result)
    colours = {key: f"C{i}" for i, key in enumerate(keys)}  # one colour per rate, one line style per system
    curves: list[tuple[str, Any]] = [(system, _get(result, system)) for system in SYSTEMS]
    for i, every in enumerate(_tracking_keys(result)):
        system = f"streamdet + tracking, detect_every {every}"
        styles[system] = ("-.", ":")[i % 2] + "^v<>"[i % 4]
        curves.append((system, _get(result, "tracking", every)))
    for system, part in curves:
        for key, cap in sorted((_get(part, "capacity") or {}).items(), key=lambda kv: float(kv[0])):
            trials = sorted(cap.get("trials", []), key=lambda t: t["n"])
            if not trials:
                continue
            ns = [t["n"] for t in trials]
            label = f"{system} @ {key} fps (held: {cap.get('capacity')})"
            ax_drop.plot(ns, [t["drop_pct"] for t in trials], styles[system], color=colours[key], label=label)
            ax_lat.plot(ns, [_get(t, "latency_ms", "p99") or float("nan") for t in trials], styles[system],
                        color=colours[key], label=label)
    ax_drop.axhline(settings.get("max_drop_pct", 1.0), color="grey", lw=0.8, ls=":")
    ax_lat.axhline(settings.get("latency_ms", 200.0), color="grey", lw=0.8, ls=":")
    ax_drop.set(xlabel="cameras (25 fps each)", ylabel="dropped frames (%)", title="drops vs cameras")
    ax_lat.set(xlabel="cameras (25 fps each)", ylabel="p99 latency (ms)", title="p99 latency vs cameras")
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_formatter(ScalarFormatter())
    ax_lat.yaxis.set_minor_formatter(ScalarFormatter())
    for ax in (ax_drop, ax_lat):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"streamdet vs naive loop: {settings.get('width')}x{settings.get('height')}, "
                 f"img_size {settings.get('img_size')}, {settings.get('device')}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
