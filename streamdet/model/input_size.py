"""Which model input size (``img_size``) to run: configured, or the one the checkpoint was trained at.

A model trained at one input size detects worst far from it (the demo model, trained at 416,
misses large circles at 640). So when ``model.img_size`` is not configured the daemon uses the
size the checkpoint records (Ultralytics keeps ``opt["imgsz"]``, our trainer ``opt["img_size"]``),
else 640; a configured size more than ``WARN_RATIO`` times away from the trained one is run but
warned about. Pure arithmetic: no torch here (``streamdet check`` and the worker both use it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_IMG_SIZE", "WARN_RATIO", "InputSize", "choose_img_size", "trained_img_size"]

DEFAULT_IMG_SIZE = 640
WARN_RATIO = 1.5


@dataclass(frozen=True)
class InputSize:
    """The chosen size, why, and a warning when it is far from the trained size."""

    size: int
    reason: str
    warning: str | None = None

    def describe(self) -> str:
        """One line for logs and ``streamdet check``."""
        return f"img_size {self.size} ({self.reason})"


def trained_img_size(meta: Mapping[str, Any]) -> int | None:
    """The training input size a checkpoint's metadata records, or None: ``opt["imgsz"]`` (an
    int, or [train, val] as Ultralytics writes it) or ``opt["img_size"]`` (our trainer)."""
    opt = meta.get("opt")
    if not isinstance(opt, Mapping):
        return None
    for key in ("imgsz", "img_size"):
        value = opt.get(key)
        if isinstance(value, list | tuple) and value:
            value = value[0]
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def choose_img_size(configured: int | None, trained: int | None) -> InputSize:
    """The input size to run (see the module docstring)."""
    if configured is None:
        if trained is not None:
            return InputSize(trained, "the size the checkpoint was trained at")
        return InputSize(DEFAULT_IMG_SIZE, "the default: the checkpoint does not record its training size")
    if trained is None:
        return InputSize(configured, "configured")
    if max(configured / trained, trained / configured) > WARN_RATIO:
        return InputSize(configured, f"configured; the checkpoint was trained at {trained}",
                         f"model.img_size {configured} is more than {WARN_RATIO:g}x away from the size the "
                         f"checkpoint was trained at ({trained}): detections may suffer; leave img_size unset "
                         f"to use {trained}")
    return InputSize(configured, f"configured; the checkpoint was trained at {trained}")
