"""Safe reading and writing of Ultralytics YOLOv5 checkpoints (``.pt`` files).

* :mod:`.allowlist`: the one list of pickle globals a checkpoint may reference; both sides use it.
* :mod:`.reader`: :func:`read_checkpoint` unpickles a file without executing anything from it
  (globals outside the allow-list raise :class:`~streamdet.errors.UnsafeCheckpointError`) and
  returns a plain-data :class:`Checkpoint`.
* :mod:`.loader`: :func:`load_model` builds our :class:`~streamdet.model.yolov5.YOLOv5` from it.
* :mod:`.writer`: :func:`save_checkpoint` writes the Ultralytics ``best.pt`` format, refusing any
  global the reader would refuse.
* :mod:`.finish`: :func:`finish_checkpoint` rewrites a checkpoint as a finished ``best.pt``
  (``epoch`` -1, ``best_fitness`` None, as train.py's ``strip_optimizer`` leaves it).
"""

from __future__ import annotations

from streamdet.model.checkpoint.finish import finish_checkpoint
from streamdet.model.checkpoint.loader import load_model
from streamdet.model.checkpoint.reader import Checkpoint, read_checkpoint
from streamdet.model.checkpoint.writer import save_checkpoint

__all__ = ["Checkpoint", "finish_checkpoint", "load_model", "read_checkpoint", "save_checkpoint"]
