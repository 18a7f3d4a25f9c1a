"""Which devices the workers run on, and what each worker and camera is told about its GPU.

Decided in the supervisor without initialising CUDA (and without importing torch or CuPy): GPUs
are counted by a discovery function, by default :func:`streamdet.preflight.visible_gpus` (the
NVIDIA driver's /proc entries, limited by the supervisor's own ``CUDA_VISIBLE_DEVICES``), which
tests replace. A configured ``cuda:N`` means CUDA's device N as the supervisor's environment
numbers them, as it would for torch started there.

Each GPU worker gets ``CUDA_VISIBLE_DEVICES`` naming its GPU alone, set in the child before
anything there can initialise CUDA (:func:`streamdet.supervisor.children.child_entry`); inside the
worker that GPU is ``cuda:0``, so nothing in it can allocate on another GPU. The variable names
the GPU as the supervisor's ``CUDA_VISIBLE_DEVICES`` does (an index or a ``GPU-``/``MIG-`` UUID),
and ``CUDA_DEVICE_ORDER`` is inherited, so the child's one device is the supervisor's ``cuda:N``.
Decoder processes keep the supervisor's view of the GPUs (a decoder may serve cameras of several
workers): their NVDEC device is the same index N (:func:`nvdec_device`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from streamdet.config.schema import AUTO_DEVICES

log = logging.getLogger("streamdet.supervisor")

GpuCounter = Callable[[], int]
"""Counts the GPUs this process could use, without initialising CUDA."""


def default_gpu_counter() -> int:
    """The visible NVIDIA GPUs (:func:`streamdet.preflight.visible_gpus`)."""
    from streamdet.preflight import visible_gpus

    return visible_gpus()


def resolve_devices(configured: tuple[str, ...], gpus: int) -> tuple[str, ...]:
    """The worker devices for the configured ones: ``auto`` = ``cuda:0 .. cuda:N-1`` for ``gpus`` > 0,
    else ``cpu``; an explicit list is kept as it is."""
    if tuple(configured) != AUTO_DEVICES:
        return tuple(configured)
    if gpus <= 0:
        return ("cpu",)
    return tuple(f"cuda:{i}" for i in range(gpus))


def gpu_index(device: str) -> int | None:
    """``cuda:N`` -> N; None for ``cpu``."""
    kind, _, index = device.partition(":")
    if kind != "cuda":
        return None
    return int(index or 0)


def cuda_visible_entry(device: str, environ: Mapping[str, str] | None = None) -> str | None:
    """What a worker on ``device`` gets as ``CUDA_VISIBLE_DEVICES``: the N-th entry of the
    supervisor's own ``CUDA_VISIBLE_DEVICES`` when it has one (an index or a UUID), else ``"N"``;
    None for ``cpu``. An N beyond that list is returned as ``"N"`` (the worker then reports
    the missing device, as ``streamdet check`` does)."""
    index = gpu_index(device)
    if index is None:
        return None
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(entries):
            return entries[index]
    return str(index)


def worker_environment(visible_device: str | None) -> dict[str, str]:
    """Environment variables set in a worker process before anything imports torch: its GPU alone."""
    if visible_device is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": visible_device}


def worker_spec_device(device: str) -> str:
    """The device a worker for ``device`` uses inside its process: ``cuda:0`` for any GPU (it sees
    only its own), ``cpu`` for the CPU."""
    return "cpu" if gpu_index(device) is None else "cuda:0"


def nvdec_device(decode: str, worker_device: str, gpus: int) -> str | None:
    """The CUDA device index (as the supervisor's environment numbers them) a camera's decoder
    asks NVDEC for, or None when the camera has no GPU:

    - ``cpu``: None (never touches a GPU);
    - ``auto``: the GPU of the camera's worker, None when the worker is on the CPU or no GPU is
      visible (the decoder then decodes on the CPU, silently);
    - ``nvdec``: the worker's GPU, else GPU 0 when any is visible, else None (the decoder then
      tries CUDA's default device and, failing, falls back to the CPU with the reason logged).
    """
    if decode == "cpu":
        return None
    index = gpu_index(worker_device)
    if index is not None and gpus > 0:
        return str(index)
    if decode == "nvdec" and gpus > 0:
        return "0"
    return None
