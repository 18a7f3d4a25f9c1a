"""Safe reading and writing of Ultralytics YOLOv5 checkpoints (``.pt`` files).

* :mod:`.allowlist`: the one list of pickle globals a checkpoint may reference; both sides use it.
* :mod:`.reader`: :func:`read_checkpoint` unpickles a file without executing anything from it
  (globals outside the allow-list raise :class:`~streamdet.errors.UnsafeCheckpointError`) and
  returns a plain-data :class:`Checkpoint`.
* :mod:`.loader`: :func:`load_model` builds our :class:`~streamdet.model.yolov5.YOLOv5` from it.
* :mod:`.writer`: :func:`save_checkpoint` writes the Ultralytics ``best.pt`` format, refusing any
  global the reader would refuse.
"""

from __future__ import annotations

from streamdet.model.checkpoint.loader import load_model
from streamdet.model.checkpoint.reader import Checkpoint, read_checkpoint
from streamdet.model.checkpoint.writer import save_checkpoint

__all__ = ["Checkpoint", "load_model", "read_checkpoint", "save_checkpoint"]
