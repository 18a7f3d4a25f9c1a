"""Frame preprocessing: official-style letterbox, batch shapes, and the uint8 model-input batch.

The :class:`Preprocessor` seam turns :class:`~streamdet.pipeline.types.Image` s (bgr24 or YUV 4:2:0)
into one (B, 3, H, W) uint8 RGB batch; :class:`CpuPreprocessor` is the OpenCV implementation and
:func:`letterbox_yuv420_reference` the integer-only specification that a GPU kernel must match.

numpy and cv2 only (decoder-side code may import this module); the backend scales the uint8 batch
(:func:`streamdet.pipeline.backends.model_input.to_model_input`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from streamdet.pipeline.preprocess.colour import yuv420_to_rgb, yuv420_to_rgb_reference
from streamdet.pipeline.types import Image

__all__ = [
    "AxisTable",
    "CpuPreprocessor",
    "Preprocessor",
    "batch_input_shape",
    "letterbox",
    "letterbox_params",
    "letterbox_yuv420_reference",
    "linear_axis_table",
    "preprocess_batch",
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


class Preprocessor(Protocol):
    """A seam of the pipeline: Images -> one uint8 C-contiguous (B, 3, H, W) RGB model-input batch.

    Every implementation gives the same bytes as :class:`CpuPreprocessor` (BT.601 limited: the
    official letterbox of ``cv2.cvtColor`` BGR). When ``out`` is given (uint8, C-contiguous,
    (>= B, 3, H, W)), the batch is written into ``out[:B]`` and that view is returned, so that a
    worker can reuse two buffers.
    """

    name: str

    def __call__(
        self, images: Sequence[Image], input_hw: tuple[int, int], out: np.ndarray | None = None
    ) -> np.ndarray: ...


def _batch_out(n: int, input_hw: tuple[int, int], out: np.ndarray | None) -> np.ndarray:
    """``out[:n]`` after checking it, or a new (n, 3, H, W) uint8 array."""
    H, W = int(input_hw[0]), int(input_hw[1])
    if H <= 0 or W <= 0:
        raise ValueError(f"bad input_hw {input_hw}")
    if out is None:
        return np.empty((n, 3, H, W), dtype=np.uint8)
    if out.dtype != np.uint8 or out.ndim != 4 or out.shape[0] < n or out.shape[1:] != (3, H, W):
        raise ValueError(f"out must be uint8 (>= {n}, 3, {H}, {W}), got {out.shape} {out.dtype}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return out[:n]


def _fill_borders(dst: np.ndarray, g: _Geometry) -> tuple[int, int, int, int]:
    """Paint the letterbox borders of one (3, H, W) image with 114; return the content's y0, y1, x0, x1."""
    y0, y1, x0, x1 = g.top, g.top + g.unpad_h, g.left, g.left + g.unpad_w
    dst[:, :y0] = _PAD_VALUE
    dst[:, y1:] = _PAD_VALUE
    dst[:, y0:y1, :x0] = _PAD_VALUE
    dst[:, y0:y1, x1:] = _PAD_VALUE
    return y0, y1, x0, x1


class CpuPreprocessor:
    """OpenCV preprocessor: colour-convert at full resolution, letterbox-resize, split into CHW.

    bgr24 frames are resized as they are and their channels written in reverse order; YUV 4:2:0
    frames go through :func:`~streamdet.pipeline.preprocess.colour.yuv420_to_rgb` first (cv2 for BT.601
    limited, the same Q20 formula otherwise). The resize is per channel, so resizing RGB instead of
    BGR gives the same bytes. Stateless and thread-safe; cv2 releases the GIL.
    """

    name = "cpu"

    def __call__(
        self, images: Sequence[Image], input_hw: tuple[int, int], out: np.ndarray | None = None
    ) -> np.ndarray:
        """Letterbox ``images`` into ``out[:B]`` (or a new array); see :class:`Preprocessor`."""
        batch = _batch_out(len(images), input_hw, out)
        for dst, image in zip(batch, images, strict=True):
            g = _batch_geometry(image.hw, batch.shape[2:])
            y0, y1, x0, x1 = _fill_borders(dst, g)
            if g.unpad_w == 0 or g.unpad_h == 0:  # extreme aspect ratio: a line thinner than a pixel
                continue
            pix = image.data if image.pix_fmt == "bgr24" else yuv420_to_rgb(image)
            if (pix.shape[1], pix.shape[0]) != (g.unpad_w, g.unpad_h):
                pix = cv2.resize(pix, (g.unpad_w, g.unpad_h), interpolation=cv2.INTER_LINEAR)
            planes = [dst[c, y0:y1, x0:x1] for c in range(3)]
            if image.pix_fmt == "bgr24":
                planes.reverse()  # B, G, R planes of the input go to channels 2, 1, 0
            _split_into(pix, planes)
        return batch


def _split_into(hwc: np.ndarray, planes: list[np.ndarray]) -> None:
    """HWC -> the given (h, w) plane views in one cv2 pass (cv2 returns the very views it filled)."""
    got = cv2.split(hwc, planes)
    for g, p in zip(got, planes, strict=True):
        if g is not p:  # cv2 wrote elsewhere (not expected: shapes match and rows are contiguous)
            p[...] = g


def preprocess_batch(frames: Sequence[np.ndarray], input_hw: tuple[int, int]) -> np.ndarray:
    """Letterbox BGR HxWx3 uint8 frames into one C-contiguous (B, 3, H, W) uint8 RGB batch.

    A thin wrapper over :class:`CpuPreprocessor`. Each frame is resized (cv2 INTER_LINEAR, only if
    the size changes) and written straight into a preallocated buffer (channel flip and HWC->CHW in
    the same copy), borders 114. Pixels are bit-identical to ``letterbox(frame, input_hw,
    auto=False)``; see :func:`_batch_geometry` for the rounding corner case in which the frame's own
    (auto=True) ratio is kept instead.
    """
    for i, frame in enumerate(frames):
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame {i}: expected HxWx3 uint8 BGR, got {frame.shape} {frame.dtype}")
    return CpuPreprocessor()([Image.bgr(f) for f in frames], input_hw)


@dataclass(frozen=True)
class AxisTable:
    """OpenCV 8-bit INTER_LINEAR taps of one axis: output i reads src[idx[i, k]] with weight w[i, k]/2048."""

    idx: np.ndarray  # (n, 2) int32 source indices, already clamped to [0, src - 1]
    w: np.ndarray  # (n, 2) int16 weights, Q11


def linear_axis_table(src: int, dst: int, columns: bool) -> AxisTable:
    """The per-axis table of OpenCV's fixed-point 8U ``resize(INTER_LINEAR)`` (src -> dst samples).

    ``f = float32((i + 0.5) * (1 / (dst / src)) - 0.5)``, ``s = floor(f)``, ``f -= s`` (float32);
    weights ``round_half_even((1 - f) * 2048)`` and ``round_half_even(f * 2048)``. Columns
    (``columns=True``) out of range are snapped to the edge with weight (2048, 0); rows keep
    their weights and only the indices are clamped, exactly as OpenCV does.
    """
    scale = 1.0 / (dst / src)
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int32)
    f = f - s.astype(np.float32)
    if columns:
        low, high = s < 0, s >= src - 1
        f[low | high] = 0
        s[low], s[high] = 0, src - 1
    idx = np.clip(np.stack([s, s + 1], axis=1), 0, src - 1).astype(np.int32)
    w = np.rint(np.stack([np.float32(1) - f, f], axis=1) * np.float32(2048)).astype(np.int16)
    return AxisTable(idx, w)


def letterbox_yuv420_reference(image: Image, input_hw: tuple[int, int]) -> np.ndarray:
    """Integer-only specification of the fused YUV -> letterboxed (3, H, W) uint8 RGB operation.

    Colour by the Q20 formula (:func:`~streamdet.pipeline.preprocess.colour.yuv420_to_rgb_reference`), then
    OpenCV's fixed-point INTER_LINEAR with the tables of :func:`linear_axis_table` (horizontal
    pass ``T = P[x0]*a0 + P[x1]*a1``; vertical ``(((b0*(T0>>4))>>16) + ((b1*(T1>>4))>>16) + 2) >> 2``),
    placed by :func:`_batch_geometry` with 114 borders. A GPU kernel must equal this byte for byte;
    it equals :class:`CpuPreprocessor`. bgr24 Images are accepted too (colour = channel swap).
    """
    g = _batch_geometry(image.hw, input_hw)
    out = np.full((3, int(input_hw[0]), int(input_hw[1])), _PAD_VALUE, np.uint8)
    if g.unpad_w == 0 or g.unpad_h == 0:
        return out
    if image.pix_fmt == "bgr24":
        rgb = image.data[..., ::-1].astype(np.int32)
    else:
        rgb = yuv420_to_rgb_reference(image).astype(np.int32)
    tx = linear_axis_table(image.width, g.unpad_w, columns=True)
    ty = linear_axis_table(image.height, g.unpad_h, columns=False)
    xw, yw = tx.w.astype(np.int32), ty.w.astype(np.int32)
    t = rgb[:, tx.idx[:, 0]] * xw[None, :, 0, None] + rgb[:, tx.idx[:, 1]] * xw[None, :, 1, None]
    top = (yw[:, 0, None, None] * (t[ty.idx[:, 0]] >> 4)) >> 16
    bottom = (yw[:, 1, None, None] * (t[ty.idx[:, 1]] >> 4)) >> 16
    content = np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)
    out[:, g.top : g.top + g.unpad_h, g.left : g.left + g.unpad_w] = content.transpose(2, 0, 1)
    return out
