"""How many CPU threads inference gets: the CPUs this process may use, shared with the decoders.

Policy (``threads.inference: auto``): every CPU in ``os.sched_getaffinity`` runs inference
threads, less one CPU's worth for every ``CAMERAS_PER_DECODE_CPU`` cameras (a 25 fps 720p H.264
stream costs a few ms of one core per frame to decode: about a tenth of a core), never fewer than
one thread, split evenly between CPU workers. Idle inference threads sleep (``OMP_WAIT_POLICY=
PASSIVE``, no ONNX Runtime spinning) rather than spin, so when inference waits for frames the
decoders get the cores. An explicit ``threads.inference: N`` overrides all of this.
"""

from __future__ import annotations

import os

CAMERAS_PER_DECODE_CPU = 8


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and systemd narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def inference_threads(cpus: int, cameras: int, cpu_workers: int) -> int:
    """Intra-op threads for each CPU worker under the policy in the module docstring."""
    if cpus < 1 or cpu_workers < 1:
        raise ValueError(f"need at least one CPU and one worker, got cpus={cpus} cpu_workers={cpu_workers}")
    reserved = max(0, cameras) // CAMERAS_PER_DECODE_CPU
    return max(1, (cpus - reserved) // cpu_workers)
