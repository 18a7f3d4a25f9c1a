"""numpy emulation of the fused CUDA preprocessing kernel, operation for operation, for CI.

:func:`emulate` runs the kernel's per-pixel arithmetic (:mod:`streamdet.pipeline.preprocess.cuda_kernel`)
vectorised over every output pixel: it follows the descriptor's *addresses* into a
:class:`HostMemory` buffer exactly as the kernel follows them into device memory, computes in
int32 like the kernel (so an overflow would show here as a mismatch with the int64 reference), and
stores uint8, float32 ``v * INV_255`` or float16 of that float32 (round to nearest even).

:func:`reference_batch` lays out frames and tables the way :class:`CudaPreprocessor
<streamdet.pipeline.preprocess.cuda.CudaPreprocessor>` does (one arena, 256-byte aligned blocks,
one table per axis and geometry) and emulates the launch, so the tests prove the launch plan and the
arithmetic against :func:`~streamdet.pipeline.preprocess.letterbox.letterbox_yuv420_reference` and the CPU
preprocessor without a GPU.

numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from streamdet.pipeline.preprocess.kernel_plan import (
    DESC_FIELDS,
    FMT_CODES,
    INV_255,
    OUT_DTYPES,
    PAD_VALUE,
    TABLE_ALIGN,
    DeviceFrame,
    axis_table,
    describe,
    pack_offsets,
    plan_frame,
)
from streamdet.pipeline.types import Image

__all__ = ["HostMemory", "PixelMemory", "emulate", "reference_batch", "store_values"]

_D = {name: i for i, name in enumerate(DESC_FIELDS)}
_Q_HALF = np.int32(1 << 19)


class PixelMemory(Protocol):
    """What :func:`emulate` reads through: an address space (a :class:`HostMemory` buffer, or the
    device allocations of :class:`~streamdet.pipeline.cuda.emulation.EmulatedCuda`)."""

    def gather_u8(self, addr: np.ndarray) -> np.ndarray:
        """Bytes at the addresses ``addr`` (int64 array), as int32; IndexError outside the memory."""
        ...

    def int32s(self, addr: int, count: int) -> np.ndarray:
        """``count`` int32 values at ``addr``; IndexError outside the memory."""
        ...


class HostMemory:
    """A zeroed host byte buffer addressed like device memory: ``base`` is its real address, so the
    same descriptors serve this emulation and a host-compiled build of the kernel."""

    def __init__(self, nbytes: int) -> None:
        self.bytes = np.zeros(max(int(nbytes), 1) + TABLE_ALIGN, np.uint8)
        shift = (-self.bytes.ctypes.data) % TABLE_ALIGN  # start on the same alignment as a device allocation
        self.bytes = self.bytes[shift:shift + max(int(nbytes), 1)]
        self.base = int(self.bytes.ctypes.data)

    def offset(self, addr: int, nbytes: int) -> int:
        """The buffer offset of ``addr``; IndexError when [addr, addr + nbytes) is outside the buffer."""
        off = int(addr) - self.base
        if off < 0 or off + int(nbytes) > self.bytes.size:
            raise IndexError(f"address {addr:#x} (+{nbytes}) is outside the buffer")
        return off

    def write(self, addr: int, data: np.ndarray) -> None:
        """Copy ``data``'s bytes to ``addr``."""
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        off = self.offset(addr, raw.size)
        self.bytes[off:off + raw.size] = raw

    def gather_u8(self, addr: np.ndarray) -> np.ndarray:
        """Bytes at the addresses ``addr`` (int64 array), as int32 (``unsigned char`` loads)."""
        off = addr - self.base
        if off.size and (int(off.min()) < 0 or int(off.max()) >= self.bytes.size):
            raise IndexError("a pixel load falls outside the buffer")
        return self.bytes[off].astype(np.int32)

    def int32s(self, addr: int, count: int) -> np.ndarray:
        """``count`` int32 values at ``addr`` (a table)."""
        off = self.offset(addr, 4 * count)
        return self.bytes[off:off + 4 * count].view(np.int32)


def _q20_u8(acc: np.ndarray) -> np.ndarray:
    """The kernel's ``q20_u8``: 0 for a negative accumulator, else ``clamp(acc >> 20)``."""
    return np.where(acc < 0, 0, np.clip(np.maximum(acc, 0) >> 20, 0, 255)).astype(np.int32)


def _source_rgb(mem: PixelMemory, d: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kernel's ``source_rgb`` for many (x, y): (3, n) int32."""
    x64, y64 = x.astype(np.int64), y.astype(np.int64)
    fmt = int(d[_D["fmt"]])
    if fmt == FMT_CODES["bgr24"]:
        p = int(d[_D["y_ptr"]]) + y64 * int(d[_D["y_pitch"]]) + 3 * x64
        return np.stack([mem.gather_u8(p + 2), mem.gather_u8(p + 1), mem.gather_u8(p)])
    luma = mem.gather_u8(int(d[_D["y_ptr"]]) + y64 * int(d[_D["y_pitch"]]) + x64)
    crow = (y64 >> 1) * int(d[_D["c_pitch"]])
    if fmt == FMT_CODES["nv12"]:
        uv = int(d[_D["u_ptr"]]) + crow + 2 * (x64 >> 1)
        u_raw, v_raw = mem.gather_u8(uv), mem.gather_u8(uv + 1)
    else:
        u_raw = mem.gather_u8(int(d[_D["u_ptr"]]) + crow + (x64 >> 1))
        v_raw = mem.gather_u8(int(d[_D["v_ptr"]]) + crow + (x64 >> 1))
    cy, crv, cgu, cgv, cbu, yoff = (np.int32(d[_D[k]]) for k in ("cy", "crv", "cgu", "cgv", "cbu", "yoff"))
    yc = np.where(luma > yoff, luma - yoff, 0).astype(np.int32) * cy + _Q_HALF
    u, v = u_raw - np.int32(128), v_raw - np.int32(128)
    return np.stack([_q20_u8(yc + crv * v), _q20_u8(yc + cgv * v + cgu * u), _q20_u8(yc + cbu * u)])


def store_values(values: np.ndarray, dtype: str) -> np.ndarray:
    """The kernel's ``store``: uint8 as is, float32 ``v * INV_255``, float16 of that (nearest even)."""
    if dtype == "uint8":
        return values.astype(np.uint8)
    scaled = values.astype(np.float32) * INV_255
    if dtype == "float32":
        return scaled
    if dtype == "float16":
        return scaled.astype(np.float16)
    raise ValueError(f"unsupported output dtype {dtype!r} (expected one of {tuple(OUT_DTYPES)})")


def _frame_values(mem: PixelMemory, d: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """(3, H, W) int32 channel values of one frame: ``letterbox_pixel`` for every (x, y)."""
    h, w = input_hw
    values = np.full((3, h, w), PAD_VALUE, np.int32)
    top, left = int(d[_D["top"]]), int(d[_D["left"]])
    uh, uw = int(d[_D["unpad_h"]]), int(d[_D["unpad_w"]])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.int32)
    dx, dy = xx - left, yy - top
    inside = (dx >= 0) & (dy >= 0) & (dx < uw) & (dy < uh)
    if not inside.any():
        return values
    xt = mem.int32s(int(d[_D["xtab_ptr"]]), 4 * uw).reshape(uw, 4)
    yt = mem.int32s(int(d[_D["ytab_ptr"]]), 4 * uh).reshape(uh, 4)
    x0, x1, a0, a1 = xt[dx[inside]].T
    y0, y1, b0, b1 = yt[dy[inside]].T
    p00, p01 = _source_rgb(mem, d, x0, y0), _source_rgb(mem, d, x1, y0)
    p10, p11 = _source_rgb(mem, d, x0, y1), _source_rgb(mem, d, x1, y1)
    t0 = p00 * a0 + p01 * a1
    t1 = p10 * a0 + p11 * a1
    values[:, inside] = np.clip((((b0 * (t0 >> 4)) >> 16) + ((b1 * (t1 >> 4)) >> 16) + 2) >> 2, 0, 255)
    return values


def emulate(mem: PixelMemory, descs: np.ndarray, input_hw: tuple[int, int], dtype: str = "uint8") -> np.ndarray:
    """What the kernel writes for ``descs`` ((B, len(DESC_FIELDS)) int64): a (B, 3, H, W) array of ``dtype``."""
    h, w = int(input_hw[0]), int(input_hw[1])
    descs = np.asarray(descs, np.int64).reshape(-1, len(DESC_FIELDS))
    out = np.empty((len(descs), 3, h, w), np.dtype(dtype))
    for b, d in enumerate(descs):
        out[b] = store_values(_frame_values(mem, d, (h, w)), dtype)
    return out


def reference_batch(images: Sequence[Image], input_hw: tuple[int, int],
                    dtype: str = "uint8") -> tuple[np.ndarray, HostMemory, np.ndarray]:
    """Lay out ``images`` and their tables in one buffer as the CUDA preprocessor does, build the
    descriptors, and emulate the launch. Returns (output, memory, descriptors): the last two can be
    handed to a host build of the kernel source."""
    raws = [np.ascontiguousarray(im.data).reshape(-1) for im in images]
    frame_offsets, frames_total = pack_offsets([r.size for r in raws])
    plans = [plan_frame(DeviceFrame(off, im.pix_fmt, im.width, im.height, im.color_matrix, im.color_range),
                        input_hw) for im, off in zip(images, frame_offsets, strict=True)]
    keys = sorted({k for p in plans for k in (p.xtab_key, p.ytab_key) if k is not None})
    tables = {k: axis_table(*k) for k in keys}
    table_offsets, tables_total = pack_offsets([t.nbytes for t in tables.values()])
    mem = HostMemory(frames_total + tables_total)
    for raw, off in zip(raws, frame_offsets, strict=True):
        mem.write(mem.base + off, raw)
    table_addr = {}
    for (k, t), off in zip(tables.items(), table_offsets, strict=True):
        table_addr[k] = mem.base + frames_total + off
        mem.write(table_addr[k], t)
    descs = np.zeros((len(plans), len(DESC_FIELDS)), np.int64)
    for i, p in enumerate(plans):
        moved = plan_frame(DeviceFrame(mem.base + p.frame.ptr, p.frame.pix_fmt, p.frame.width, p.frame.height,
                                       p.frame.color_matrix, p.frame.color_range), input_hw)
        descs[i] = describe(moved, table_addr.get(p.xtab_key, 0) if p.xtab_key else 0,
                            table_addr.get(p.ytab_key, 0) if p.ytab_key else 0)
    return emulate(mem, descs, input_hw, dtype), mem, descs
