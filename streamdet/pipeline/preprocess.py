"""Frame preprocessing: official-style letterbox, batch shapes, and the uint8 model-input batch.

numpy and cv2 only at import time (decoder-side code may import this module); torch is imported
lazily inside :func:`to_model_input`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "batch_input_shape",
    "letterbox",
    "letterbox_params",
    "preprocess_batch",
    "to_model_input",
]

_PAD_VALUE = 114


@dataclass(frozen=True)
class _Geometry:
    """Where a letterboxed image lands: resize ratio, resized size, half-pads and integer borders."""

    ratio: float
    unpad_w: int
    unpad_h: int
    dw: float
    dh: float
    top: int
    bottom: int
    left: int
    right: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.unpad_h + self.top + self.bottom, self.unpad_w + self.left + self.right


def _borders(unpad_w: int, unpad_h: int, dw: float, dh: float, ratio: float) -> _Geometry:
    """Split the half-pads into integer borders exactly like the official letterbox."""
    return _Geometry(
        ratio=ratio,
        unpad_w=unpad_w,
        unpad_h=unpad_h,
        dw=dw,
        dh=dh,
        top=int(round(dh - 0.1)),
        bottom=int(round(dh + 0.1)),
        left=int(round(dw - 0.1)),
        right=int(round(dw + 0.1)),
    )


def _geometry(
    src_hw: tuple[int, int],
    new_hw: tuple[int, int],
    auto: bool,
    scaleup: bool,
    stride: int,
) -> _Geometry:
    """Letterbox geometry of an (h, w) image into new_hw (official semantics)."""
    h, w = int(src_hw[0]), int(src_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"empty image shape {src_hw}")
    r = min(new_hw[0] / h, new_hw[1] / w)
    if not scaleup:  # only scale down: better val mAP, as in the official code
        r = min(r, 1.0)
    unpad_w, unpad_h = int(round(w * r)), int(round(h * r))
    dw, dh = new_hw[1] - unpad_w, new_hw[0] - unpad_h
    if auto:  # minimum rectangle: pad only up to a multiple of stride
        dw, dh = dw % stride, dh % stride
    return _borders(unpad_w, unpad_h, dw / 2, dh / 2, r)


def _as_hw(new_shape: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(new_shape, (int, np.integer)):
        return int(new_shape), int(new_shape)
    h, w = new_shape
    return int(h), int(w)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (114, 114, 114),
    auto: bool = True,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad to new_shape (or to a stride multiple if auto).

    Bit-exact with the official YOLOv5 letterbox (cv2 INTER_LINEAR, constant border).
    Returns (image, (r, r), (dw, dh)) where dw/dh are half of the total horizontal/vertical padding.
    """
    g = _geometry(img.shape[:2], _as_hw(new_shape), auto, scaleup, stride)
    if (img.shape[1], img.shape[0]) != (g.unpad_w, g.unpad_h):
        img = cv2.resize(img, (g.unpad_w, g.unpad_h), interpolation=cv2.INTER_LINEAR)
    img = cv2.copyMakeBorder(img, g.top, g.bottom, g.left, g.right, cv2.BORDER_CONSTANT, value=color)
    return img, (g.ratio, g.ratio), (float(g.dw), float(g.dh))


def batch_input_shape(frame_shapes: Sequence[tuple[int, int]], img_size: int, stride: int) -> tuple[int, int]:
    """Smallest common model-input (H, W): element-wise max of each frame's auto=True letterbox shape."""
    if not frame_shapes:
        raise ValueError("batch_input_shape needs at least one frame shape")
    hw = [_geometry(s[:2], (img_size, img_size), True, True, stride).out_hw for s in frame_shapes]
    return max(h for h, _ in hw), max(w for _, w in hw)


def _batch_geometry(src_hw: tuple[int, int], input_hw: tuple[int, int]) -> _Geometry:
    """Geometry of a frame inside a batch of shape input_hw.

    Plain ``letterbox(auto=False)`` into input_hw picks r' = min(H/h, W/w). When input_hw comes
    from :func:`batch_input_shape`, max(H, W) equals img_size, and r' usually equals the ratio the
    frame gets alone, r = min(S/h, S/w). It differs when round(h*r) rounded *down* onto a stride
    multiple (e.g. 1920x1057 at 640: r = 1/3 gives 640x352, but min(352/1057, 640/1920) gives
    639x352). So: use the frame's own ratio and resized size whenever they fit into input_hw
    (then the pixels equal its own auto=True letterbox), else the auto=False geometry.
    """
    H, W = int(input_hw[0]), int(input_hw[1])
    s = max(H, W)
    alone = _geometry(src_hw, (s, s), True, True, 1)
    if alone.unpad_w <= W and alone.unpad_h <= H:
        return _borders(alone.unpad_w, alone.unpad_h, (W - alone.unpad_w) / 2, (H - alone.unpad_h) / 2, alone.ratio)
    return _geometry(src_hw, (H, W), False, True, 1)


def letterbox_params(src_hw: tuple[int, int], input_hw: tuple[int, int]) -> tuple[float, tuple[float, float]]:
    """(ratio, (pad_w, pad_h)) that :func:`preprocess_batch` uses for a frame of src_hw in input_hw.

    The form is the official ``ratio_pad`` (pads are half of the total padding), so it can be
    passed to ``scale_boxes(..., ratio_pad=letterbox_params(src_hw, input_hw))`` for an exact inverse.
    """
    g = _batch_geometry(src_hw, input_hw)
    return g.ratio, (float(g.dw), float(g.dh))


def preprocess_batch(frames: Sequence[np.ndarray], input_hw: tuple[int, int]) -> np.ndarray:
    """Letterbox BGR HxWx3 uint8 frames into one C-contiguous (B, 3, H, W) uint8 RGB batch.

    Each frame is resized (cv2 INTER_LINEAR, only if the size changes) and written straight into
    a preallocated buffer (channel flip and HWC->CHW in the same copy), borders 114. Pixels are
    bit-identical to ``letterbox(frame, input_hw, auto=False)``; see :func:`_batch_geometry` for
    the rounding corner case in which the frame's own (auto=True) ratio is kept instead.
    """
    H, W = int(input_hw[0]), int(input_hw[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"bad input_hw {input_hw}")
    out = np.empty((len(frames), 3, H, W), dtype=np.uint8)
    for i, frame in enumerate(frames):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected HxWx3 uint8 BGR, got {frame.shape} {frame.dtype}")
        g = _batch_geometry(frame.shape[:2], (H, W))
        if (frame.shape[1], frame.shape[0]) != (g.unpad_w, g.unpad_h):
            frame = cv2.resize(frame, (g.unpad_w, g.unpad_h), interpolation=cv2.INTER_LINEAR)
        dst = out[i]
        y0, y1, x0, x1 = g.top, g.top + g.unpad_h, g.left, g.left + g.unpad_w
        dst[:, :y0] = _PAD_VALUE
        dst[:, y1:] = _PAD_VALUE
        dst[:, y0:y1, :x0] = _PAD_VALUE
        dst[:, y0:y1, x1:] = _PAD_VALUE
        dst[:, y0:y1, x0:x1] = frame.transpose(2, 0, 1)[::-1]  # BGR->RGB and HWC->CHW in one copy
    return out


def to_model_input(batch_u8: np.ndarray | Any, device: Any, half: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) batch -> float (or half) tensor in [0, 1] on device.

    The uint8 batch is what crosses to the device (4x less than float32); the conversion and
    ``/255`` run there, in the target dtype, as in the official detect.py. Accepts a numpy array
    or a (possibly pinned) CPU tensor; the copy is non-blocking when the source is pinned.
    """
    import torch

    t = batch_u8 if isinstance(batch_u8, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch_u8))
    t = t.to(torch.device(device), non_blocking=t.is_pinned())
    t = t.half() if half else t.float()
    t /= 255
    return t
