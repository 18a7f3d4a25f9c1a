"""Host-side plan of one fused preprocessing launch: frame descriptors, axis tables, grid, output scale.

The CUDA kernel (:mod:`streamdet.pipeline.preprocess.cuda`) and its numpy emulation
(:mod:`streamdet.pipeline.preprocess.kernel_reference`) read exactly the same inputs, built here: one row of
``DESC_FIELDS`` (int64) per frame, holding *addresses* of the frame's planes and of its two axis
tables, the Q20 colour constants and the letterbox placement. Because both sides take addresses,
CI tests the very descriptor building (plane offsets, pitches, table layout) that the GPU gets;
only the addresses differ (device memory there, a host buffer here).

numpy only; no CUDA library is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamdet.pipeline.preprocess.colour import SHIFT, yuv_constants
from streamdet.pipeline.preprocess.letterbox import _batch_geometry, linear_axis_table
from streamdet.pipeline.types import COLOR_MATRICES, COLOR_RANGES

__all__ = [
    "BLOCK",
    "DESC_FIELDS",
    "FMT_CODES",
    "INV_255",
    "OUT_DTYPES",
    "PAD_VALUE",
    "TABLE_ALIGN",
    "DeviceFrame",
    "FramePlan",
    "align_up",
    "axis_table",
    "describe",
    "kernel_defines",
    "launch_config",
    "pack_offsets",
    "plan_frame",
]

#: One descriptor row, in order (all int64). Pointers are addresses; pitches are bytes per row.
DESC_FIELDS: tuple[str, ...] = (
    "y_ptr", "u_ptr", "v_ptr", "y_pitch", "c_pitch", "fmt",
    "cy", "crv", "cgu", "cgv", "cbu", "yoff",
    "top", "left", "unpad_h", "unpad_w", "xtab_ptr", "ytab_ptr",
)
#: Pixel-format codes of the kernel (bgr24 is packed B, G, R; nv12 interleaves U, V).
FMT_CODES: dict[str, int] = {"bgr24": 0, "yuv420p": 1, "nv12": 2}
#: Output element types the kernel writes, by torch/numpy dtype name -> kernel name.
OUT_DTYPES: dict[str, str] = {"uint8": "letterbox_u8", "float16": "letterbox_f16", "float32": "letterbox_f32"}
#: 1/255 as torch computes it on CUDA for ``t /= 255``: ``opmath_t(1.0) / 255`` in float32, then a
#: multiply (aten/src/ATen/native/cuda/BinaryDivTrueKernel.cu, "compute a * reciprocal(b)").
INV_255 = np.float32(1) / np.float32(255)
PAD_VALUE = 114
#: Thread block of the kernel: one thread per output pixel, 32 x 8 pixels per block.
BLOCK: tuple[int, int, int] = (32, 8, 1)
TABLE_ALIGN = 256  # bytes; frames and tables start on this boundary (device allocations are 256-aligned)


def align_up(n: int, align: int = TABLE_ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return (n + align - 1) // align * align


@dataclass(frozen=True)
class DeviceFrame:
    """A packed frame (layout of :mod:`streamdet.pipeline.types`) at address ``ptr``, as the kernel reads it."""

    ptr: int
    pix_fmt: str
    width: int
    height: int
    color_matrix: str = "bt601"
    color_range: str = "limited"

    def __post_init__(self) -> None:
        if self.pix_fmt not in FMT_CODES:
            raise ValueError(f"unknown pixel format {self.pix_fmt!r} (expected one of {tuple(FMT_CODES)})")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"bad frame size {self.width}x{self.height}")
        if self.pix_fmt != "bgr24" and (self.width % 2 or self.height % 2):
            raise ValueError(f"{self.pix_fmt} needs an even size, got {self.width}x{self.height}")
        if self.color_matrix not in COLOR_MATRICES or self.color_range not in COLOR_RANGES:
            raise ValueError(f"unknown colour matrix/range {self.color_matrix!r}/{self.color_range!r}")

    @property
    def nbytes(self) -> int:
        """Bytes of the packed frame."""
        if self.pix_fmt == "bgr24":
            return self.width * self.height * 3
        return self.width * self.height * 3 // 2


@dataclass(frozen=True)
class FramePlan:
    """Where one frame lands in the batch, and the axis tables it needs (None: nothing to resize)."""

    frame: DeviceFrame
    top: int
    left: int
    unpad_h: int
    unpad_w: int

    @property
    def xtab_key(self) -> tuple[int, int, bool] | None:
        """(src, dst, columns) of the column table, the key to cache it under."""
        return (self.frame.width, self.unpad_w, True) if self.unpad_w and self.unpad_h else None

    @property
    def ytab_key(self) -> tuple[int, int, bool] | None:
        """(src, dst, columns) of the row table."""
        return (self.frame.height, self.unpad_h, False) if self.unpad_w and self.unpad_h else None


def plan_frame(frame: DeviceFrame, input_hw: tuple[int, int]) -> FramePlan:
    """The letterbox placement of ``frame`` in a batch of ``input_hw``: the CPU preprocessor's own
    geometry (:func:`streamdet.pipeline.preprocess.letterbox._batch_geometry`), so both paths place pixels alike."""
    h, w = int(input_hw[0]), int(input_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"bad input_hw {input_hw}")
    g = _batch_geometry((frame.height, frame.width), (h, w))
    return FramePlan(frame, g.top, g.left, g.unpad_h, g.unpad_w)


def axis_table(src: int, dst: int, columns: bool) -> np.ndarray:
    """(dst, 4) int32 rows ``i0, i1, w0, w1`` of OpenCV's INTER_LINEAR taps (:func:`linear_axis_table`)."""
    t = linear_axis_table(src, dst, columns)
    return np.ascontiguousarray(np.concatenate([t.idx, t.w.astype(np.int32)], axis=1), dtype=np.int32)


def describe(plan: FramePlan, xtab_ptr: int, ytab_ptr: int) -> np.ndarray:
    """The descriptor row (int64, ``DESC_FIELDS`` order) of a planned frame whose tables live at the
    given addresses (0 when the frame has no content, e.g. a line thinner than a pixel)."""
    f = plan.frame
    c = yuv_constants(f.color_matrix, f.color_range)
    w, h = f.width, f.height
    if f.pix_fmt == "bgr24":
        u_ptr = v_ptr = 0
        y_pitch, c_pitch = 3 * w, 0
    elif f.pix_fmt == "nv12":
        u_ptr = f.ptr + w * h
        v_ptr = u_ptr + 1
        y_pitch, c_pitch = w, w
    else:
        u_ptr = f.ptr + w * h
        v_ptr = u_ptr + (w // 2) * (h // 2)
        y_pitch, c_pitch = w, w // 2
    values = {
        "y_ptr": f.ptr, "u_ptr": u_ptr, "v_ptr": v_ptr, "y_pitch": y_pitch, "c_pitch": c_pitch,
        "fmt": FMT_CODES[f.pix_fmt], "cy": c.cy, "crv": c.crv, "cgu": c.cgu, "cgv": c.cgv, "cbu": c.cbu,
        "yoff": c.yoff, "top": plan.top, "left": plan.left, "unpad_h": plan.unpad_h, "unpad_w": plan.unpad_w,
        "xtab_ptr": xtab_ptr, "ytab_ptr": ytab_ptr,
    }
    return np.array([values[k] for k in DESC_FIELDS], dtype=np.int64)


def pack_offsets(sizes: Sequence[int], align: int = TABLE_ALIGN) -> tuple[list[int], int]:
    """Offsets of consecutive blocks of ``sizes`` bytes, each starting ``align``-aligned, and the total."""
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += align_up(int(n), align)
    return offsets, total


def launch_config(batch: int, input_hw: tuple[int, int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, block): one thread per output pixel, grid z = frame of the batch."""
    h, w = int(input_hw[0]), int(input_hw[1])
    return ((w + BLOCK[0] - 1) // BLOCK[0], (h + BLOCK[1] - 1) // BLOCK[1], int(batch)), BLOCK


def kernel_defines() -> str:
    """The ``#define`` lines that give the kernel source the descriptor layout and constants."""
    lines = [f"#define D_{name.upper()} {i}" for i, name in enumerate(DESC_FIELDS)]
    lines.append(f"#define DESC_WORDS {len(DESC_FIELDS)}")
    lines += [f"#define FMT_{name.upper()} {code}" for name, code in FMT_CODES.items()]
    lines += [f"#define PAD_VALUE {PAD_VALUE}", f"#define Q_SHIFT {SHIFT}", f"#define Q_HALF {1 << (SHIFT - 1)}"]
    return "\n".join(lines) + "\n"
