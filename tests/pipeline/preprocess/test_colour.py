"""YUV 4:2:0 -> RGB: the Q20 reference against OpenCV (bit-exact) and a float formula; the fast path."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamdet.pipeline.preprocess.colour import (
    SHIFT,
    yuv420_planes,
    yuv420_to_rgb,
    yuv420_to_rgb_reference,
    yuv_constants,
)
from streamdet.pipeline.types import Image

# (height, width): tiny, odd multiples of 2, and common camera sizes.
SIZES = [(2, 2), (4, 6), (6, 4), (6, 10), (22, 30), (480, 640), (576, 704), (720, 1280), (1080, 1920)]
COMBOS = [("bt601", "limited"), ("bt709", "limited"), ("bt601", "full"), ("bt709", "full")]
_CV2_RGB = {"yuv420p": cv2.COLOR_YUV2RGB_I420, "nv12": cv2.COLOR_YUV2RGB_NV12}
_CV2_BGR = {"yuv420p": cv2.COLOR_YUV2BGR_I420, "nv12": cv2.COLOR_YUV2BGR_NV12}


def yuv_image(data: np.ndarray, pix_fmt: str, matrix: str = "bt601", range_: str = "limited") -> Image:
    """A YUV 4:2:0 Image (heights of 2 mod 4 included: the layout only needs H even)."""
    return Image(data, pix_fmt, matrix, range_)


def random_yuv(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Random packed (H * 3 // 2, W) 4:2:0 data (any layout: the bytes are all random)."""
    return np.random.default_rng(seed).integers(0, 256, (h * 3 // 2, w), dtype=np.uint8)


def pack(y: np.ndarray, u: np.ndarray, v: np.ndarray, pix_fmt: str) -> np.ndarray:
    """Planes -> packed I420 or NV12 (H * 3 // 2, W)."""
    h, w = y.shape
    chroma = np.stack([u, v], axis=-1).reshape(-1) if pix_fmt == "nv12" else np.concatenate([u.ravel(), v.ravel()])
    return np.concatenate([y.ravel(), chroma]).reshape(h * 3 // 2, w)


def _float_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: str, range_: str) -> np.ndarray:
    """The textbook conversion in float64 from Kr/Kb (independent of the module's constants)."""
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    kg = 1 - kr - kb
    if range_ == "limited":
        yy = np.maximum(y.astype(np.float64) - 16, 0) * 255 / 219
        cu, cv = (u.astype(np.float64) - 128) * 255 / 224, (v.astype(np.float64) - 128) * 255 / 224
    else:
        yy, cu, cv = y.astype(np.float64), u.astype(np.float64) - 128, v.astype(np.float64) - 128
    r = yy + 2 * (1 - kr) * cv
    g = yy - 2 * (1 - kb) * kb / kg * cu - 2 * (1 - kr) * kr / kg * cv
    b = yy + 2 * (1 - kb) * cu
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255)


def test_constants_bt601_limited_are_opencvs() -> None:
    c = yuv_constants("bt601", "limited")
    # OpenCV's ITUR_BT_601_CY/CVR/CUG/CVG/CUB (imgproc color_yuv), shift 20.
    assert c.as_tuple() == (1220542, 1673527, -409993, -852492, 2116026, 16)
    assert SHIFT == 20
    assert yuv_constants() == c


@pytest.mark.parametrize("matrix,range_", COMBOS[1:])
def test_constants_match_kr_kb(matrix: str, range_: str) -> None:
    c = yuv_constants(matrix, range_)
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    kg = 1 - kr - kb
    ys, cs = (255 / 219, 255 / 224) if range_ == "limited" else (1.0, 1.0)
    expect = (ys, 2 * (1 - kr) * cs, -2 * (1 - kb) * kb / kg * cs, -2 * (1 - kr) * kr / kg * cs, 2 * (1 - kb) * cs)
    got = (c.cy, c.crv, c.cgu, c.cgv, c.cbu)
    for e, q in zip(expect, got, strict=True):
        assert abs(q - e * (1 << SHIFT)) <= 0.5
    assert c.yoff == (16 if range_ == "limited" else 0)


def test_constants_reject_unknown() -> None:
    with pytest.raises(ValueError):
        yuv_constants("bt2020", "limited")
    with pytest.raises(ValueError):
        yuv_constants("bt601", "tv")


def test_int32_is_enough() -> None:
    for matrix, range_ in COMBOS:
        c = yuv_constants(matrix, range_)
        top = (255 - c.yoff) * c.cy + (1 << (SHIFT - 1)) + 127 * max(c.cbu, c.crv)
        low = -128 * max(c.cbu, c.crv) + 128 * min(c.cgu, 0) + 128 * min(c.cgv, 0)
        assert top < 2**31 and low > -(2**31)


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
@pytest.mark.parametrize("hw", SIZES)
def test_reference_is_opencv_bit_exact(hw: tuple[int, int], pix_fmt: str) -> None:
    data = random_yuv(*hw, seed=hw[0] * 7 + hw[1])
    image = yuv_image(data, pix_fmt)
    expected = cv2.cvtColor(data, _CV2_RGB[pix_fmt])
    np.testing.assert_array_equal(yuv420_to_rgb_reference(image), expected)
    np.testing.assert_array_equal(yuv420_to_rgb(image), expected)
    # the BGR conversion (today's path) is the same values in the other order
    np.testing.assert_array_equal(cv2.cvtColor(data, _CV2_BGR[pix_fmt])[..., ::-1], expected)


@pytest.mark.parametrize("matrix,range_", COMBOS)
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
@pytest.mark.parametrize("hw", SIZES)
def test_fast_path_equals_reference(hw: tuple[int, int], pix_fmt: str, matrix: str, range_: str) -> None:
    image = yuv_image(random_yuv(*hw, seed=hw[1]), pix_fmt, matrix, range_)
    ref = yuv420_to_rgb_reference(image)
    out = np.full((*hw, 3), 7, np.uint8)
    got = yuv420_to_rgb(image, out=out)
    assert np.shares_memory(got, out)
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("matrix,range_", COMBOS)
def test_reference_within_one_level_of_float_formula(matrix: str, range_: str) -> None:
    h, w = 64, 96
    rng = np.random.default_rng(11)
    y = rng.integers(0, 256, (h, w), dtype=np.uint8)
    u = rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8)
    v = rng.integers(0, 256, (h // 2, w // 2), dtype=np.uint8)
    got = yuv420_to_rgb_reference(yuv_image(pack(y, u, v, "yuv420p"), "yuv420p", matrix, range_))
    full_u, full_v = (np.repeat(np.repeat(p, 2, 0), 2, 1) for p in (u, v))
    diff = np.abs(got.astype(np.int64) - _float_rgb(y, full_u, full_v, matrix, range_))
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.9


def _pixel(y: int, u: int, v: int, matrix: str, range_: str, pix_fmt: str = "yuv420p") -> tuple[int, ...]:
    planes = (np.full((2, 2), y, np.uint8), np.full((1, 1), u, np.uint8), np.full((1, 1), v, np.uint8))
    image = yuv_image(pack(*planes, pix_fmt), pix_fmt, matrix, range_)
    ref, fast = yuv420_to_rgb_reference(image), yuv420_to_rgb(image)
    np.testing.assert_array_equal(ref, fast)
    assert (ref == ref[0, 0]).all()  # one chroma sample covers the 2x2 block
    return tuple(int(c) for c in ref[0, 0])


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_hand_computed_pixels(matrix: str) -> None:
    # limited: Y 16..235 is black..white, neutral chroma 128; below 16 stays black
    assert _pixel(235, 128, 128, matrix, "limited") == (255, 255, 255)
    assert _pixel(16, 128, 128, matrix, "limited") == (0, 0, 0)
    assert _pixel(5, 128, 128, matrix, "limited") == (0, 0, 0)
    # (126 - 16) * 255/219 = 128.08 -> 128
    assert _pixel(126, 128, 128, matrix, "limited", "nv12") == (128, 128, 128)
    # full: Y is the grey level
    assert _pixel(255, 128, 128, matrix, "full") == (255, 255, 255)
    assert _pixel(0, 128, 128, matrix, "full") == (0, 0, 0)
    assert _pixel(77, 128, 128, matrix, "full", "nv12") == (77, 77, 77)


def test_hand_computed_bt709_red() -> None:
    # BT.709 limited red: Y=63, U=102, V=240. Y' = 47*255/219 = 54.73;
    # R = 54.73 + 1.792741*112 = 255.5 -> 255; G = 54.73 + 0.213249*26 - 0.532909*112 = 0.58 -> 1
    # (Q20: (57384415 + 524288 - 62585152 + 5813782) >> 20 = 1137333 >> 20 = 1); B = 54.73 - 2.112402*26 < 0 -> 0
    assert _pixel(63, 102, 240, "bt709", "limited") == (255, 1, 0)
    # the same YUV read as BT.601 is a different colour: the matrix matters
    assert _pixel(63, 102, 240, "bt601", "limited") != (255, 1, 0)


def test_nv12_and_i420_of_the_same_planes_agree() -> None:
    h, w = 48, 80
    data = random_yuv(h, w, seed=3)
    y, u, v = yuv420_planes(Image(data, "yuv420p"))
    nv12 = pack(y, u, v, "nv12")
    for matrix, range_ in COMBOS:
        a = yuv420_to_rgb(Image(data, "yuv420p", matrix, range_))
        b = yuv420_to_rgb(Image(nv12, "nv12", matrix, range_))
        np.testing.assert_array_equal(a, b)
    y2, u2, v2 = yuv420_planes(Image(nv12, "nv12"))
    for p, q in ((y, y2), (u, u2), (v, v2)):
        np.testing.assert_array_equal(p, q)


def test_bgr_input_is_only_swapped() -> None:
    bgr = np.random.default_rng(4).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    np.testing.assert_array_equal(yuv420_to_rgb(Image.bgr(bgr)), bgr[..., ::-1])
    with pytest.raises(ValueError):
        yuv420_to_rgb_reference(Image.bgr(bgr))


def test_bad_out_is_rejected() -> None:
    image = Image(random_yuv(8, 8), "yuv420p", "bt709")
    with pytest.raises(ValueError):
        yuv420_to_rgb(image, out=np.empty((8, 8, 3), np.float32))
    with pytest.raises(ValueError):
        yuv420_to_rgb(image, out=np.empty((8, 10, 3), np.uint8))
    with pytest.raises(ValueError):
        yuv420_to_rgb(image, out=np.empty((8, 16, 3), np.uint8)[:, ::2])
