"""The CUDA kernel source compiled for the host (g++/c++) and run over its whole launch grid.

A small prelude maps the CUDA keywords to nothing and ``blockIdx``/``threadIdx``/``blockDim`` to
globals; a driver loops over every block and thread of the grid that
:func:`~streamdet.pipeline.preprocess.kernel_plan.launch_config` gives and calls the very ``extern "C"``
kernel function. So the kernel's C++ (indexing, bounds guard, integer arithmetic, stores, the
portable float -> half rounding) runs unchanged on the CPU; only ``__CUDA_ARCH__`` is undefined.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from streamdet.pipeline.preprocess.cuda_kernel import KERNEL_NAMES, kernel_source
from streamdet.pipeline.preprocess.kernel_plan import INV_255, launch_config

_PRELUDE = r"""
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
struct HostDim3 { unsigned int x, y, z; };
static HostDim3 blockIdx, threadIdx, blockDim;
"""

_DRIVER = r"""
typedef void (*kernel_fn)(const long long*, void*, int, int, float);
typedef const long long* Descs;
static void call_u8(Descs d, void* o, int H, int W, float s) { letterbox_u8(d, (unsigned char*)o, H, W, s); }
static void call_f16(Descs d, void* o, int H, int W, float s) { letterbox_f16(d, (unsigned short*)o, H, W, s); }
static void call_f32(Descs d, void* o, int H, int W, float s) { letterbox_f32(d, (float*)o, H, W, s); }

extern "C" int host_launch(int which, const long long* descs, void* out, int H, int W, float scale,
                           unsigned int gx, unsigned int gy, unsigned int gz,
                           unsigned int bx, unsigned int by, unsigned int bz) {
    kernel_fn fns[3] = {call_u8, call_f16, call_f32};
    if (which < 0 || which > 2) return 1;
    blockDim.x = bx; blockDim.y = by; blockDim.z = bz;
    for (unsigned int z = 0; z < gz; ++z)
      for (unsigned int y = 0; y < gy; ++y)
        for (unsigned int x = 0; x < gx; ++x) {
          blockIdx.x = x; blockIdx.y = y; blockIdx.z = z;
          for (unsigned int tz = 0; tz < bz; ++tz)
            for (unsigned int ty = 0; ty < by; ++ty)
              for (unsigned int tx = 0; tx < bx; ++tx) {
                threadIdx.x = tx; threadIdx.y = ty; threadIdx.z = tz;
                fns[which](descs, out, H, W, scale);
              }
        }
    return 0;
}

extern "C" unsigned short host_f32_to_f16(float v) { return f32_to_f16_soft(v); }
"""

_WHICH = {"uint8": 0, "float16": 1, "float32": 2}


def host_compiler() -> str | None:
    """A C++ compiler on PATH, or None."""
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


class HostKernel:
    """The kernel source built as a shared library in ``workdir`` and loaded with ctypes."""

    def __init__(self, workdir: Path, compiler: str) -> None:
        src = workdir / "letterbox_host.cpp"
        lib = workdir / "letterbox_host.so"
        src.write_text(_PRELUDE + kernel_source() + _DRIVER)
        # -O1 keeps the build quick; -ffp-contract=off: no fused multiply-add where the source has none
        cmd = [compiler, "-std=c++17", "-O1", "-ffp-contract=off", "-Wall", "-Werror", "-Wno-unused-function",
               "-shared", "-fPIC", str(src), "-o", str(lib)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        self._lib = ctypes.CDLL(str(lib))
        u = ctypes.c_uint
        self._lib.host_launch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                          ctypes.c_float, u, u, u, u, u, u]
        self._lib.host_launch.restype = ctypes.c_int
        self._lib.host_f32_to_f16.argtypes = [ctypes.c_float]
        self._lib.host_f32_to_f16.restype = ctypes.c_ushort
        assert set(KERNEL_NAMES) == set(_WHICH)

    def run(self, descs: np.ndarray, input_hw: tuple[int, int], dtype: str,
            out: np.ndarray | None = None) -> np.ndarray:
        """Run the kernel over its grid for ``descs`` (addresses must point at live host memory) into
        ``out`` (default: a new array poisoned with 0xAB bytes, so an unwritten element shows)."""
        descs = np.ascontiguousarray(descs, np.int64)
        h, w = input_hw
        if out is None:
            out = np.empty((len(descs), 3, h, w), np.dtype(dtype))
            out.view(np.uint8)[...] = 0xAB
        grid, block = launch_config(len(descs), input_hw)
        rc = self._lib.host_launch(_WHICH[dtype], descs.ctypes.data, out.ctypes.data, h, w, float(INV_255),
                                   *grid, *block)
        assert rc == 0
        return out

    def f32_to_f16_bits(self, values: np.ndarray) -> np.ndarray:
        """The source's portable float -> half (round to nearest even), bit patterns as uint16."""
        return np.array([self._lib.host_f32_to_f16(float(v)) for v in np.asarray(values, np.float32)], np.uint16)
