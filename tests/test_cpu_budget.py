"""The CPU budget: inference threads from usable CPUs, cameras and CPU workers."""

from __future__ import annotations

import os

import pytest

from streamdet.cpu_budget import CAMERAS_PER_DECODE_CPU, inference_threads, usable_cpus


def test_small_gateway_gives_every_cpu_to_inference() -> None:
    assert inference_threads(2, 4, 1) == 2
    assert inference_threads(16, 1, 1) == 16


def test_many_cameras_reserve_decoding_cpus() -> None:
    assert inference_threads(16, 4 * CAMERAS_PER_DECODE_CPU, 1) == 12
    assert inference_threads(2, 100, 1) == 1  # never below one thread


def test_cpu_workers_share_the_budget() -> None:
    assert inference_threads(16, 0, 2) == 8
    assert inference_threads(3, 0, 2) == 1


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        inference_threads(0, 1, 1)
    with pytest.raises(ValueError):
        inference_threads(4, 1, 0)


def test_usable_cpus_follows_the_affinity_mask() -> None:
    assert usable_cpus() == len(os.sched_getaffinity(0))
