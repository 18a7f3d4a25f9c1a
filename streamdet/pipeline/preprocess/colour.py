"""YUV 4:2:0 -> RGB conversion with OpenCV's Q20 integer arithmetic, for all matrices and ranges.

One formula, four constant sets (BT.601 / BT.709 x limited / full). For every pixel, with U and V
taken from the chroma sample covering it (nearest, 2x2 replication, as OpenCV does)::

    Yc = max(0, Y - yoff) * cy ;  u = U - 128 ;  v = V - 128 ;  h = 1 << 19
    R = clamp((Yc + h + crv * v) >> 20)
    G = clamp((Yc + h + cgv * v + cgu * u) >> 20)
    B = clamp((Yc + h + cbu * u) >> 20)

With OpenCV's BT.601 limited-range constants this is exactly ``cv2.cvtColor(COLOR_YUV2RGB_I420 /
_NV12)``, which is the reference for the model input. :func:`yuv_constants` is the single source of
the constants for the numpy paths here and for a future GPU kernel launcher. Every intermediate fits
in int32 (largest: 709 limited, ``239 * cy + 127 * cbu + h`` ~ 5.7e8).

numpy and cv2 only at import time (decoder-side code may import this module).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamdet.pipeline.types import Image

__all__ = ["SHIFT", "YuvConstants", "yuv420_planes", "yuv420_to_rgb", "yuv420_to_rgb_reference", "yuv_constants"]

#: Fixed-point shift of the constants (Q20), as OpenCV's ``ITUR_BT_601_SHIFT``.
SHIFT = 20
_HALF = 1 << (SHIFT - 1)
_BAND_ROWS = 64  # rows per band of the fast path (even; keeps the int32 temporaries in cache)

# (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb.
_KRKB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


@dataclass(frozen=True)
class YuvConstants:
    """Q20 integer constants of one matrix/range pair (see the module docstring for the formula)."""

    cy: int
    crv: int
    cgu: int
    cgv: int
    cbu: int
    yoff: int

    def as_tuple(self) -> tuple[int, int, int, int, int, int]:
        """(cy, crv, cgu, cgv, cbu, yoff): the order a kernel launcher passes them in."""
        return self.cy, self.crv, self.cgu, self.cgv, self.cbu, self.yoff


def yuv_constants(matrix: str = "bt601", range: str = "limited") -> YuvConstants:
    """Q20 constants for ``matrix`` ("bt601" | "bt709") and ``range`` ("limited" | "full").

    BT.601 limited uses OpenCV's own constants (1.164, 1.596, -0.391, -0.813, 2.018, i.e. the
    coefficients rounded to 3 decimals, then x 2^20), so that the result equals cv2 bit for bit.
    The others are computed from Kr/Kb: limited range scales Y by 255/219 (offset 16) and chroma by
    255/224; full range uses Y as is.
    """
    if matrix not in _KRKB:
        raise ValueError(f"unknown colour matrix {matrix!r} (expected one of {tuple(_KRKB)})")
    if range not in ("limited", "full"):
        raise ValueError(f"unknown colour range {range!r} (expected 'limited' or 'full')")
    if matrix == "bt601" and range == "limited":
        coef = (1.164, 1.596, -0.391, -0.813, 2.018)
    else:
        kr, kb = _KRKB[matrix]
        kg = 1.0 - kr - kb
        ys, cs = (255 / 219, 255 / 224) if range == "limited" else (1.0, 1.0)
        coef = (
            ys,
            2 * (1 - kr) * cs,
            -2 * (1 - kb) * kb / kg * cs,
            -2 * (1 - kr) * kr / kg * cs,
            2 * (1 - kb) * cs,
        )
    cy, crv, cgu, cgv, cbu = (int(round(c * (1 << SHIFT))) for c in coef)
    return YuvConstants(cy, crv, cgu, cgv, cbu, 16 if range == "limited" else 0)


def yuv420_planes(image: Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y (H, W), U (H/2, W/2), V (H/2, W/2)) uint8 views (copies only if data is not contiguous)."""
    if image.pix_fmt not in ("yuv420p", "nv12"):
        raise ValueError(f"not a YUV 4:2:0 image: {image.pix_fmt!r}")
    h, w = image.hw
    flat = np.ascontiguousarray(image.data).reshape(-1)
    y = flat[: h * w].reshape(h, w)
    if image.pix_fmt == "nv12":
        uv = flat[h * w :].reshape(h // 2, w // 2, 2)
        return y, uv[..., 0], uv[..., 1]
    q = (h // 2) * (w // 2)
    u = flat[h * w : h * w + q].reshape(h // 2, w // 2)
    v = flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2)
    return y, u, v


def _check_out(out: np.ndarray | None, h: int, w: int) -> np.ndarray:
    if out is None:
        return np.empty((h, w, 3), np.uint8)
    if out.shape != (h, w, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be ({h}, {w}, 3) uint8, got {out.shape} {out.dtype}")
    return out


def yuv420_to_rgb_reference(image: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB by the Q20 formula, written plainly (full-resolution chroma, int64).

    The specification the fast paths and any GPU kernel must equal; slow, for tests.
    """
    c = yuv_constants(image.color_matrix, image.color_range)
    y, u, v = yuv420_planes(image)
    yc = np.maximum(y.astype(np.int64) - c.yoff, 0) * c.cy
    u = np.repeat(np.repeat(u.astype(np.int64) - 128, 2, axis=0), 2, axis=1)
    v = np.repeat(np.repeat(v.astype(np.int64) - 128, 2, axis=0), 2, axis=1)
    r = (yc + _HALF + c.crv * v) >> SHIFT
    g = (yc + _HALF + c.cgv * v + c.cgu * u) >> SHIFT
    b = (yc + _HALF + c.cbu * u) >> SHIFT
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _yuv420_to_rgb_fast(image: Image, out: np.ndarray) -> np.ndarray:
    """The Q20 formula with cv2 integer primitives, in bands of rows that stay in cache.

    Y goes through a 256-entry int32 table (``Yc + h``); each chroma term is computed at quarter
    resolution, doubled horizontally (``merge([t, t])`` interleaves each value with itself) and
    added to the even and the odd luma rows; then shift, saturate to uint8 and interleave. Same
    integers as :func:`yuv420_to_rgb_reference`, so the same bytes.
    """
    c = yuv_constants(image.color_matrix, image.color_range)
    y, u, v = yuv420_planes(image)
    h, w = image.hw
    lut = (np.maximum(np.arange(256, dtype=np.int32) - c.yoff, 0) * c.cy + _HALF).astype(np.int32)
    ui = u.astype(np.int32) - 128
    vi = v.astype(np.int32) - 128
    terms = (c.crv * vi, c.cgv * vi + c.cgu * ui, c.cbu * ui)
    rows = min(h, _BAND_ROWS)
    yc, acc = (np.empty((rows, w), np.int32) for _ in range(2))
    planes = [np.empty((rows, w), np.uint8) for _ in range(3)]
    for r0 in range(0, h, rows):
        n = min(h, r0 + rows) - r0  # even: h and rows are even
        yc_n, acc_n = cv2.LUT(y[r0 : r0 + n], lut, dst=yc[:n]), acc[:n]
        for ch, term in enumerate(terms):
            band = term[r0 // 2 : (r0 + n) // 2]
            doubled = cv2.merge([band, band]).reshape(n // 2, w)
            cv2.add(yc_n[0::2], doubled, dst=acc_n[0::2])
            cv2.add(yc_n[1::2], doubled, dst=acc_n[1::2])
            np.right_shift(acc_n, SHIFT, out=acc_n)
            # saturating int32 -> uint8; OpenCV 4.x stubs omit the scalar form of src2 (5.x has it)
            cv2.add(acc_n, 0, dst=planes[ch][:n], dtype=cv2.CV_8U)  # type: ignore[call-overload, unused-ignore]
        cv2.merge([p[:n] for p in planes], dst=out[r0 : r0 + n])
    return out


def yuv420_to_rgb(image: Image, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an Image (the fast CPU path), written into ``out`` when given.

    BT.601 limited: ``cv2.cvtColor(COLOR_YUV2RGB_I420 / _NV12)`` (the reference). BT.709 or full
    range: the same Q20 formula with other constants, vectorised in numpy (bit-identical to
    :func:`yuv420_to_rgb_reference` by construction). A bgr24 Image is just channel-swapped.
    """
    h, w = image.hw
    if out is not None:
        _check_out(out, h, w)
    if image.pix_fmt == "bgr24":
        return cv2.cvtColor(image.data, cv2.COLOR_BGR2RGB, dst=out)
    if image.color_matrix == "bt601" and image.color_range == "limited":
        code = cv2.COLOR_YUV2RGB_NV12 if image.pix_fmt == "nv12" else cv2.COLOR_YUV2RGB_I420
        return cv2.cvtColor(image.data, code, dst=out)
    out = _check_out(out, h, w)
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return _yuv420_to_rgb_fast(image, out)
