"""``model.preprocess: auto | cpu | cuda``: which feed a worker runs, decided at warm-up, before READY.

* ``cpu``: the host feed.
* ``cuda``: the device feed; a worker that cannot start it (not a CUDA device, no CuPy, not the
  torch backend, a failing self-check) cannot start at all (:class:`FeedUnavailable`: the worker
  exits EXIT_CANNOT_START with one line naming why, and the daemon exits 2).
* ``auto``: the device feed on a CUDA worker when CuPy imports and the self-check passes, else
  the host feed, with one log line naming the reason.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamdet.pipeline.worker.feed import Feed, HostFeed

if TYPE_CHECKING:
    from streamdet.pipeline.cuda.runtime import CudaRuntime
    from streamdet.pipeline.stages import Stages

__all__ = ["FeedUnavailable", "choose_feed", "device_feed_obstacle"]

log = logging.getLogger("streamdet.worker")

RuntimeFactory = Callable[[str], "CudaRuntime"]


class FeedUnavailable(RuntimeError):
    """``preprocess: cuda`` cannot run on this worker (the message names why)."""


def device_feed_obstacle(device: str, backend: str, *, emulated: bool = False) -> str | None:
    """Why the device feed cannot run for this worker, or None. ``emulated``: the CUDA layer is the
    CPU emulation (tests), so neither a CUDA device nor CuPy is needed."""
    if not emulated and not device.startswith("cuda"):
        return f"the worker's device is {device}: the device feed needs a CUDA device"
    if not emulated and importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install 'streamdet[gpu]')"
    if backend != "torch":
        return f"the {backend} backend takes host batches; the device feed needs the torch backend"
    return None


def _real_runtime(device: str) -> CudaRuntime:
    from streamdet.pipeline.cuda.runtime import TorchCudaRuntime

    runtime: CudaRuntime = TorchCudaRuntime(device)
    return runtime


def choose_feed(name: str, mode: str, device: str, stages: Stages, *, max_batch: int,
                warmup_hw: tuple[int, int], runtime_factory: RuntimeFactory | None = None) -> Feed:
    """The worker's feed for ``mode`` (see the module docstring). ``runtime_factory`` replaces the real
    CUDA layer (the emulation, in tests). Raises :class:`FeedUnavailable` for ``cuda`` that cannot start."""
    if mode not in ("auto", "cpu", "cuda"):
        raise ValueError(f"model.preprocess must be auto, cpu or cuda, not {mode!r}")
    if mode == "cpu":
        return HostFeed(stages)
    obstacle = device_feed_obstacle(device, stages.backend.name, emulated=runtime_factory is not None)
    dtype = stages.backend.contract.tensor_dtype or "float32"  # the torch backend's model dtype
    runtime: Any = None
    if obstacle is None:
        try:
            runtime = (runtime_factory or _real_runtime)(device)
            runtime.compile()
            from streamdet.pipeline.worker.selfcheck import self_check

            obstacle = self_check(runtime, stages.input_shape, dtype)
            if obstacle is not None:
                obstacle = f"the start-up self-check failed: {obstacle}"
        except Exception as exc:  # any failure of CUDA, CuPy or NVRTC here means: not this feed
            obstacle = f"the CUDA path cannot start: {type(exc).__name__}: {exc}"
        if obstacle is not None and runtime is not None:
            runtime.close()
    if obstacle is not None:
        if mode == "cuda":
            raise FeedUnavailable(f"model.preprocess: cuda: {obstacle}")
        log.info("%s: preprocess: cpu (%s)", name, obstacle)
        return HostFeed(stages, obstacle)
    from streamdet.pipeline.worker.device_feed import DeviceFeed

    feed = DeviceFeed(runtime, stages, dtype=dtype, max_batch=max_batch)
    graphs = feed.warm_graphs(stages.input_shape([warmup_hw]), max_batch)
    log.info("%s: preprocess: cuda (self-check passed; pinned rings, CUDA graphs: %s)", name, graphs)
    return feed
