"""The end-to-end stage's plan: which daemon run comes next, as a pure function of the runs so far.

The stage of tools/gpu_verify.py that runs the daemon end to end looks for the largest number of
paced 1080p30 cameras (N) one GPU keeps up with: a run *passes* when every camera publishes,
the capture-to-publish p99 is at most ``Limits.p99_ms`` and at most ``Limits.drop_fraction`` of
the frames are dropped (:func:`verdict`). The plan, in order of importance (:func:`plan_next`):

1. ``grow``: all cameras on NVDEC with the device feed (``model.preprocess: cuda``). N starts at
   ``Ladder.start`` and grows by ``Ladder.step`` while runs pass (the last step up to
   ``Ladder.max_cameras``);
   after the first failure it bisects between the largest pass and the smallest failure above it
   until they are ``Ladder.resolution`` apart. A failing first run bisects down towards 0.
2. ``compare``: the same N (the largest pass, else the smallest N tried) with the host feed
   (``model.preprocess: cpu``), for the device/host ratio. Time for it is kept back while growing.
   A grow run that ended in an error (the daemon exited: broken, not slow) is followed by the
   compare run at its N at once, so a broken device feed still leaves the host feed's figures.
3. ``mixed``: when a grow run failed above the largest pass, that pass plus
   ``max(resolution, step // 2)`` more cameras decoded on the CPU (``decode: cpu``): whether
   CPU decoders add streams once NVDEC is saturated.

Everything here is plain data in, plain data out (run records are the dicts the stage writes to
gpu_verify.jsonl), so a resumed stage continues the same plan from the runs an earlier, cut-off
call recorded, and the tests check the plan without a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROW, COMPARE, MIXED = "grow", "compare", "mixed"


@dataclass(frozen=True)
class Limits:
    """What a passing run must stay within."""

    p99_ms: float = 200.0
    drop_fraction: float = 0.01


@dataclass(frozen=True)
class Ladder:
    """How N grows: from ``start`` by ``step`` up to ``max_cameras``, then bisection to ``resolution``."""

    start: int = 128
    step: int = 64
    max_cameras: int = 320
    resolution: int = 16


@dataclass(frozen=True)
class Step:
    """One daemon run to do: its phase, N, the ``model.preprocess`` value (None: the key is left
    out of the configuration) and how many of the N cameras (the last ones) decode on the CPU."""

    phase: str
    cameras: int
    preprocess: str | None
    cpu_decoded: int = 0


def verdict(run: Mapping[str, Any], limits: Limits = Limits()) -> str | None:
    """None when ``run`` passes, else why not (one short phrase)."""
    if run.get("error"):
        return f"error: {run['error']}"
    if run.get("skipped"):
        return f"skipped: {run['skipped']}"
    n = int(run.get("cameras", 0))
    publishing = int(run.get("cameras_publishing", 0))
    if publishing < n:
        return f"{publishing} of {n} cameras published"
    p99 = (run.get("latency_ms") or {}).get("p99")
    if p99 is None:
        return "no latency measured"
    if p99 > limits.p99_ms:
        return f"p99 {p99:g} ms > {limits.p99_ms:g} ms"
    over = run.get("share_over_p99_limit")  # the daemon's own histogram, when the stats carried it
    if over is not None and over > 0.01:  # p99 <= the limit: at most 1 % of the frames over it
        return f"{over:.2%} of frames over {limits.p99_ms:g} ms (daemon histogram)"
    drops = run.get("drop_fraction")
    if drops is None:
        return "no drop count"
    if drops > limits.drop_fraction:
        return f"drops {drops:.2%} > {limits.drop_fraction:.0%}"
    return None


def _grow_runs(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in runs if r.get("phase", GROW) == GROW and "cameras" in r]


def bounds(runs: Sequence[Mapping[str, Any]], limits: Limits = Limits()) -> tuple[int, int | None]:
    """(the largest passing N of the grow runs, or 0; the smallest failing N above it, or None)."""
    grow = _grow_runs(runs)
    lo = max((int(r["cameras"]) for r in grow if verdict(r, limits) is None), default=0)
    hi = min((int(r["cameras"]) for r in grow if verdict(r, limits) is not None and int(r["cameras"]) > lo),
             default=None)
    return lo, hi


def next_grow(runs: Sequence[Mapping[str, Any]], ladder: Ladder = Ladder(), limits: Limits = Limits()) -> int | None:
    """The next N of the grow phase, or None when the search is done."""
    grow = _grow_runs(runs)
    if not grow:
        return ladder.start
    lo, hi = bounds(runs, limits)
    if hi is None:
        return min(lo + ladder.step, ladder.max_cameras) if lo < ladder.max_cameras else None
    if hi - lo <= ladder.resolution:
        return None
    mid = (lo + hi) // 2
    mid -= mid % ladder.resolution  # round numbers; still strictly between lo and hi
    if mid <= lo:
        mid = lo + ladder.resolution
    return mid if mid < hi else None


def best_passing(runs: Sequence[Mapping[str, Any]], limits: Limits = Limits()) -> int | None:
    """The largest N that passed in the grow phase, or None."""
    lo, _ = bounds(runs, limits)
    return lo or None


def plan_next(runs: Sequence[Mapping[str, Any]], *, left_s: float, run_s: float, fast: str | None,
              compare: str | None, do_compare: bool = True, do_mixed: bool = True, ladder: Ladder = Ladder(),
              limits: Limits = Limits()) -> Step | None:
    """The next run given ``runs`` so far, ``left_s`` seconds left and ``run_s`` the time one run
    takes; None when nothing more fits or is worth doing. ``fast``/``compare``: the preprocess
    values of the grow and compare phases (``do_compare``/``do_mixed`` turn those phases off)."""
    phases = [r.get("phase", GROW) for r in runs]
    grow = _grow_runs(runs)
    compare_due = do_compare and COMPARE not in phases and bool(grow)
    if compare_due and grow[-1].get("error") and left_s >= run_s:  # broken, not slow: is the host feed too?
        return Step(COMPARE, int(grow[-1]["cameras"]), compare)
    n = next_grow(runs, ladder, limits)
    if n is not None:
        keep_back = run_s if do_compare and COMPARE not in phases else 0.0
        if left_s >= run_s + keep_back:
            return Step(GROW, n, fast)
    if left_s < run_s:
        return None
    if compare_due:
        best = best_passing(runs, limits)
        return Step(COMPARE, best if best is not None else min(int(r["cameras"]) for r in grow), compare)
    lo, hi = bounds(runs, limits)
    if do_mixed and MIXED not in phases and lo and hi is not None:
        extra = max(ladder.resolution, ladder.step // 2)
        return Step(MIXED, lo + extra, fast, cpu_decoded=extra)
    return None
