"""The capacity search with fake trials and a fake clock: correct answer, cap, time budget."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamdet.bench.capacity import initial_guess, search_capacity


@dataclass
class FakeTrial:
    n: int
    passed: bool

    def to_dict(self) -> dict:
        return {"n": self.n, "passed": self.passed}


class FakeSystem:
    """Holds up to ``limit`` cameras; each trial takes ``cost`` seconds of a fake clock."""

    def __init__(self, limit: int, cost: float = 10.0) -> None:
        self.limit, self.cost, self.now, self.calls = limit, cost, 0.0, []

    def clock(self) -> float:
        return self.now

    def trial(self, n: int) -> FakeTrial:
        self.calls.append(n)
        self.now += self.cost
        return FakeTrial(n, n <= self.limit)


@pytest.mark.parametrize("limit", [0, 1, 2, 3, 5, 7, 8, 13, 16])
@pytest.mark.parametrize("start", [1, 4, 16])
def test_finds_the_largest_passing_n(limit: int, start: int) -> None:
    system = FakeSystem(limit)
    result = search_capacity(system.trial, max_n=16, budget_s=1e9, start=start, clock=system.clock)
    assert result.capacity == limit
    assert result.complete
    assert len(set(system.calls)) == len(system.calls), "no n is tried twice"
    assert result.bracket == (limit, limit + 1)
    assert len(system.calls) <= 9  # doubling/halving plus bisection, far fewer than 16 trials


def test_respects_the_cap() -> None:
    system = FakeSystem(limit=100)
    result = search_capacity(system.trial, max_n=6, budget_s=1e9, start=1, clock=system.clock)
    assert result.capacity == 6
    assert max(system.calls) == 6
    assert system.calls == [1, 2, 4, 6]
    assert result.bracket == (6, 7)


def test_start_above_the_cap_is_clamped() -> None:
    system = FakeSystem(limit=3)
    result = search_capacity(system.trial, max_n=4, budget_s=1e9, start=50, clock=system.clock)
    assert system.calls[0] == 4
    assert result.capacity == 3


def test_stops_at_the_time_budget_with_a_lower_bound() -> None:
    system = FakeSystem(limit=16, cost=10.0)
    # 25 s: the first trial always runs, a second fits (10 + 10 <= 25), a third would not (20 + 10 > 25)
    result = search_capacity(system.trial, max_n=64, budget_s=25.0, start=1, clock=system.clock)
    assert system.calls == [1, 2]
    assert not result.complete
    assert result.capacity == 2  # best known so far, a lower bound
    assert result.elapsed_s == pytest.approx(20.0)


def test_first_trial_runs_even_with_no_budget() -> None:
    system = FakeSystem(limit=0)
    result = search_capacity(system.trial, max_n=8, budget_s=0.0, start=4, clock=system.clock)
    assert system.calls == [4]
    assert result.capacity == 0 and not result.complete


def test_bad_cap_is_rejected() -> None:
    with pytest.raises(ValueError):
        search_capacity(lambda n: FakeTrial(n, True), max_n=0, budget_s=10.0)


def test_trials_are_reported_and_serialised_in_n_order() -> None:
    system = FakeSystem(limit=5)
    seen: list[int] = []
    result = search_capacity(system.trial, max_n=16, budget_s=1e9, start=8, clock=system.clock,
                             on_trial=lambda t: seen.append(t.n))
    assert seen == system.calls
    ns = [t["n"] for t in result.to_dict()["trials"]]
    assert ns == sorted(system.calls)


@pytest.mark.parametrize(("fps", "rate", "cap", "expected"), [
    (None, 5, 16, 1), (0.0, 5, 16, 1), (55.0, 5, 16, 11), (55.0, 25, 16, 2), (10.0, 25, 16, 1), (1000.0, 5, 16, 16),
])
def test_initial_guess(fps: float | None, rate: float, cap: int, expected: int) -> None:
    assert initial_guess(fps, rate, cap) == expected
