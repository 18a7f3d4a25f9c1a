"""Judging a soak run (tools/soak.py): windows, growth figures, criteria and the printed table.

Time is seconds since the daemon was ready (every camera published once). The issue's 30-minute
soak has a 5-minute warm-up, a first window of minutes 5-10 and a last window of minutes 25-30.
Shorter runs scale all three to 1/6 of the run each (a 3-minute run: warm-up 30 s, first window
30-60 s, last window 150-180 s); longer runs keep 5-minute windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("supervisor", "decoder", "worker", "other")
WINDOW_MAX_S = 300.0
QUIET_CORES = 0.25  # other processes' CPU use under which a window counts as measured on a quiet machine


@dataclass(frozen=True)
class Windows:
    """Warm-up end, the first window after it and the last window of the run (seconds)."""

    total_s: float
    warmup_s: float
    first: tuple[float, float]
    last: tuple[float, float]

    @classmethod
    def for_duration(cls, total_s: float) -> Windows:
        w = min(WINDOW_MAX_S, total_s / 6.0)
        return cls(total_s, w, (w, 2 * w), (total_s - w, total_s))


@dataclass(frozen=True)
class Criterion:
    """One pass/fail line of the report."""

    name: str
    value: str
    limit: str
    ok: bool


@dataclass
class CameraTrack:
    """Detection messages of one camera: count and the longest silence between two of them."""

    messages: int = 0
    last_t: float | None = None
    max_gap_s: float = 0.0
    max_gap_at_s: float | None = None

    def add(self, t: float) -> None:
        if self.last_t is not None and t - self.last_t > self.max_gap_s:
            self.max_gap_s, self.max_gap_at_s = t - self.last_t, self.last_t
        self.messages += 1
        self.last_t = t


@dataclass
class DropTotals:
    """Per-camera sums of the stats messages' ``published`` and ``drops`` by reason."""

    cameras: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, stats: dict[str, Any]) -> None:
        for cam, entry in (stats.get("cameras") or {}).items():
            if not isinstance(entry, dict):
                continue
            acc = self.cameras.setdefault(cam, {"published": 0, "overwritten": 0, "max_fps": 0, "behind": 0})
            acc["published"] += int(entry.get("published") or 0)
            for reason, n in (entry.get("drops") or {}).items():
                acc[reason] = acc.get(reason, 0) + int(n or 0)

    def lost_share(self) -> float:
        """(behind + overwritten) / (published + behind + overwritten) over every camera."""
        lost = sum(c.get("behind", 0) + c.get("overwritten", 0) for c in self.cameras.values())
        seen = lost + sum(c["published"] for c in self.cameras.values())
        return lost / seen if seen else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0-100) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of latencies in ms."""
    return {"count": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}


def in_window(t: float, window: tuple[float, float]) -> bool:
    return window[0] <= t <= window[1]


def role_rss(processes: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Resident kB per role and in total for one sample's processes."""
    out = dict.fromkeys(ROLES, 0)
    for p in processes:
        out[p["role"]] += p["rss_kb"]
    out["total"] = sum(out[r] for r in ROLES)
    return out


def rss_growth(samples: Sequence[dict[str, Any]], win: Windows) -> dict[str, dict[str, float | None]]:
    """Per role and total: mean RSS in the first and the last window and the growth in percent."""
    first = [s["rss_kb"] for s in samples if in_window(s["t"], win.first)]
    last = [s["rss_kb"] for s in samples if in_window(s["t"], win.last)]
    out: dict[str, dict[str, float | None]] = {}
    for key in ("total", *ROLES):
        a = sum(r[key] for r in first) / len(first) if first else None
        b = sum(r[key] for r in last) / len(last) if last else None
        if not a and not b:
            continue
        growth = 100.0 * (b - a) / a if a and b is not None else None
        out[key] = {"first_mean_kb": a, "last_mean_kb": b, "growth_pct": growth}
    return out


def cpu_by_window(samples: Sequence[dict[str, Any]], win: Windows, quiet_cores: float = QUIET_CORES,
                  ) -> dict[str, Any]:
    """Mean CPU cores of the daemon and of every other process on the machine in the first and last window.

    ``quiet`` is false when other processes used more than ``quiet_cores`` in either window: then
    latency and drops were measured against competition the daemon does not control.
    """
    out: dict[str, Any] = {}
    for name, w in (("first", win.first), ("last", win.last)):
        rows = [s["cpu_cores"] for s in samples if s.get("cpu_cores") and in_window(s["t"], w)]
        out[name] = {k: round(sum(r[k] for r in rows) / len(rows), 3) if rows else None
                     for k in ("daemon", "worker", "decoder", "supervisor", "soak", "other_processes")}
    busy = [out[n]["other_processes"] for n in ("first", "last") if out[n]["other_processes"] is not None]
    out["quiet"] = bool(busy) and max(busy) <= quiet_cores
    out["note"] = "" if out["quiet"] else (
        f"other processes used {max(busy, default=0):.2f} CPU cores in a window (quiet: <= {quiet_cores:g}); "
        "latency and drop figures are not conclusive, rerun on a quiet machine")
    return out


def fd_growth(samples: Sequence[dict[str, Any]], win: Windows) -> dict[str, dict[str, Any]]:
    """Per process (``name[pid]``): open fds in the first sample after warm-up and in the last sample."""
    after = [s for s in samples if s["t"] >= win.warmup_s]
    if not after:
        return {}
    first = {p["pid"]: p for p in after[0]["processes"]}
    out = {}
    for p in after[-1]["processes"]:
        ref = first.get(p["pid"])
        if ref is not None:
            out[f"{p['name']}[{p['pid']}]"] = {"first": ref["fds"], "last": p["fds"], "growth": p["fds"] - ref["fds"]}
    return out


def child_pid_changes(samples: Sequence[dict[str, Any]]) -> list[str]:
    """Decoders and workers that appeared or disappeared after the first sample (unexpected restarts)."""
    def kids(s: dict[str, Any]) -> set[tuple[int, str]]:
        return {(p["pid"], p["name"]) for p in s["processes"] if p["role"] in ("decoder", "worker")}

    if not samples:
        return []
    base, changes = kids(samples[0]), []
    for s in samples[1:]:
        now = kids(s)
        for pid, name in sorted(base - now):
            changes.append(f"t={s['t']:.0f}s {name}[{pid}] gone")
        for pid, name in sorted(now - base):
            changes.append(f"t={s['t']:.0f}s {name}[{pid}] new")
        base = now
    return changes


def _fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}{unit}"


def judge(result: dict[str, Any], *, rss_limit_pct: float, p99_tolerance_pct: float, max_gap_s: float,
          max_lost_pct: float) -> list[Criterion]:
    """The pass/fail criteria of one run (``result`` as tools/soak.py assembles it)."""
    out: list[Criterion] = []
    for role, g in result["rss"].items():
        pct = g["growth_pct"]
        out.append(Criterion(f"RSS growth {role}", _fmt(pct, " %", 2), f"< {rss_limit_pct:g} %",
                             pct is not None and pct < rss_limit_pct))
    grown = {k: v["growth"] for k, v in result["fds"].items() if v["growth"] > 0}
    out.append(Criterion("fd growth (every process)", ", ".join(f"{k} +{n}" for k, n in grown.items()) or "none",
                         "none", bool(result["fds"]) and not grown))
    shm = result["shm"]
    constant = shm["segments_min"] == shm["segments_max"] > 0 and shm["bytes_min"] == shm["bytes_max"]
    out.append(Criterion("shm segments/bytes constant",
                         f"{shm['segments_min']}-{shm['segments_max']} seg, {shm['bytes_min']}-{shm['bytes_max']} B",
                         "min == max", constant))
    lat = result["latency"]
    a, b = lat["first"]["p99"], lat["last"]["p99"]
    limit = None if a is None else a * (1 + p99_tolerance_pct / 100.0)
    out.append(Criterion("p99 latency last vs first window", f"{_fmt(b, ' ms')} vs {_fmt(a, ' ms')}",
                         f"<= first + {p99_tolerance_pct:g} % ({_fmt(limit, ' ms')})",
                         a is not None and b is not None and b <= limit))
    gaps = {c: v["max_gap_s"] for c, v in result["cameras"].items()}
    worst = max(gaps.values(), default=None)
    out.append(Criterion("max gap between messages", _fmt(worst, " s", 2), f"<= {max_gap_s:g} s",
                         worst is not None and worst <= max_gap_s and all(v["messages"] for v in
                                                                          result["cameras"].values())))
    lost = 100.0 * result["drops"]["lost_share"]
    out.append(Criterion("load held (behind+overwritten)", _fmt(lost, " %", 2), f"<= {max_lost_pct:g} %",
                         lost <= max_lost_pct))
    changes = result["restarts"]
    out.append(Criterion("no unexpected restarts", f"{len(changes)} pid changes", "0", not changes))
    rel = result["reloads"]
    bad = [r for r in rel if not r["ok"]]
    out.append(Criterion("reloads applied live", f"{len(rel) - len(bad)}/{len(rel)}", "all", bool(rel) and not bad))
    scr = result["metrics_scrapes"]
    out.append(Criterion("metrics endpoint answered", f"{scr['ok']}/{scr['total']}", "all",
                         scr["total"] > 0 and scr["ok"] == scr["total"]))
    ex = result["exit"]
    out.append(Criterion("SIGTERM exit status", str(ex["status"]), "0", ex["status"] == 0))
    out.append(Criterion("no segment or child left", f"{len(ex['segments_left'])} seg, {len(ex['children_left'])} "
                         "children", "0, 0", not ex["segments_left"] and not ex["children_left"]))
    return out


def table(criteria: Sequence[Criterion]) -> str:
    """The criteria as an aligned text table."""
    rows = [("criterion", "value", "limit", "result")] + [(c.name, c.value, c.limit, "PASS" if c.ok else "FAIL")
                                                          for c in criteria]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def criteria_dicts(criteria: Sequence[Criterion]) -> list[dict[str, Any]]:
    return [asdict(c) for c in criteria]
