"""The Image type: layouts it accepts and rejects, and its geometry."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.pipeline.types import Image


@pytest.mark.parametrize("h,w", [(2, 2), (6, 4), (270, 480), (720, 1280), (1058, 1920)])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
def test_yuv420_geometry(h: int, w: int, pix_fmt: str) -> None:
    image = Image(np.zeros((h * 3 // 2, w), np.uint8), pix_fmt)
    assert image.hw == (h, w) and image.width == w and image.height == h


def test_bgr_geometry() -> None:
    assert Image.bgr(np.zeros((5, 7, 3), np.uint8)).hw == (5, 7)


@pytest.mark.parametrize("shape,pix_fmt", [((10, 6), "yuv420p"), ((9, 5), "nv12"), ((4, 4), "bgr24"),
                                           ((4, 4, 4), "bgr24")])
def test_bad_layouts_are_rejected(shape: tuple[int, ...], pix_fmt: str) -> None:
    with pytest.raises(ValueError, match=pix_fmt):
        Image(np.zeros(shape, np.uint8), pix_fmt)


def test_bad_tags_and_dtypes_are_rejected() -> None:
    data = np.zeros((6, 4), np.uint8)
    with pytest.raises(ValueError, match="pixel format"):
        Image(data, "rgb48")
    with pytest.raises(ValueError, match="matrix"):
        Image(data, "nv12", color_matrix="bt2020")
    with pytest.raises(ValueError, match="range"):
        Image(data, "nv12", color_range="studio")
    with pytest.raises(ValueError, match="uint8"):
        Image(data.astype(np.float32), "nv12")
