"""The fused CUDA preprocessing kernel's arithmetic, proven on the CPU.

Three layers, each checked against the next: the numpy emulation of the kernel
(:mod:`streamdet.pipeline.preprocess.kernel_reference`) equals the integer specification
(``letterbox_yuv420_reference``) and the CPU preprocessor bit for bit; the kernel's own C++ source,
built for the host and run over its whole launch grid, equals the emulation byte for byte (uint8,
FP16, FP32); and nvcc compiles that source for Hopper (when nvcc is installed). The FP16/FP32
scaling is pinned to what the model input gets today.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from streamdet.pipeline.backends.model_input import to_model_input
from streamdet.pipeline.preprocess.cuda_kernel import KERNEL_NAMES, kernel_source
from streamdet.pipeline.preprocess.kernel_plan import (
    DESC_FIELDS,
    INV_255,
    DeviceFrame,
    axis_table,
    describe,
    launch_config,
    plan_frame,
)
from streamdet.pipeline.preprocess.kernel_reference import HostMemory, emulate, reference_batch, store_values
from streamdet.pipeline.preprocess.letterbox import (
    CpuPreprocessor,
    batch_input_shape,
    letterbox_params,
    letterbox_yuv420_reference,
    linear_axis_table,
)
from streamdet.pipeline.types import Image
from tests.helpers.kernel_host import HostKernel, host_compiler
from tests.pipeline.preprocess.test_colour import COMBOS, random_yuv, yuv_image
from tests.pipeline.preprocess.test_letterbox import GEOMETRIES

F = {name: i for i, name in enumerate(DESC_FIELDS)}


def _emulate(images: list[Image], hw: tuple[int, int], dtype: str = "uint8") -> np.ndarray:
    return reference_batch(images, hw, dtype)[0]


# --- output scaling: what the model input gets --------------------------------------------------------


def test_fp16_of_every_byte_equals_the_cpu_paths_half_division() -> None:
    v = np.arange(256, dtype=np.uint8)
    cpu_half = to_model_input(v.reshape(1, 1, 16, 16), "cpu", half=True).reshape(-1).numpy()
    kernel_half = store_values(v.astype(np.int32), "float16")
    assert kernel_half.dtype == np.float16
    np.testing.assert_array_equal(kernel_half.view(np.uint16), cpu_half.view(np.uint16))
    # and equal to the correctly rounded v / 255 (so no FP16 path can do better)
    np.testing.assert_array_equal(kernel_half, (v / 255.0).astype(np.float16))


def test_fp32_is_torch_cudas_multiply_by_reciprocal() -> None:
    v = np.arange(256, dtype=np.int32)
    kernel = store_values(v, "float32")
    assert np.float32(1.0) / np.float32(255.0) == INV_255 and INV_255.dtype == np.float32
    np.testing.assert_array_equal(kernel, v.astype(np.float32) * INV_255)
    # a true division on the CPU differs from that by one ulp on 126 of the 256 values, so the model
    # input multiplies by the float32 reciprocal on every device: the host feed's input on the CPU is
    # bit for bit the kernel's (and what torch computes on CUDA for v / 255)
    divided = (torch.from_numpy(v.astype(np.float32)) / 255).numpy()
    ulps = np.abs(kernel.view(np.int32) - divided.view(np.int32))
    assert ulps.max() == 1 and int((ulps == 1).sum()) == 126
    cpu = to_model_input(v.astype(np.uint8).reshape(1, 1, 16, 16), "cpu").reshape(-1).numpy()
    np.testing.assert_array_equal(kernel.view(np.int32), cpu.view(np.int32))
    np.testing.assert_array_equal(kernel.astype(np.float16), cpu.astype(np.float16))


def test_store_rejects_unknown_dtypes() -> None:
    with pytest.raises(ValueError, match="float64"):
        store_values(np.zeros(3, np.int32), "float64")


# --- the emulation against the specification and the CPU preprocessor ---------------------------------


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
@pytest.mark.parametrize("src_hw,hw", GEOMETRIES)
def test_emulation_equals_cpu_preprocessor(src_hw: tuple[int, int], hw: tuple[int, int], pix_fmt: str) -> None:
    image = yuv_image(random_yuv(*src_hw, seed=src_hw[0] * 7 + src_hw[1]), pix_fmt)
    np.testing.assert_array_equal(_emulate([image], hw)[0], CpuPreprocessor()([image], hw)[0])


@pytest.mark.parametrize("matrix,range_", COMBOS)
@pytest.mark.parametrize("src_hw,hw", [((96, 130), (416, 416)), ((120, 160), (256, 320)), ((200, 300), (128, 192))])
def test_emulation_equals_the_integer_specification(src_hw, hw, matrix: str, range_: str) -> None:
    for pix_fmt in ("yuv420p", "nv12"):
        image = yuv_image(random_yuv(*src_hw, seed=src_hw[1]), pix_fmt, matrix, range_)
        np.testing.assert_array_equal(_emulate([image], hw)[0], letterbox_yuv420_reference(image, hw))


@pytest.mark.parametrize("matrix,range_", COMBOS[1:])
@pytest.mark.parametrize("src_hw,hw", [GEOMETRIES[0], GEOMETRIES[3], GEOMETRIES[10], GEOMETRIES[-1]])
def test_emulation_other_colours_equal_cpu(src_hw, hw, matrix: str, range_: str) -> None:
    image = yuv_image(random_yuv(*src_hw, seed=3), "nv12" if src_hw[0] % 4 else "yuv420p", matrix, range_)
    np.testing.assert_array_equal(_emulate([image], hw)[0], CpuPreprocessor()([image], hw)[0])


def test_emulation_on_random_geometries_and_fp16() -> None:
    rng = np.random.default_rng(11)
    cpu = CpuPreprocessor()
    for k in range(16):
        h, w = (int(v) * 2 for v in rng.integers(1, 300, 2))
        hw = (int(rng.integers(8, 300)), int(rng.integers(8, 300))) if k % 2 else batch_input_shape([(h, w)], 256, 32)
        matrix, range_ = COMBOS[k % 4]
        image = yuv_image(random_yuv(h, w, seed=k), ("yuv420p", "nv12")[k % 3 == 0], matrix, range_)
        expected = cpu([image], hw)
        np.testing.assert_array_equal(_emulate([image], hw), expected, err_msg=f"{(h, w)} -> {hw}")
        half = to_model_input(expected, "cpu", half=True).numpy()
        np.testing.assert_array_equal(_emulate([image], hw, "float16").view(np.uint16), half.view(np.uint16))


def test_emulation_of_bgr_frames_including_the_rounding_corner() -> None:
    rng = np.random.default_rng(5)
    for h, w in ((1057, 1920), (377, 500), (31, 17)):
        img = Image.bgr(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        hw = batch_input_shape([(h, w)], 640, 32)
        np.testing.assert_array_equal(_emulate([img], hw)[0], CpuPreprocessor()([img], hw)[0])


def test_saturated_colours_do_not_overflow_int32() -> None:
    # every luma value meets every pair of these chroma levels (a chroma sample covers 2 x 2 luma
    # pixels), for all four constant sets; the emulation computes in int32 as the kernel does, the
    # specification in int64, and the frame is not resized, so any overflow would show
    levels = np.array([0, 1, 16, 64, 127, 128, 129, 192, 235, 240, 254, 255], np.uint8)
    u, v = (a.reshape(-1) for a in np.meshgrid(levels, levels))
    h, w = 2 * u.size, 256
    y = np.tile(np.arange(256, dtype=np.uint8), (h, 1))
    packed = np.concatenate([y.reshape(-1), np.repeat(u, w // 2), np.repeat(v, w // 2)]).reshape(h * 3 // 2, w)
    for matrix, range_ in COMBOS:
        image = Image(packed, "yuv420p", matrix, range_)
        got = _emulate([image], (h, w))[0]
        np.testing.assert_array_equal(got, letterbox_yuv420_reference(image, (h, w)))
        assert got.min() == 0 and got.max() == 255  # the clamps were reached


def test_mixed_batch_in_one_launch() -> None:
    images = [
        yuv_image(random_yuv(720, 1280, 1), "yuv420p"),
        yuv_image(random_yuv(1080, 1920, 2), "nv12", "bt709", "limited"),
        yuv_image(random_yuv(480, 640, 3), "yuv420p", "bt601", "full"),
        Image.bgr(np.random.default_rng(4).integers(0, 256, (377, 500, 3), dtype=np.uint8)),
        Image.bgr(np.full((4000, 2, 3), 50, np.uint8)),  # resized width rounds to 0: borders only
    ]
    hw = batch_input_shape([im.hw for im in images], 640, 32)
    expected = CpuPreprocessor()(images, hw)
    got, mem, descs = reference_batch(images, hw)
    np.testing.assert_array_equal(got, expected)
    assert (got[4] == 114).all() and descs[4, F["xtab_ptr"]] == 0 and descs[4, F["ytab_ptr"]] == 0
    # FP16 and FP32 from the same descriptors
    np.testing.assert_array_equal(emulate(mem, descs, hw, "float16"), to_model_input(expected, "cpu", True).numpy())
    np.testing.assert_array_equal(emulate(mem, descs, hw, "float32"), expected.astype(np.float32) * INV_255)


# --- the launch plan --------------------------------------------------------------------------------


def test_descriptors_address_the_packed_planes() -> None:
    base = 0x7F0000000000
    for pix_fmt, u_off, v_off, pitches in (
        ("yuv420p", 640 * 480, 640 * 480 + 320 * 240, (640, 320)),
        ("nv12", 640 * 480, 640 * 480 + 1, (640, 640)),
        ("bgr24", None, None, (3 * 640, 0)),
    ):
        plan = plan_frame(DeviceFrame(base, pix_fmt, 640, 480, "bt709", "full"), (512, 640))
        d = describe(plan, 111, 222)
        assert d.dtype == np.int64 and d.shape == (len(DESC_FIELDS),)
        assert d[F["y_ptr"]] == base
        if u_off is not None:
            assert d[F["u_ptr"]] == base + u_off and d[F["v_ptr"]] == base + v_off
        assert (d[F["y_pitch"]], d[F["c_pitch"]]) == pitches
        assert (d[F["xtab_ptr"]], d[F["ytab_ptr"]]) == (111, 222)
        assert (d[F["top"]], d[F["left"]], d[F["unpad_h"]], d[F["unpad_w"]]) == (16, 0, 480, 640)
        assert d[F["yoff"]] == 0  # full range
    ratio, (dw, dh) = letterbox_params((480, 640), (512, 640))
    assert (ratio, dw, dh) == (1.0, 0.0, 16.0)


def test_plan_uses_the_cpu_geometry_and_table_keys() -> None:
    for (h, w), hw in GEOMETRIES:
        plan = plan_frame(DeviceFrame(0, "nv12", w, h), hw)
        ratio, (dw, dh) = letterbox_params((h, w), hw)
        assert plan.top == int(round(dh - 0.1)) and plan.left == int(round(dw - 0.1))
        assert plan.xtab_key == (w, plan.unpad_w, True) and plan.ytab_key == (h, plan.unpad_h, False)
    table = axis_table(1920, 640, True)
    ref = linear_axis_table(1920, 640, True)
    assert table.dtype == np.int32 and table.shape == (640, 4) and table.flags.c_contiguous
    np.testing.assert_array_equal(table[:, :2], ref.idx)
    np.testing.assert_array_equal(table[:, 2:], ref.w)


def test_bad_frames_and_geometries_are_rejected() -> None:
    with pytest.raises(ValueError, match="pixel format"):
        DeviceFrame(0, "rgb24", 4, 4)
    with pytest.raises(ValueError, match="even"):
        DeviceFrame(0, "nv12", 5, 4)
    with pytest.raises(ValueError, match="colour"):
        DeviceFrame(0, "nv12", 4, 4, "bt2020")
    with pytest.raises(ValueError, match="input_hw"):
        plan_frame(DeviceFrame(0, "nv12", 4, 4), (0, 32))


def test_launch_grid_covers_every_pixel() -> None:
    grid, block = launch_config(5, (100, 70))
    assert block == (32, 8, 1) and grid == (3, 13, 5)
    assert grid[0] * block[0] >= 70 and grid[1] * block[1] >= 100


def test_host_memory_rejects_loads_outside_it() -> None:
    mem = HostMemory(64)
    assert mem.base % 256 == 0
    with pytest.raises(IndexError):
        mem.gather_u8(np.array([mem.base + 64], np.int64))
    with pytest.raises(IndexError):
        mem.int32s(mem.base + 60, 2)


# --- the kernel source itself, built for the host ---------------------------------------------------


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory: pytest.TempPathFactory) -> HostKernel:
    compiler = host_compiler()
    if compiler is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH to build the kernel source for the host")
    return HostKernel(tmp_path_factory.mktemp("kernel"), compiler)


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_host_build_of_the_kernel_equals_the_emulation(host_kernel: HostKernel, dtype: str) -> None:
    images = [
        yuv_image(random_yuv(720, 1280, 1), "yuv420p"),
        yuv_image(random_yuv(96, 130, 2), "nv12", "bt709", "limited"),
        yuv_image(random_yuv(1058, 1920, 3), "nv12", "bt601", "full"),
        yuv_image(random_yuv(240, 320, 4), "yuv420p", "bt709", "full"),
        Image.bgr(np.random.default_rng(5).integers(0, 256, (377, 500, 3), dtype=np.uint8)),
        Image.bgr(np.full((2000, 2, 3), 50, np.uint8)),
    ]
    hw = batch_input_shape([im.hw for im in images], 416, 32)
    expected, _mem, descs = reference_batch(images, hw, dtype)  # _mem keeps the frames alive for the host kernel
    got = host_kernel.run(descs, hw, dtype)
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))
    if dtype == "uint8":
        np.testing.assert_array_equal(got, CpuPreprocessor()(images, hw))


@pytest.mark.parametrize("src_hw,hw", [((2, 2), (64, 64)), ((1828, 1280), (640, 448)), ((376, 500), (100, 70))])
def test_host_build_guards_the_grid_edges(host_kernel: HostKernel, src_hw, hw) -> None:
    # an output whose width and height are not multiples of the block: threads past the edge must
    # not write; the bytes after the output stay poisoned
    image = yuv_image(random_yuv(*src_hw, seed=9), "nv12")
    expected, _mem, descs = reference_batch([image], hw, "float16")
    n = expected.size
    buf = np.full(n + 4096, 0x7E00, np.uint16)  # FP16 NaN everywhere
    out = buf[:n].view(np.float16).reshape(expected.shape)
    host_kernel.run(descs, hw, "float16", out=out)
    np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    assert (buf[n:] == 0x7E00).all()


def test_host_build_half_rounding_is_round_to_nearest_even(host_kernel: HostKernel) -> None:
    rng = np.random.default_rng(0)
    v = np.arange(256, dtype=np.float32) * INV_255
    randoms = rng.random(2000, dtype=np.float32)
    # exact ties between two halves (odd and even mantissas), subnormals, overflow, signs, specials
    halves = np.arange(0x3800, 0x3C00, 37, dtype=np.uint16).view(np.float16).astype(np.float32)  # in [0.5, 1)
    half_ulp = np.float32(2.0**-12)  # half of a half's ulp there: halves + half_ulp is an exact tie
    ties = np.concatenate([halves + half_ulp * np.float32(0.5), halves + half_ulp, halves + half_ulp * np.float32(1.5)])
    specials = np.array([0.0, -0.0, 1.0, -1.0, 6.0e-8, 3.0e-8, 2.9e-8, 6.1e-5, 5.9e-5, 65504.0, 65520.0, 65519.0,
                         1e6, -1e6, np.inf, -np.inf, 1e-40], np.float32)
    for values in (v, randoms, ties, specials):
        got = host_kernel.f32_to_f16_bits(values)
        with np.errstate(over="ignore"):  # 1e6 -> inf is the expected result
            expected = values.astype(np.float16).view(np.uint16)
        np.testing.assert_array_equal(got, expected)
    assert np.isnan(host_kernel.f32_to_f16_bits(np.array([np.nan], np.float32)).view(np.float16)).all()


# --- the kernel source through CUDA's own compiler ----------------------------------------------------


def test_nvcc_compiles_the_kernel_for_hopper(tmp_path: Path) -> None:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed; the kernel is compiled by NVRTC (CuPy) only on a GPU machine")
    src = tmp_path / "letterbox.cu"
    src.write_text(kernel_source())
    ptx = tmp_path / "letterbox.ptx"
    done = subprocess.run([nvcc, "-arch=sm_90", "--ptx", "-Werror", "all-warnings", str(src), "-o", str(ptx)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    text = ptx.read_text()
    for name in KERNEL_NAMES.values():
        assert f".entry {name}(" in text
    assert "cvt.rn.f16.f32" in text  # FP16 rounding: the PTX instruction, round to nearest even
    assert ".local" not in text  # no stack: everything in registers
