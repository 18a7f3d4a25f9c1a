"""How a CPU worker runs inference: the CPUs this process may use, shared with the decoders.

Policy (``threads: {inference: auto, lanes: auto}``): every CPU in ``os.sched_getaffinity``
serves inference, split evenly between CPU workers; nothing is reserved for the decoders,
because idle inference threads sleep (``OMP_WAIT_POLICY=PASSIVE``, no ONNX Runtime spinning)
rather than spin, so the decoders get the cores whenever inference waits. (Reserving one CPU per
8 cameras was tried: with 8 paced cameras on 2 CPUs it left a third of the machine idle and
halved the cameras held.) The budget is spent on concurrent inference *lanes* (whole batches in
parallel, up to ``MAX_LANES``) of single-threaded inference before intra-op threads: on the
2-core development machine two single-threaded lanes did 1.4x the work of one lane with two
threads (docs/benchmarks.md). Explicit numbers override the automatic choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MAX_LANES = 4


@dataclass(frozen=True)
class InferencePlan:
    """Concurrent inference lanes of one CPU worker, and the intra-op threads of each."""

    lanes: int
    threads: int


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and systemd narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def inference_budget(cpus: int, cpu_workers: int) -> int:
    """CPUs' worth of inference for each CPU worker under the policy in the module docstring."""
    if cpus < 1 or cpu_workers < 1:
        raise ValueError(f"need at least one CPU and one worker, got cpus={cpus} cpu_workers={cpu_workers}")
    return max(1, cpus // cpu_workers)


def plan_inference(budget: int, lanes: int | None = None, threads: int | None = None) -> InferencePlan:
    """Lanes and threads per lane for ``budget`` CPUs; a given ``lanes`` or ``threads`` is kept."""
    if lanes is not None and threads is not None:
        return InferencePlan(lanes, threads)
    if lanes is not None:
        return InferencePlan(lanes, max(1, budget // lanes))
    if threads is not None:
        return InferencePlan(1, threads)
    lanes = min(budget, MAX_LANES)
    return InferencePlan(lanes, max(1, budget // lanes))
