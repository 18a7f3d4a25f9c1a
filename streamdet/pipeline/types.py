"""The types that travel between stages: a picture (:class:`Image`), a frame copied out of a ring
(:class:`Frame`), and the geometry from model input back to source pixels (:class:`Transform`).

## Image

Decoders put YUV 4:2:0 planes in the ring exactly as decoded (no colour conversion on the
decoding cores); only the preprocessor converts, and only the frames it batches. A BGR array
(what OpenCV and the public ``Detector`` API use) is the same thing with ``pix_fmt="bgr24"``.

Layouts of ``data`` (uint8, C-contiguous):

- ``bgr24``: (H, W, 3).
- ``yuv420p`` (I420): (H * 3 // 2, W): H rows of Y, then U (H/2 x W/2) and V (H/2 x W/2)
  packed row after row, which is the layout OpenCV's ``COLOR_YUV2*_I420`` reads.
- ``nv12``: (H * 3 // 2, W): H rows of Y, then H/2 rows of interleaved U, V.

Width and height of a YUV 4:2:0 picture are even.

## Transform

The one mapping between model-input pixels and source pixels: decoder downscale, then letterbox.

A frame of ``src_hw`` may be downscaled by the decoder to ``frame_hw`` (what the preprocessor
gets), then letterboxed into the model input ``input_hw``. :meth:`Transform.inverse` undoes both in
one place, so detections are always reported in the source's own pixels.

No torch import: boxes may be numpy arrays or torch tensors; both are edited in place in their own
dtype, with the same operations as the official ``scale_boxes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

__all__ = ["COLOR_MATRICES", "COLOR_RANGES", "PIX_FMTS", "Frame", "Image", "Transform", "clip_boxes"]

#: Pixel formats that travel through the ring (code = index; 0 = none).
PIX_FMTS: tuple[str, ...] = ("none", "bgr24", "nv12", "yuv420p")
#: YUV->RGB matrices (code = index).
COLOR_MATRICES: tuple[str, ...] = ("bt601", "bt709")
#: YUV value ranges (code = index): limited = Y 16-235 / UV 16-240 ("tv"), full = 0-255 ("pc", yuvj).
COLOR_RANGES: tuple[str, ...] = ("limited", "full")


@dataclass(frozen=True)
class Image:
    """Pixels and their format. ``width``/``height`` are the picture's, not the array's."""

    data: np.ndarray
    pix_fmt: str = "bgr24"
    color_matrix: str = "bt601"
    color_range: str = "limited"

    def __post_init__(self) -> None:
        d = self.data
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8:
            raise ValueError(f"image data must be a uint8 numpy array, got {type(d).__name__} "
                             f"{getattr(d, 'dtype', '')}")
        if self.pix_fmt == "bgr24":
            if d.ndim != 3 or d.shape[2] != 3:
                raise ValueError(f"bgr24 image must be (H, W, 3), got {d.shape}")
        elif self.pix_fmt in ("nv12", "yuv420p"):
            if d.ndim != 2 or d.shape[0] % 3 or d.shape[1] % 2:
                raise ValueError(f"{self.pix_fmt} image must be (H * 3 // 2, W) with H and W even, got {d.shape}")
        else:
            raise ValueError(f"unknown pixel format {self.pix_fmt!r} (expected one of {PIX_FMTS[1:]})")
        if self.color_matrix not in COLOR_MATRICES:
            raise ValueError(f"unknown colour matrix {self.color_matrix!r} (expected one of {COLOR_MATRICES})")
        if self.color_range not in COLOR_RANGES:
            raise ValueError(f"unknown colour range {self.color_range!r} (expected one of {COLOR_RANGES})")

    @classmethod
    def bgr(cls, data: np.ndarray) -> Image:
        """A BGR (H, W, 3) uint8 array as an Image."""
        return cls(data, "bgr24")

    @property
    def height(self) -> int:
        return int(self.data.shape[0]) if self.pix_fmt == "bgr24" else int(self.data.shape[0]) * 2 // 3

    @property
    def width(self) -> int:
        return int(self.data.shape[1])

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width) of the picture."""
        return self.height, self.width


@dataclass
class Frame:
    """One frame taken from a ring. ``image`` is a copy owned by the caller, a view of the caller's
    ``out`` buffer (valid until the caller reuses that buffer), or empty when only the metadata was
    taken (the device feed's peek, a frame the detector skips)."""

    camera: str
    seq: int
    frame_index: int
    pts: float
    ts_capture: float
    width: int
    height: int
    src_width: int
    src_height: int
    pix_fmt: str
    image: np.ndarray
    dropped: int  # frames written to the ring after the reader's last one and overwritten before it read them
    color_matrix: str = "bt601"
    color_range: str = "limited"
    # the ring's count of decoded frames never written (max_fps, behind) when this one was written:
    # the difference between two frames a reader takes is what the decoder dropped in between
    not_written: int = 0
    skipped: int = 0  # set by the reader: frames the decoder did not write since the reader's last frame
    # whether the detector runs on it; False (``detect_every``): tracked only, ``image`` may be empty
    detect: bool = True

    def to_image(self) -> Image:
        """The pixels with their format, for the preprocessor."""
        return Image(self.image, self.pix_fmt, self.color_matrix, self.color_range)



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
