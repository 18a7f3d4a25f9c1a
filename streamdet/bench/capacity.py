"""Real-time capacity search: the largest number of cameras a system holds, in bounded time.

A trial runs ``n`` cameras and says whether they were held (few drops, bounded latency). Holding
is assumed monotone in ``n``, so the search starts from a guess (from the unpaced throughput),
doubles up or halves down until it brackets the boundary, then bisects. It stops early, keeping
the best answer so far and marking the result incomplete, when the next trial would overrun the
time budget. Trials are injected, so tests drive the search with fake ones and a fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Trial(Protocol):
    """What the search needs from a trial result (read-only, so frozen dataclasses fit)."""

    @property
    def n(self) -> int: ...

    @property
    def passed(self) -> bool: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class CapacityResult:
    """Outcome: ``capacity`` (0 when even one camera fails), the trials run, and whether it finished.

    ``bracket`` is (largest n held, smallest n not held; ``max_n + 1`` when none failed).
    """

    capacity: int
    max_n: int
    bracket: tuple[int, int]
    complete: bool
    elapsed_s: float
    trials: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (trials sorted by n)."""
        return {"capacity": self.capacity, "max_n": self.max_n, "bracket": list(self.bracket),
                "complete": self.complete, "elapsed_s": round(self.elapsed_s, 1),
                "trials": [t.to_dict() for t in sorted(self.trials, key=lambda t: t.n)]}


def initial_guess(throughput_fps: float | None, rate: float, max_n: int) -> int:
    """Where to start: cameras at ``rate`` that the unpaced throughput could feed, in [1, max_n]."""
    if not throughput_fps or throughput_fps <= 0 or rate <= 0:
        return 1
    return max(1, min(max_n, int(throughput_fps / rate)))


def search_capacity(
    trial: Callable[[int], Trial],
    max_n: int,
    budget_s: float,
    start: int = 1,
    clock: Callable[[], float] = time.monotonic,
    on_trial: Callable[[Trial], None] | None = None,
) -> CapacityResult:
    """Largest ``n`` in ``[1, max_n]`` with ``trial(n).passed`` (0 if none), within ``budget_s``.

    The first trial always runs; a later one only when the time spent plus the longest trial so far
    fits in the budget. ``on_trial`` is called after each trial (progress reporting).
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    began = clock()
    lo, hi = 0, max_n + 1  # largest known pass, smallest known fail
    n = max(1, min(max_n, start))
    trials: list[Trial] = []
    longest = 0.0
    complete = True
    while lo + 1 < hi:
        if trials and clock() - began + longest > budget_s:
            complete = False
            break
        t_trial = clock()
        result = trial(n)
        longest = max(longest, clock() - t_trial)
        trials.append(result)
        if on_trial is not None:
            on_trial(result)
        if result.passed:
            lo = n
            n = min(2 * n, max_n) if hi == max_n + 1 else (lo + hi) // 2
        else:
            hi = n
            n = max(1, n // 2) if lo == 0 else (lo + hi) // 2
    return CapacityResult(capacity=lo, max_n=max_n, bracket=(lo, hi), complete=complete,
                          elapsed_s=clock() - began, trials=trials)
