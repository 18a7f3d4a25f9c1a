"""Pictures for people: a ring frame to BGR, the detections drawn on it, scaled, JPEG-encoded.

Consumes a :class:`~streamdet.pipeline.types.Frame` (YUV 4:2:0 or BGR, as the ring holds it)
and the detection records of its wire message (boxes in the camera's source pixels, which may be
larger than the ring frame when the decoder downscaled). Produces JPEG bytes. OpenCV does the
colour conversion (BT.601, as good as a preview needs), the drawing and the encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from streamdet.pipeline.types import Frame

__all__ = ["class_colour", "draw_detections", "label_text", "render_jpeg", "scaled_size", "to_bgr"]

_PALETTE = ((56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72),
            (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0), (168, 153, 44), (255, 194, 0),
            (147, 69, 52), (255, 115, 100), (236, 24, 0), (255, 56, 132), (133, 0, 82), (255, 56, 203))


def class_colour(class_id: int) -> tuple[int, int, int]:
    """A BGR colour per class, stable across frames and cameras."""
    return _PALETTE[class_id % len(_PALETTE)]


def to_bgr(frame: Frame) -> np.ndarray:
    """The frame's pixels as a new (H, W, 3) BGR uint8 array."""
    if frame.pix_fmt == "bgr24":
        return np.ascontiguousarray(frame.image).copy()
    if frame.pix_fmt == "yuv420p":
        return cv2.cvtColor(frame.image, cv2.COLOR_YUV2BGR_I420)
    if frame.pix_fmt == "nv12":
        return cv2.cvtColor(frame.image, cv2.COLOR_YUV2BGR_NV12)
    raise ValueError(f"cannot show pixel format {frame.pix_fmt!r}")


def scaled_size(width: int, height: int, want_width: int | None) -> tuple[int, int]:
    """(width, height) for ``?width=N``: aspect kept, never larger than the frame, at least 16 wide."""
    if want_width is None or want_width >= width:
        return width, height
    w = max(16, want_width)
    return w, max(1, round(height * w / width))


def label_text(det: Mapping[str, Any]) -> str:
    """``person 0.87`` or, with tracking, ``person 0.87 #12``."""
    text = f"{det.get('label', '?')} {float(det.get('score', 0.0)):.2f}"
    track = det.get("track_id")
    if isinstance(track, int | str) and not isinstance(track, bool) and str(track) != "":
        text += f" #{track}"
    return text


def draw_detections(bgr: np.ndarray, detections: Sequence[Mapping[str, Any]], src_width: int,
                    src_height: int) -> np.ndarray:
    """Draw each detection's box and label onto ``bgr`` (in place; also returned). Boxes are in
    ``src_width`` x ``src_height`` pixels and are scaled to the picture; malformed records are skipped."""
    h, w = bgr.shape[:2]
    sx, sy = w / max(1, src_width), h / max(1, src_height)
    thick = max(2, round(min(w, h) / 360))
    font = max(0.35, min(w, h) / 1200)
    for det in detections:
        try:
            x1, y1, x2, y2 = (float(v) for v in det["box"])
            colour = class_colour(int(det.get("class_id", 0)))
        except (KeyError, TypeError, ValueError):
            continue
        p1 = (int(round(x1 * sx)), int(round(y1 * sy)))
        p2 = (int(round(x2 * sx)), int(round(y2 * sy)))
        cv2.rectangle(bgr, p1, p2, colour, thick, cv2.LINE_8)
        text = label_text(det)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, max(1, thick - 1))
        top = p1[1] - th - base - 2 if p1[1] - th - base - 2 >= 0 else p1[1]
        cv2.rectangle(bgr, (p1[0], top), (p1[0] + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(bgr, text, (p1[0] + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font, (255, 255, 255),
                    max(1, thick - 1), cv2.LINE_AA)
    return bgr


def render_jpeg(frame: Frame, detections: Sequence[Mapping[str, Any]] | None, *, width: int | None = None,
                quality: int = 80) -> bytes:
    """The frame as JPEG, ``width`` pixels wide at most, with ``detections`` drawn (None: none)."""
    bgr = to_bgr(frame)
    out_w, out_h = scaled_size(frame.width, frame.height, width)
    if (out_w, out_h) != (frame.width, frame.height):
        bgr = cv2.resize(bgr, (out_w, out_h), interpolation=cv2.INTER_AREA)
    if detections:
        draw_detections(bgr, detections, frame.src_width or frame.width, frame.src_height or frame.height)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(buf)
