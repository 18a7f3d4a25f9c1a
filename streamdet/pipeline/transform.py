"""The one mapping between model-input pixels and source pixels: decoder downscale, then letterbox.

A frame of ``src_hw`` may be downscaled by the decoder to ``frame_hw`` (what the preprocessor
gets), then letterboxed into the model input ``input_hw``. :meth:`Transform.inverse` undoes both in
one place, so detections are always reported in the source's own pixels.

No torch import: boxes may be numpy arrays or torch tensors; both are edited in place in their own
dtype, with the same operations as the official ``scale_boxes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Transform"]

Boxes = TypeVar("Boxes")


def _hw(v: Any, name: str) -> tuple[int, int]:
    h, w = (int(x) for x in tuple(v)[:2])
    if h <= 0 or w <= 0:
        raise ValueError(f"{name} must be positive (h, w), got {v}")
    return h, w


def clip_boxes(boxes: Any, shape: Any) -> Any:
    """Clip xyxy boxes in place: x to [0, w], y to [0, h], shape = (h, w, ...); a torch tensor or a
    numpy array (no torch import here). Returns ``boxes``."""
    h, w = shape[0], shape[1]
    if hasattr(boxes, "clamp_"):
        boxes[..., 0].clamp_(0, w)
        boxes[..., 1].clamp_(0, h)
        boxes[..., 2].clamp_(0, w)
        boxes[..., 3].clamp_(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


@dataclass(frozen=True)
class Transform:
    """Source picture -> decoder output -> model input, and back.

    ``src_hw``: the source picture before any decoder downscale; ``frame_hw``: the picture the
    preprocessor got; ``input_hw``: the model input (the batch's (H, W)).
    """

    src_hw: tuple[int, int]
    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("src_hw", "frame_hw", "input_hw"):
            object.__setattr__(self, name, _hw(getattr(self, name), name))

    @classmethod
    def identity(cls, frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> Transform:
        """A Transform for a frame that the decoder did not downscale (src_hw == frame_hw)."""
        return cls(frame_hw, frame_hw, input_hw)

    @property
    def gain(self) -> float:
        """Letterbox gain as the official ``scale_boxes`` recomputes it: min(H/h, W/w)."""
        (ih, iw), (fh, fw) = self.input_hw, self.frame_hw
        return min(ih / fh, iw / fw)

    @property
    def pad(self) -> tuple[float, float]:
        """(pad_w, pad_h): half of the letterbox padding, recomputed from the shapes (official)."""
        (ih, iw), (fh, fw), g = self.input_hw, self.frame_hw, self.gain
        return (iw - fw * g) / 2, (ih - fh * g) / 2

    def inverse(self, boxes: Boxes) -> Boxes:
        """Map xyxy boxes ((n, >=4), numpy or torch) in place from model-input to source pixels.

        Input -> frame is the official ``scale_boxes(input_hw, boxes, frame_hw)`` (no ratio_pad:
        gain and pad recomputed from the shapes); then x *= src_w/frame_w and y *= src_h/frame_h
        when the decoder downscaled; then clip to the source. Returns ``boxes``.
        """
        pad_w, pad_h = self.pad
        b: Any = boxes
        b[..., [0, 2]] -= pad_w
        b[..., [1, 3]] -= pad_h
        b[..., :4] /= self.gain
        (sh, sw), (fh, fw) = self.src_hw, self.frame_hw
        if sw != fw:
            b[..., [0, 2]] *= sw / fw
        if sh != fh:
            b[..., [1, 3]] *= sh / fh
        clip_boxes(b, (sh, sw))
        return boxes

    def forward(self, coords: Boxes) -> Boxes:
        """Map source pixels in place to model-input pixels (no clipping); returns ``coords``.

        ``coords`` is (n, >=4) xyxy boxes, or (n, 2) xy points. The inverse of :meth:`inverse`
        up to floating-point rounding (and clipping).
        """
        c: Any = coords
        xs, ys = ([0, 2], [1, 3]) if c.shape[-1] >= 4 else ([0], [1])
        (sh, sw), (fh, fw) = self.src_hw, self.frame_hw
        pad_w, pad_h = self.pad
        c[..., xs] *= fw / sw
        c[..., ys] *= fh / sh
        c[..., xs] *= self.gain
        c[..., ys] *= self.gain
        c[..., xs] += pad_w
        c[..., ys] += pad_h
        return coords
