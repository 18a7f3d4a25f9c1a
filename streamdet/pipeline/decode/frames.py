"""Decoded PyAV frames as ring pixels: which planes the decoder copies, with which colour tags.

The one rule, shared by the decoder (:mod:`streamdet.pipeline.decode.reader`, which copies the planes
into the ring) and ``streamdet val`` (:func:`frame_to_image`, so val sees byte for byte what the
daemon's worker reads):

- yuv420p/yuvj420p/nv12 frames of an even size that fits are used as they are (no copy here).
- colour tags: yuvj* or a JPEG range tag => range ``full``, else ``limited``; a BT.709
  colorspace tag => ``bt709``, anything else, unspecified included, => ``bt601`` as FFmpeg's
  swscale assumes.
- any other format (4:2:2, 4:4:4, gray, 10-bit, RGB...), an odd size, or a frame above
  ``max_width`` x ``max_height`` (or ``max_bytes``, the slot size) is converted once by swscale
  to yuv420p at the largest even size that fits (:func:`scaled_size`: aspect ratio kept),
  keeping the matrix and the range; RGB/gray/palette frames get bt601 limited.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace

from streamdet.pipeline.ring.layout import frame_nbytes, slot_bytes_for
from streamdet.pipeline.types import Image

__all__ = ["RingFrame", "color_tags", "frame_to_image", "plane_views", "scaled_size", "to_ring_format"]

#: Decoded formats copied into the ring as they are (decoder format -> ring format).
_NATIVE = {"yuv420p": "yuv420p", "yuvj420p": "yuv420p", "nv12": "nv12"}


class RingFrame(NamedTuple):
    """A decoded frame in a ring format: ``frame`` (the input itself, or its one conversion)
    holds yuv420p or nv12 planes (``pix_fmt``) tagged ``color_matrix``/``color_range``."""

    frame: av.VideoFrame
    pix_fmt: str
    color_matrix: str
    color_range: str
    converted: bool


def scaled_size(width: int, height: int, max_width: int, max_height: int,
                max_bytes: int | None = None, pix_fmt: str = "yuv420p") -> tuple[int, int]:
    """Largest size with the aspect ratio of ``width`` x ``height`` that fits in ``max_width`` x
    ``max_height`` (and ``max_bytes`` of ``pix_fmt``); the size itself when it already fits.
    For YUV 4:2:0 the result is even (rounded down, at least 2x2)."""
    even = pix_fmt != "bgr24"
    per_pixel = frame_nbytes(2, 2, pix_fmt) / 4
    scale = min(1.0, max_width / width, max_height / height)
    if max_bytes is not None:
        scale = min(scale, math.sqrt(max_bytes / (width * height * per_pixel)))
    w, h = (width, height) if scale >= 1.0 else (int(width * scale), int(height * scale))
    if even:
        w, h = w // 2 * 2, h // 2 * 2
    low = 2 if even else 1
    w, h = max(low, w), max(low, h)
    if max_bytes is not None:
        while frame_nbytes(w, h, pix_fmt) > max_bytes and (w > low or h > low):  # float rounding
            w, h = max(low, w - low), max(low, h - low)
    return w, h


def color_tags(frame: av.VideoFrame) -> tuple[str, str]:
    """(colour matrix, colour range) of a decoded YUV frame, as the ring records them."""
    full = frame.format.name.startswith("yuvj") or frame.color_range == ColorRange.JPEG
    matrix = "bt709" if frame.colorspace == Colorspace.ITU709 else "bt601"
    return matrix, "full" if full else "limited"


def plane_views(frame: av.VideoFrame, pix_fmt: str) -> list[np.ndarray]:
    """Views (no copy) of a yuv420p/nv12 frame's planes without the line padding."""
    w, h = frame.width, frame.height
    widths = (w, w // 2, w // 2) if pix_fmt == "yuv420p" else (w, w)  # nv12: UV rows are w bytes
    rows = (h, h // 2, h // 2)
    return [np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)[:rows[k], :widths[k]]
            for k, plane in enumerate(frame.planes)]


def to_ring_format(frame: av.VideoFrame, max_width: int, max_height: int,
                   max_bytes: int | None = None) -> RingFrame:
    """The frame itself when its planes can be copied as they are, else one swscale conversion
    to yuv420p at an even size that fits (see the module docstring)."""
    fmt = frame.format
    w, h = scaled_size(frame.width, frame.height, max_width, max_height, max_bytes)
    native = _NATIVE.get(fmt.name)
    if native is not None and (w, h) == (frame.width, frame.height):
        return RingFrame(frame, native, *color_tags(frame), converted=False)
    if not (fmt.is_rgb or fmt.has_palette or fmt.is_bayer) and len(fmt.components) >= 3:  # YUV: keep tags
        matrix, rng = color_tags(frame)
        space = Colorspace.ITU709 if matrix == "bt709" else Colorspace.ITU601
        crange = ColorRange.JPEG if rng == "full" else ColorRange.MPEG
        kwargs = {"src_colorspace": space, "dst_colorspace": space, "src_color_range": crange,
                  "dst_color_range": crange}
    else:  # RGB, gray, palette: swscale's default YUV
        matrix, rng = "bt601", "limited"
        kwargs = {"dst_colorspace": Colorspace.ITU601, "dst_color_range": ColorRange.MPEG}
    out = frame.reformat(w, h, format="yuv420p", interpolation="AREA", threads=1, **kwargs)
    return RingFrame(out, "yuv420p", matrix, rng, converted=True)


def frame_to_image(frame: av.VideoFrame, max_width: int = 1920, max_height: int = 1080) -> tuple[Image, bool]:
    """The packed, owned :class:`Image` (yuv420p or nv12, with its colour tags) that the decoder
    writes into a ring sized for ``max_width`` x ``max_height`` (the supervisor's
    ``slot_bytes_for(max_width, max_height, "yuv420p")``), and whether a conversion happened.

    ``streamdet val`` uses it so that its frames are byte-identical to the daemon's.
    """
    rf = to_ring_format(frame, max_width, max_height, slot_bytes_for(max_width, max_height, "yuv420p"))
    out = rf.frame
    data = np.empty(frame_nbytes(out.width, out.height, rf.pix_fmt), np.uint8)
    offset = 0
    for plane in plane_views(out, rf.pix_fmt):  # same packing as FrameRing.write_planes
        np.copyto(data[offset:offset + plane.size].reshape(plane.shape), plane)
        offset += plane.size
    image = Image(data.reshape(out.height * 3 // 2, out.width), rf.pix_fmt, rf.color_matrix, rf.color_range)
    return image, rf.converted
