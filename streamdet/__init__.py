"""streamdet: real-time YOLOv5 object detection on video streams.

Public API (imported lazily so that ``import streamdet`` stays cheap and never
pulls torch into processes that do not need it, such as decoders or clients):

- :func:`load_model`  load an Ultralytics YOLOv5 ``.pt`` checkpoint safely
- :func:`nms`         official-semantics non-maximum suppression (torch, GPU-capable)
- :func:`letterbox`   official letterbox resize (cv2, bit-exact)
- :func:`scale_boxes` map boxes from model-input pixels back to the source image
- :class:`Detector`   frames in, per-frame detections out
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamdet._version import __version__

if TYPE_CHECKING:
    from streamdet.detector import Detector
    from streamdet.model.checkpoint import load_model
    from streamdet.pipeline.postprocess.postprocessor import nms, scale_boxes
    from streamdet.pipeline.preprocess.letterbox import letterbox

__all__ = ["Detector", "__version__", "letterbox", "load_model", "nms", "scale_boxes"]

_LAZY = {
    "load_model": "streamdet.model.checkpoint",
    "nms": "streamdet.pipeline.postprocess.postprocessor",
    "scale_boxes": "streamdet.pipeline.postprocess.postprocessor",
    "letterbox": "streamdet.pipeline.preprocess.letterbox",
    "Detector": "streamdet.detector",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamdet' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
