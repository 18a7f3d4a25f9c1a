"""Resumable training: everything needed to continue a run after its last finished epoch.

``state.pt`` beside ``last.pt`` holds the raw and EMA weights, the optimiser and scaler states, the
step counters and the per-epoch records, written atomically after every epoch. It is our own file
(plain tensors, numbers and strings), so it loads with ``torch.load(weights_only=True)``. Data
order and augmentation are pure functions of (seed, epoch, index), so a resumed run sees the same
batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

STATE_NAME = "state.pt"
STATE_VERSION = 1
# Options that may differ between the interrupted run and its resumption (they do not change the result).
RESUME_FREE = frozenset({"resume", "threads", "workers", "max_iters", "device"})


@dataclass
class TrainState:
    """The run's progress after ``epoch`` (0-based) finished."""

    config: dict[str, Any]
    epoch: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    ema_updates: int
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    last_step: int
    best_fitness: float
    records: list[dict[str, Any]]
    losses: list[float]


def state_path(out: str | Path) -> Path:
    """Where a run in ``out`` keeps its resumable state."""
    return Path(out) / STATE_NAME


def save_state(out: str | Path, state: TrainState) -> Path:
    """Write the state atomically (a crash mid-write leaves the previous epoch's state)."""
    path = state_path(out)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"version": STATE_VERSION, **state.__dict__}, tmp)
    os.replace(tmp, path)
    return path


def _read(out: str | Path) -> dict[str, Any]:
    path = state_path(out)
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: no {STATE_NAME} in {out} (a run writes it after each epoch)")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a training state of version {STATE_VERSION}")
    return raw


def saved_config(out: str | Path) -> dict[str, Any]:
    """The options (JSON form) of the run in ``out``, from its state."""
    config: dict[str, Any] = _read(out)["config"]
    return config


def load_state(out: str | Path, config: dict[str, Any]) -> TrainState:
    """Read the state of the run in ``out``; its options must equal ``config`` (see :data:`RESUME_FREE`)."""
    raw = _read(out)
    saved = raw["config"]
    differ = sorted(
        k for k in set(saved) | set(config) if k not in RESUME_FREE and saved.get(k) != config.get(k)
    )
    if differ:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in differ[:6])
        raise ValueError(f"cannot resume {out}: options differ from the interrupted run ({shown})")
    fields = {k: v for k, v in raw.items() if k != "version"}
    return TrainState(**fields)
