"""``streamdet val`` on several devices: one process per device over ``torch.distributed``.

Each rank runs the daemon's own stages (:class:`streamdet.detector.Detector`) on its device over
its share of the images (whole batches, see :func:`streamdet.val.predict_shard`), the per-image
predictions are gathered to rank 0 (``gather_object``), and rank 0 scores them in image order
with the same :func:`streamdet.evaluation.evaluate` as a one-device run, so the numbers are the
same to the last digit. The process group is gloo, or NCCL when every device is a GPU.

Two ways in:

- :func:`run_spawned` (``--devices a,b``): this process spawns one process per device (rank r on
  device r), rendezvous through a file in a temporary folder, and watches them: the first rank
  that fails makes the whole run fail with that rank's exception; the others are stopped.
- :func:`run_rank` (launched by ``torchrun``, which sets ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``): this process joins torchrun's group (``env://``), so one run
  can span machines; torchrun's agent stops the group when a rank fails.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import os
import pickle
import queue
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from streamdet.errors import ConfigError
from streamdet.val_core import ValJob, ValResult, predict_shard, score

__all__ = ["DevicesError", "TorchrunEnv", "check_devices", "group_backend", "parse_devices", "run_rank",
           "run_spawned", "torchrun_env"]

GROUP_TIMEOUT = timedelta(hours=2)
"""Longest wait in one collective (rank 0 waits in the gather while slower ranks still infer);
a backstop only: a failed rank is noticed at once by :func:`run_spawned` or torchrun's agent."""
POLL_S = 0.2  # how often run_spawned looks at its ranks while waiting for the result
LAST_WORD_S = 2.0  # how long a rank found dead may still have its error on the way
EXIT_GRACE_S = 10.0  # how long ranks get to exit after the result, or after SIGTERM
_DEVICE_RE = re.compile(r"^(cpu|cuda(?::(\d+))?)$")


class DevicesError(ConfigError):
    """``--devices`` names a device this machine cannot use, or comes with ``--device``."""


@dataclass(frozen=True)
class TorchrunEnv:
    """This process's place in a group launched by torchrun."""

    rank: int
    world: int
    local_rank: int


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """The torchrun variables of ``environ`` (default ``os.environ``), None when not launched by torchrun."""
    env = os.environ if environ is None else environ
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    if not all(n in env for n in names) or "MASTER_ADDR" not in env:
        return None
    try:
        rank, world, local_rank = (int(env[n]) for n in names)
    except ValueError:
        raise DevicesError(f"torchrun environment: {', '.join(n + '=' + env[n] for n in names)}: "
                           "expected integers") from None
    if not 0 <= rank < world or local_rank < 0:
        raise DevicesError(f"torchrun environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}")
    return TorchrunEnv(rank, world, local_rank)


def parse_devices(spec: str) -> list[str]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``, checked by :func:`check_devices`."""
    entries = [e.strip() for e in spec.split(",")]
    if not all(entries):
        raise DevicesError(f"--devices {spec!r}: expected a comma-separated list such as cuda:0,cuda:1 or cpu,cpu")
    return check_devices(entries)


def check_devices(devices: Sequence[str]) -> list[str]:
    """The canonical spelling of each device (``cpu``, ``cuda:N``); :class:`DevicesError` when the
    list is empty, names an unknown device or a GPU torch cannot use here, or names one GPU twice
    (NCCL runs one process per GPU)."""
    if len(devices) < 1:
        raise DevicesError("--devices: no device given")
    out = []
    for d in devices:
        m = _DEVICE_RE.match(d.strip().lower()) if isinstance(d, str) else None
        if m is None:
            raise DevicesError(f"--devices: unknown device {d!r}: expected cpu, cuda or cuda:N")
        out.append("cpu" if m.group(1) == "cpu" else f"cuda:{int(m.group(2) or 0)}")
    gpus = [int(d.partition(":")[2]) for d in out if d != "cpu"]
    if gpus:
        import torch

        if not torch.cuda.is_available():
            raise DevicesError(f"--devices: cuda:{gpus[0]} needs CUDA, which torch {torch.__version__} "
                               "cannot use here (no visible GPU, or a CPU-only build)")
        count = torch.cuda.device_count()
        for i in gpus:
            if i >= count:
                raise DevicesError(f"--devices: cuda:{i}, but only {count} GPU(s) are visible "
                                   f"(cuda:0..cuda:{count - 1})")
        for i in gpus:
            if gpus.count(i) > 1:
                raise DevicesError(f"--devices: cuda:{i} is listed twice (one process per GPU)")
    return out


def group_backend(devices: Sequence[str]) -> str:
    """``nccl`` when every device is a GPU, else ``gloo``."""
    return "nccl" if all(d.startswith("cuda") for d in devices) else "gloo"


def _rank_result(job: ValJob, device: str, rank: int, world: int, backend: str, init_method: str) -> ValResult:
    """Join the group, predict this rank's share, gather the shares to rank 0, score there, and
    broadcast the result, so that every rank returns rank 0's :class:`ValResult`."""
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # NCCL's object collectives use the current GPU
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world, timeout=GROUP_TIMEOUT)
    start = time.perf_counter()
    total, names, shard = predict_shard(job, device, rank, world)
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object((device, names, shard), gathered, dst=0)
    box: list[Any] = [None]
    if gathered is not None:
        for r, (_, other, _) in enumerate(gathered):
            if other != names:
                raise RuntimeError(f"rank {r} has the classes {other}, rank 0 has {names}")
        devices = [d for d, _, _ in gathered]
        box[0] = score(names, total, [s for _, _, s in gathered], time.perf_counter() - start, devices)
    dist.broadcast_object_list(box, src=0)
    dist.barrier()  # every rank is done with the collectives before any tears its group down
    dist.destroy_process_group()
    result: ValResult = box[0]
    return result


def run_rank(job: ValJob, env: TorchrunEnv, devices: Sequence[str] | None, device: str | None) -> ValResult:
    """One rank of a torchrun group: its device is ``devices[LOCAL_RANK]``, else ``device``, else
    ``cuda:LOCAL_RANK`` (``cpu`` without CUDA). Returns rank 0's result on every rank."""
    if devices is not None:
        if env.local_rank >= len(devices):
            raise DevicesError(f"--devices lists {len(devices)} device(s) but this process is LOCAL_RANK "
                               f"{env.local_rank}: give one device per process on each machine")
        dev = devices[env.local_rank]
    elif device is not None:
        dev = check_devices([device])[0]
    else:
        import torch

        dev = f"cuda:{env.local_rank}" if torch.cuda.is_available() else "cpu"
    return _rank_result(job, dev, env.rank, env.world, group_backend([dev]), "env://")


def _pickled_error(exc: BaseException) -> bytes:
    """``exc`` pickled, or a RuntimeError with its text when it does not survive pickling."""
    try:
        data = pickle.dumps(exc)
        pickle.loads(data)
        return data
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def _spawned_rank(job: ValJob, devices: list[str], rank: int, init_method: str, backend: str, out: Any) -> None:
    """Entry point of a spawned rank: rank 0 sends its result, a failing rank its exception."""
    code = 0
    try:
        result = _rank_result(job, devices[rank], rank, len(devices), backend, init_method)
        if rank == 0:
            out.put(("result", rank, pickle.dumps(result)))
    except BaseException as exc:
        exc.add_note(f"(val rank {rank} of {len(devices)}, on {devices[rank]})")
        out.put(("error", rank, _pickled_error(exc)))
        code = 1
    out.close()
    out.join_thread()  # the message is in the pipe before this rank's sockets close
    if code:
        sys.exit(code)


def _exit_text(code: int | None) -> str:
    return f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"


def _wait(procs: list[BaseProcess], devices: list[str], inbox: Any) -> ValResult:
    """Rank 0's result, or the first failing rank's exception raised here."""
    while True:
        try:
            kind, rank, payload = inbox.get(timeout=POLL_S)
        except queue.Empty:
            dead = [r for r, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if not dead and any(p.exitcode is None for p in procs):
                continue
            try:
                kind, rank, payload = inbox.get(timeout=LAST_WORD_S)
            except queue.Empty:
                if dead:
                    r = dead[0]
                    raise RuntimeError(f"val rank {r} ({devices[r]}) ended with "
                                       f"{_exit_text(procs[r].exitcode)} and no error message") from None
                raise RuntimeError("every val rank exited but rank 0 sent no result") from None
        if kind == "result":
            result: ValResult = pickle.loads(payload)
            return result
        raise pickle.loads(payload)


def _stop(procs: list[BaseProcess]) -> None:
    """Terminate the ranks still running, then kill those that do not exit."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + EXIT_GRACE_S
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def run_spawned(job: ValJob, devices: list[str]) -> ValResult:
    """Validate with one spawned process per device (``devices`` as :func:`check_devices` returns them)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    start = time.perf_counter()
    backend = group_backend(devices)
    with tempfile.TemporaryDirectory(prefix="streamdet-val-") as tmp:
        init_method = Path(tmp, "rendezvous").as_uri()
        inbox = ctx.Queue()
        procs: list[BaseProcess] = [
            ctx.Process(target=_spawned_rank, args=(job, devices, r, init_method, backend, inbox),
                        name=f"streamdet-val-rank{r}", daemon=True)
            for r in range(len(devices))
        ]
        try:
            for p in procs:
                p.start()
            result = _wait(procs, devices, inbox)
            deadline = time.monotonic() + EXIT_GRACE_S
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
        finally:
            _stop(procs)
            inbox.close()
    return replace(result, seconds=time.perf_counter() - start)
