"""CUDA C++ source of the fused preprocessing kernel (YUV 4:2:0 / BGR -> letterboxed RGB CHW).

One thread per output pixel of one frame (grid z = frame of the batch): it reads the 2 x 2 source
taps named by the axis tables, converts each tap to RGB with the Q20 formula of
:mod:`streamdet.pipeline.preprocess.colour`, applies OpenCV's fixed-point INTER_LINEAR (horizontal
``T = P0*a0 + P1*a1``, vertical ``(((b0*(T0>>4))>>16) + ((b1*(T1>>4))>>16) + 2) >> 2``), or 114
outside the letterboxed content, and writes R, G, B into the three planes of its frame as uint8,
float32 (``v * (1/255)``) or float16 (that float32, rounded to nearest even).

All arithmetic is int32 on values that never overflow (largest ~5.7e8, see colour.py) and no
negative number is ever shifted, so the result does not depend on implementation-defined shifts.
The numpy twin is :func:`streamdet.pipeline.preprocess.kernel_reference.emulate`; the source itself is also
compiled for the host in CI (``tests/pipeline/preprocess/test_kernel_reference.py``), where ``__CUDA_ARCH__``
is undefined and the float -> half conversion falls back to the portable routine below.

Only text here: nothing is compiled or imported at import time.
"""

from __future__ import annotations

from streamdet.pipeline.preprocess.kernel_plan import OUT_DTYPES, kernel_defines

__all__ = ["KERNEL_NAMES", "kernel_source"]

#: Kernel entry points (extern "C", so NVRTC does not mangle them), by output dtype.
KERNEL_NAMES: dict[str, str] = dict(OUT_DTYPES)

_BODY = r"""
typedef long long i64;

__device__ __forceinline__ int clamp_u8(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

/* (acc >> 20) saturated to 0..255; a negative acc gives 0 without shifting a negative number. */
__device__ __forceinline__ int q20_u8(int acc) { return acc < 0 ? 0 : clamp_u8(acc >> Q_SHIFT); }

/* Portable float -> IEEE half, round to nearest even (host builds only; the device uses cvt.rn). */
__host__ __device__ inline unsigned short f32_to_f16_soft(float value) {
    union { float f; unsigned int u; } bits;
    bits.f = value;
    unsigned int f = bits.u;
    unsigned int sign = (f >> 16) & 0x8000u;
    int fexp = (int)((f >> 23) & 0xffu);
    unsigned int mant = f & 0x7fffffu;
    if (fexp == 0xff) return (unsigned short)(sign | 0x7c00u | (mant ? 0x200u : 0u));
    int exp = fexp - 127 + 15;
    if (exp >= 31) return (unsigned short)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (unsigned short)sign;
        mant |= 0x800000u;
        int shift = 14 - exp;
        unsigned int h = mant >> shift;
        unsigned int rem = mant & ((1u << shift) - 1u);
        unsigned int halfway = 1u << (shift - 1);
        if (rem > halfway || (rem == halfway && (h & 1u))) h += 1u;
        return (unsigned short)(sign | h);
    }
    unsigned int h = sign | ((unsigned int)exp << 10) | (mant >> 13);
    unsigned int rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h += 1u;
    return (unsigned short)h;
}

__device__ __forceinline__ unsigned short f32_to_f16_rn(float value) {
#ifdef __CUDA_ARCH__
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(value));
    return h;
#else
    return f32_to_f16_soft(value);
#endif
}

__device__ __forceinline__ void store(unsigned char* p, int v, float) { *p = (unsigned char)v; }
__device__ __forceinline__ void store(float* p, int v, float scale) { *p = (float)v * scale; }
__device__ __forceinline__ void store(unsigned short* p, int v, float scale) {
    *p = f32_to_f16_rn((float)v * scale);
}

/* RGB of source pixel (x, y) of the frame described by d. */
__device__ __forceinline__ void source_rgb(const i64* __restrict__ d, int x, int y, int* rgb) {
    const unsigned char* luma = (const unsigned char*)d[D_Y_PTR];
    int fmt = (int)d[D_FMT];
    if (fmt == FMT_BGR24) {
        const unsigned char* p = luma + (i64)y * d[D_Y_PITCH] + 3 * (i64)x;
        rgb[0] = p[2];
        rgb[1] = p[1];
        rgb[2] = p[0];
        return;
    }
    int Y = luma[(i64)y * d[D_Y_PITCH] + x];
    i64 crow = (i64)(y >> 1) * d[D_C_PITCH];
    int U, V;
    if (fmt == FMT_NV12) {
        const unsigned char* uv = (const unsigned char*)d[D_U_PTR] + crow + 2 * (i64)(x >> 1);
        U = uv[0];
        V = uv[1];
    } else {
        U = ((const unsigned char*)d[D_U_PTR])[crow + (x >> 1)];
        V = ((const unsigned char*)d[D_V_PTR])[crow + (x >> 1)];
    }
    int yoff = (int)d[D_YOFF];
    int yc = (Y > yoff ? Y - yoff : 0) * (int)d[D_CY] + Q_HALF;
    int u = U - 128, v = V - 128;
    rgb[0] = q20_u8(yc + (int)d[D_CRV] * v);
    rgb[1] = q20_u8(yc + (int)d[D_CGV] * v + (int)d[D_CGU] * u);
    rgb[2] = q20_u8(yc + (int)d[D_CBU] * u);
}

template <typename Out>
__device__ __forceinline__ void letterbox_pixel(const i64* __restrict__ descs, Out* __restrict__ out,
                                                int H, int W, float scale, int b, int x, int y) {
    const i64* d = descs + (i64)b * DESC_WORDS;
    int dx = x - (int)d[D_LEFT], dy = y - (int)d[D_TOP];
    int c[3] = {PAD_VALUE, PAD_VALUE, PAD_VALUE};
    if (dx >= 0 && dy >= 0 && dx < (int)d[D_UNPAD_W] && dy < (int)d[D_UNPAD_H]) {
        const int* xt = (const int*)d[D_XTAB_PTR] + 4 * dx;
        const int* yt = (const int*)d[D_YTAB_PTR] + 4 * dy;
        int x0 = xt[0], x1 = xt[1], a0 = xt[2], a1 = xt[3];
        int y0 = yt[0], y1 = yt[1], b0 = yt[2], b1 = yt[3];
        int p00[3], p01[3], p10[3], p11[3];
        source_rgb(d, x0, y0, p00);
        source_rgb(d, x1, y0, p01);
        source_rgb(d, x0, y1, p10);
        source_rgb(d, x1, y1, p11);
        for (int k = 0; k < 3; ++k) {
            int t0 = p00[k] * a0 + p01[k] * a1;
            int t1 = p10[k] * a0 + p11[k] * a1;
            c[k] = clamp_u8((((b0 * (t0 >> 4)) >> 16) + ((b1 * (t1 >> 4)) >> 16) + 2) >> 2);
        }
    }
    i64 plane = (i64)H * W;
    Out* o = out + (i64)b * 3 * plane + (i64)y * W + x;
    store(o, c[0], scale);
    store(o + plane, c[1], scale);
    store(o + 2 * plane, c[2], scale);
}

#define LETTERBOX_KERNEL(NAME, OUT)                                                              \
extern "C" __global__ void NAME(const i64* __restrict__ descs, OUT* __restrict__ out,            \
                                int H, int W, float scale) {                                     \
    int x = (int)(blockIdx.x * blockDim.x + threadIdx.x);                                        \
    int y = (int)(blockIdx.y * blockDim.y + threadIdx.y);                                        \
    if (x >= W || y >= H) return;                                                                \
    letterbox_pixel<OUT>(descs, out, H, W, scale, (int)blockIdx.z, x, y);                        \
}

LETTERBOX_KERNEL(letterbox_u8, unsigned char)
LETTERBOX_KERNEL(letterbox_f16, unsigned short)
LETTERBOX_KERNEL(letterbox_f32, float)
"""


def kernel_source() -> str:
    """The complete kernel source: descriptor layout defines, then the kernels."""
    return "/* streamdet fused letterbox kernel (generated by streamdet.pipeline.preprocess.cuda_kernel) */\n" + \
        kernel_defines() + _BODY
