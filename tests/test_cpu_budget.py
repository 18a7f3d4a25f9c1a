"""The CPU budget: inference lanes and threads from usable CPUs, cameras and CPU workers."""

from __future__ import annotations

import os

import pytest

from streamdet.cpu_budget import InferencePlan, inference_budget, plan_inference, usable_cpus


def test_every_cpu_serves_inference() -> None:
    assert inference_budget(2, 1) == 2
    assert inference_budget(16, 1) == 16


def test_cpu_workers_share_the_budget() -> None:
    assert inference_budget(16, 2) == 8
    assert inference_budget(3, 2) == 1
    assert inference_budget(1, 3) == 1  # never below one


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        inference_budget(0, 1)
    with pytest.raises(ValueError):
        inference_budget(4, 0)


def test_lanes_before_threads() -> None:
    assert plan_inference(1) == InferencePlan(1, 1)
    assert plan_inference(2) == InferencePlan(2, 1)
    assert plan_inference(16) == InferencePlan(4, 4)


def test_explicit_settings_are_kept() -> None:
    assert plan_inference(16, threads=8) == InferencePlan(1, 8)
    assert plan_inference(16, lanes=2) == InferencePlan(2, 8)
    assert plan_inference(2, lanes=3, threads=3) == InferencePlan(3, 3)


def test_usable_cpus_follows_the_affinity_mask() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))
