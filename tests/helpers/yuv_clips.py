"""Test clips in chosen pixel formats and colour tags, and YUV helpers for ring frames.

Frames come from :func:`tests.helpers.media.make_test_frame` (frame number in a block code), so
:func:`luma` of a decoded frame can be read back with ``read_frame_number``.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.helpers.media import make_test_frame


def make_yuv_clip(path: str | Path, width: int = 160, height: int = 120, frames: int = 10, fps: int = 25,
                  pix_fmt: str = "yuv420p", colorspace: int | None = None, color_range: int | None = None) -> Path:
    """Write an H.264 MP4 (libx264, no B-frames) in ``pix_fmt`` with optional VUI colour tags
    (``colorspace``/``color_range``: FFmpeg AVCOL_* codes, e.g. 1 = BT.709, 2 = JPEG range)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        if color_range is not None:
            stream.codec_context.color_range = color_range
        stream.options = {"preset": "veryfast", "g": str(fps), "bf": "0", "crf": "23", "threads": "1"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(make_test_frame(i, width, height), format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    tmp.replace(path)
    return path


def decoded_frames(path: str | Path) -> list[av.VideoFrame]:
    """Every frame of the file's first video stream, decoded by PyAV as the decoder does."""
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def luma(image: np.ndarray, height: int) -> np.ndarray:
    """The Y plane (height, width) of a packed yuv420p/nv12 ring image."""
    return image[:height]
