"""One decoded picture as the pipeline passes it between stages: pixels plus how to read them.

Decoders put YUV 4:2:0 planes in the ring exactly as decoded (no colour conversion on the
decoding cores); only the preprocessor converts, and only the frames it batches. A BGR array
(what OpenCV and the public ``Detector`` API use) is the same thing with ``pix_fmt="bgr24"``.

Layouts of ``data`` (uint8, C-contiguous):

- ``bgr24``: (H, W, 3).
- ``yuv420p`` (I420): (H * 3 // 2, W): H rows of Y, then U (H/2 x W/2) and V (H/2 x W/2)
  packed row after row, which is the layout OpenCV's ``COLOR_YUV2*_I420`` reads.
- ``nv12``: (H * 3 // 2, W): H rows of Y, then H/2 rows of interleaved U, V.

Width and height of a YUV 4:2:0 picture are even.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["COLOR_MATRICES", "COLOR_RANGES", "PIX_FMTS", "Image"]

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
