"""Finishing a checkpoint as Ultralytics ``train.py`` does when a run ends (``strip_optimizer``).

While a run trains, its ``best.pt``/``last.pt`` carry ``epoch`` (0-based) and ``best_fitness``;
``train.py --resume`` starts again at ``epoch + 1``. When the run ends, ``strip_optimizer``
rewrites both files as finished: ``epoch`` -1, ``best_fitness``, ``ema``, ``updates`` and
``optimizer`` None, the EMA weights (when present) as ``model``. Only then does ``--resume``
refuse the file ("training to N epochs is finished, nothing to resume") instead of accepting it
and running no epoch at all.

The two values this erases are still worth knowing (which epoch the weights are from, and the
validation fitness that selected them), so :func:`finish_checkpoint` keeps them under
``opt["streamdet"]["finished"]`` (Ultralytics ignores ``opt["streamdet"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from streamdet.errors import CheckpointError
from streamdet.model.checkpoint.loader import load_model
from streamdet.model.checkpoint.reader import PathLike, read_checkpoint
from streamdet.model.checkpoint.train_meta import STREAMDET_OPT_KEY
from streamdet.model.checkpoint.writer import save_checkpoint

FINISHED_KEY = "finished"  # opt["streamdet"]["finished"]: the epoch and best_fitness before finishing
# The top-level entries of a finished best.pt, as strip_optimizer leaves them.
FINISHED_FIELDS: Mapping[str, Any] = MappingProxyType(
    {"epoch": -1, "best_fitness": None, "ema": None, "updates": None, "optimizer": None})


def is_finished(meta: Mapping[str, Any]) -> bool:
    """Whether checkpoint ``meta`` (:attr:`Checkpoint.meta`) is that of a finished run."""
    return all(meta.get(k) == v for k, v in FINISHED_FIELDS.items() if k not in ("ema", "optimizer"))


def finished_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """``meta`` as a finished checkpoint's: see the module docstring.

    ``opt["streamdet"]["finished"]`` records ``{"epoch": ..., "best_fitness": ...}`` as they were;
    the ``opt`` of a checkpoint that is finished already is left as it is (finishing twice changes
    nothing).
    """
    out = {**meta, **FINISHED_FIELDS}
    if is_finished(meta):
        return out
    opt = meta.get("opt")
    if opt is None:
        opt = {}
    if not isinstance(opt, Mapping):
        raise CheckpointError(f"checkpoint 'opt' must be a dict of training options, got {type(opt).__name__}")
    ours = opt.get(STREAMDET_OPT_KEY, {})
    if not isinstance(ours, Mapping):
        raise CheckpointError(f"checkpoint opt[{STREAMDET_OPT_KEY!r}] must be a dict, got {type(ours).__name__}")
    ours = dict(ours)
    ours[FINISHED_KEY] = {"epoch": meta.get("epoch"), "best_fitness": meta.get("best_fitness")}
    out["opt"] = {**opt, STREAMDET_OPT_KEY: ours}
    return out


def finish_checkpoint(src: PathLike, dst: PathLike | None = None) -> Path:
    """Write checkpoint ``src`` as a finished ``best.pt`` to ``dst`` (default: over ``src``).

    The weights are exactly those of ``src`` (its EMA when it has one, as ``strip_optimizer``
    takes it): float16 read, float32 in our model, float16 written is lossless. ``opt``, ``git``
    and ``date`` are kept. ``model.hyp`` and ``model.class_weights`` are derived from ``opt`` again,
    as :func:`save_checkpoint` does for every file (the class weights become ones). Returns the
    path written.
    """
    ckpt = read_checkpoint(src)
    model = load_model(src, fuse=False)
    return save_checkpoint(model, Path(src) if dst is None else Path(dst), **finished_meta(ckpt.meta))

