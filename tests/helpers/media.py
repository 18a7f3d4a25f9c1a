"""Synthetic H.264 test clips whose frames carry their own frame number.

Each frame has a gradient background (or noise) and, in the top band, the frame number written
twice: as 16 black/white blocks (bit 15 first), which survive H.264 compression and downscaling
so tests can read the number back with :func:`read_frame_number`, and as text for humans.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

CODE_BITS = 16
_BAND = 1 / 6  # fraction of the height used by the block code


def make_test_frame(index: int, width: int, height: int, pattern: str = "gradient") -> np.ndarray:
    """One BGR frame (height, width, 3) uint8 showing ``index`` (see module docstring)."""
    if pattern == "gradient":
        xs = np.linspace(0, 255, width, dtype=np.float32)
        ys = np.linspace(0, 255, height, dtype=np.float32)
        img = np.empty((height, width, 3), np.uint8)
        img[..., 0] = xs[None, :]
        img[..., 1] = ys[:, None]
        img[..., 2] = (index * 7) % 256
    elif pattern == "noise":
        img = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        raise ValueError(f"unknown pattern {pattern!r} (gradient, noise)")
    band = max(2, int(height * _BAND))
    block = width / CODE_BITS
    for bit in range(CODE_BITS):
        on = (index >> (CODE_BITS - 1 - bit)) & 1
        img[:band, int(bit * block) : int((bit + 1) * block)] = 255 if on else 0
    scale = max(0.3, height / 400)
    cv2.putText(img, str(index), (4, min(height - 4, band + int(30 * scale))), cv2.FONT_HERSHEY_SIMPLEX,
                scale, (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    return img


def read_frame_number(image: np.ndarray) -> int:
    """Decode the block code written by :func:`make_test_frame` (any size, BGR)."""
    height, width = image.shape[:2]
    band = max(2, int(height * _BAND))
    block = width / CODE_BITS
    value = 0
    for bit in range(CODE_BITS):
        x0, x1 = int(bit * block), int((bit + 1) * block)
        # sample the centre of each block, away from edges blurred by compression/scaling
        cx0, cx1 = x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4
        patch = image[band // 4 : band - band // 4, cx0 : max(cx1, cx0 + 1)]
        value = (value << 1) | int(patch.mean() > 127)
    return value


def make_test_clip(
    path: str | Path,
    width: int = 320,
    height: int = 240,
    frames: int = 50,
    fps: int = 25,
    pattern: str = "gradient",
) -> Path:
    """Write an H.264 MP4 (libx264, yuv420p, keyframe every ~1 s, no B-frames) and return its path.

    The file is written to a temporary name and renamed, so a reader polling for ``path`` never
    sees a half-written file.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(fps), "keyint_min": str(fps), "bf": "0",
                          "crf": "23", "threads": "1"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(make_test_frame(i, width, height, pattern), format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.replace(path)
    return path
