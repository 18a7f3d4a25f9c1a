"""``streamdet val``: the daemon's accuracy (COCO-style mAP) on a YOLO-layout data set or a clip.

Frames go through :class:`streamdet.detector.Detector`, the daemon's own preprocessing, model and
postprocessing, so the number measured here is the daemon's accuracy. ``data`` is a YOLO-layout
folder (see :mod:`streamdet.datasets.yolo`) or an ``.mp4`` clip with its ground truth
``<stem>.jsonl`` beside it (frames decoded with PyAV, matched to ground truth by index, their
presentation times checked against the ground truth's ``pts``).

With several devices (``devices=["cuda:0", "cuda:1"]``, or under ``torchrun``) the images are
sharded over one process per device and the per-image predictions gathered to rank 0, which
scores them exactly as one device does (:mod:`streamdet.val_distributed`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from streamdet.evaluation import format_table
from streamdet.val_core import (
    PTS_TOLERANCE,
    VAL_NMS,
    VIDEO_SUFFIXES,
    Shard,
    ValJob,
    ValResult,
    iter_clip,
    iter_yolo,
    predict_shard,
    score,
)

if TYPE_CHECKING:
    from streamdet.pipeline.settings import InferenceOptions

__all__ = [
    "PTS_TOLERANCE", "VAL_NMS", "VIDEO_SUFFIXES", "Shard", "ValJob", "ValResult", "format_result", "iter_clip",
    "iter_yolo", "predict_shard", "run_val", "score", "val_main",
]


def run_val(
    options: InferenceOptions,
    data: str | Path,
    *,
    device: str | None = None,
    devices: Sequence[str] | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> ValResult:
    """Run the detector over ``data`` with the model ``options`` and score it (see the module doc).

    Where it runs is val's own choice, so ``options.device`` is replaced: by ``device`` (default
    ``cpu``) in this process; with ``devices`` of more than one entry, one process per device
    (:func:`streamdet.val_distributed.run_spawned`), with the same result. Under ``torchrun`` this
    process is one rank of its group (:func:`streamdet.val_distributed.run_rank`) and every rank
    returns rank 0's result. ``device`` and ``devices`` together raise
    :class:`~streamdet.val_distributed.DevicesError`. The NMS settings are ``options.nms``
    (val's usual ones are :data:`~streamdet.val_core.VAL_NMS`).
    """
    from streamdet.val_distributed import DevicesError, check_devices, run_rank, run_spawned, torchrun_env

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is not None and devices is not None:
        raise DevicesError("--device and --devices together: give one (--devices a,b,... runs a process per device)")
    job = ValJob(options, data, batch_size, progress)
    checked = check_devices(devices) if devices is not None else None
    env = torchrun_env()
    if env is not None:
        return run_rank(job, env, checked, device)
    if checked is not None and len(checked) > 1:
        return run_spawned(job, checked)
    dev = checked[0] if checked is not None else (device or "cpu")
    start = time.perf_counter()
    total, names, shard = predict_shard(job, dev)
    return score(names, total, [shard], time.perf_counter() - start, [dev])


def format_result(result: ValResult) -> str:
    """The human-readable table of a :class:`ValResult`, with the wall time."""
    return f"{format_table(result.detail, result.names)}\n{result.images} images in {result.seconds:.1f} s"


def val_main(
    options: InferenceOptions,
    data: str | Path,
    *,
    device: str | None = None,
    devices: Sequence[str] | None = None,
    batch_size: int = 8,
    as_json: bool = False,
    progress: bool = True,
    out: TextIO | None = None,
) -> int:
    """``streamdet val``: run :func:`run_val` and print the table (or one JSON line); returns 0.

    Under ``torchrun`` only rank 0 prints. On several devices of one machine::

        streamdet val --weights best.pt --data DIR --devices cuda:0,cuda:1

    and across machines (one process per GPU, rank 0's machine at HOST)::

        torchrun --nnodes 2 --node-rank N --nproc-per-node 8 --master-addr HOST --master-port 29500 \\
            -m streamdet.cli val --weights best.pt --data DIR

    (each process takes ``--devices``' entry at its ``LOCAL_RANK``, else ``cuda:LOCAL_RANK``).

    Errors propagate as exceptions (``DatasetError`` and other ``StreamdetError`` kinds) for the
    CLI to map to exit codes.
    """
    from streamdet.val_distributed import torchrun_env

    result = run_val(options, data, device=device, devices=devices, batch_size=batch_size, progress=progress)
    env = torchrun_env()
    if env is not None and env.rank != 0:
        return 0
    stream = out if out is not None else sys.stdout
    stream.write((result.to_json() if as_json else format_result(result)) + "\n")
    stream.flush()
    return 0
