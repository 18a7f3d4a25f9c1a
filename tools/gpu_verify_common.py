"""What every stage of tools/gpu_verify.py shares: its context, the skip signal, CUDA timing, the result line.

A stage is a function ``stage(ctx) -> dict`` (the measurements, with a short ``headline``); it
raises :class:`Skip` when something it needs is missing, and checks ``ctx.left()`` to stop
measuring in time. :func:`run_stage_here` runs one in the current process and prints its result
as one ``RESULT_MARK`` line for the parent (:mod:`gpu_verify`); ``ctx.partial(...)`` prints
intermediate results, which the parent keeps when the stage is killed at its time limit.
"""

from __future__ import annotations

import json
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULT_MARK = "GPU_VERIFY_RESULT "


class Skip(Exception):
    """The stage cannot run here; its message is the reason recorded."""


@dataclass
class StageContext:
    """One stage's run: its name, time budget, output and scratch folders, and the run's options."""

    name: str
    budget_s: float
    out: Path
    work: Path
    dry_run: bool = False
    e2e_ladder: tuple[int, int, int, int] | None = None  # e2e: start, step, max, resolution (None: the profile's)
    cpu_smoke: bool = False  # run the media stages' CPU profile (a check of the harness without a GPU)
    prior: dict[str, Any] | None = None  # this stage's record from an earlier call being resumed, if any
    started: float = field(default_factory=time.monotonic)

    def left(self) -> float:
        """Seconds left of this stage's budget."""
        return self.budget_s - (time.monotonic() - self.started)

    def partial(self, **data: Any) -> None:
        """Report what is measured so far (kept by the parent if the stage is killed)."""
        print(RESULT_MARK + json.dumps({"stage": self.name, "status": "partial", **data}, default=str), flush=True)


def require_cuda() -> Any:
    """torch with a usable CUDA device, else :class:`Skip` naming why."""
    try:
        import torch
    except ImportError as exc:
        raise Skip(f"torch is not installed ({exc})") from None
    if not torch.cuda.is_available():
        raise Skip(f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)")
    return torch


def require_cupy() -> Any:
    """CuPy, else :class:`Skip`."""
    try:
        import cupy
    except ImportError as exc:
        raise Skip(f"CuPy is not installed ({exc})") from None
    return cupy


def not_in_dry_run(ctx: StageContext) -> None:
    """Stop here in a dry run: the requirements were met, nothing is measured."""
    if ctx.dry_run:
        raise Skip("dry run: requirements met, nothing measured")


def cuda_times_ms(torch: Any, fn: Callable[[], Any], *, warmup: int, iters: int, until: float) -> list[float]:
    """Milliseconds of ``fn`` on the current stream, each between two CUDA events, after ``warmup``
    untimed calls; stops early at ``until`` (time.monotonic), returning what was timed."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: list[float] = []
    for _ in range(iters):
        if time.monotonic() > until and times:
            break
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def summary_ms(times: list[float]) -> dict[str, Any]:
    """Median, min and count of a list of milliseconds."""
    if not times:
        return {"median_ms": None, "min_ms": None, "n": 0}
    return {"median_ms": round(statistics.median(times), 4), "min_ms": round(min(times), 4), "n": len(times)}


def run_stage_here(ctx: StageContext) -> int:
    """Run stage ``ctx.name`` in this process; print its one result line. Always exits 0: the
    status is in the line."""
    from gpu_verify_bench import bandwidth_stage, inference_stage, nms_stage
    from gpu_verify_e2e import e2e_stage
    from gpu_verify_kernel import kernel_stage
    from gpu_verify_media import nvdec_stage
    from gpu_verify_probe import gpu_tests_stage, probe_stage

    stages: dict[str, Callable[[StageContext], dict[str, Any]]] = {
        "probe": probe_stage, "gpu_tests": gpu_tests_stage, "bandwidth": bandwidth_stage, "kernel": kernel_stage,
        "inference": inference_stage, "nms": nms_stage, "nvdec": nvdec_stage, "e2e": e2e_stage,
    }
    try:
        record = {"stage": ctx.name, "status": "ok", **stages[ctx.name](ctx)}
    except Skip as skip:
        record = {"stage": ctx.name, "status": "skipped", "reason": str(skip)}
    except Exception as exc:
        record = {"stage": ctx.name, "status": "error", "reason": f"{type(exc).__name__}: {exc}",
                  "traceback": "".join(traceback.format_exception(exc))[-3000:]}
    print(RESULT_MARK + json.dumps(record, default=str), flush=True)
    return 0
