"""One suite over every registered preprocessor (cpu, cuda): the FP16/FP32 model input each produces.

The expected value is the integer specification (``letterbox_yuv420_reference``) turned into the
model input on the preprocessor's own device (``to_model_input``, what the backends do today), so
the CUDA preprocessor must give a bit-identical model input. The byte-level (uint8) seam suite is in
``test_preprocess.py``. CUDA cases skip without CuPy or without a GPU, saying which; the CUDA
preprocessor's host-side plumbing (missing extra, kernel argument types, stream adapter) is tested
here on the CPU.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from importlib.util import find_spec
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from streamdet.pipeline.backends.model_input import to_model_input
from streamdet.pipeline.preprocess import cuda as cuda_preprocess
from streamdet.pipeline.preprocess.kernel_plan import INV_255, DeviceFrame
from streamdet.pipeline.preprocess.letterbox import batch_input_shape, letterbox_yuv420_reference
from streamdet.pipeline.registry import ImplementationUnavailable
from streamdet.pipeline.stages import PREPROCESSORS
from streamdet.pipeline.types import Image
from tests.pipeline.preprocess.test_colour import COMBOS, random_yuv, yuv_image

IMPLEMENTATIONS = PREPROCESSORS.names()
DTYPES = ["float16", "float32"]
# downscale (non-integer), odd upscale with odd borders, the _batch_geometry rounding corner at 416
GEOMETRIES = [((576, 704), (544, 640)), ((96, 130), (416, 416)), ((1036, 1920), (224, 416))]


def _unavailable(name: str) -> str | None:
    """Why preprocessor ``name`` cannot run here, or None."""
    entry = PREPROCESSORS.entry(name)
    if not PREPROCESSORS.available(name):
        return (f"{name} preprocessor: optional dependency {', '.join(entry.requires)} not installed "
                f"(pip install 'streamdet[{entry.extra}]')")
    if name == "cuda" and not torch.cuda.is_available():
        return "cuda preprocessor: needs a CUDA GPU, and torch sees none here"
    return None


@pytest.fixture(params=IMPLEMENTATIONS)
def pre(request: pytest.FixtureRequest) -> Any:
    reason = _unavailable(request.param)
    if reason:
        pytest.skip(reason)
    return PREPROCESSORS.resolve(request.param)()


@pytest.fixture
def cuda_pre() -> Any:
    reason = _unavailable("cuda")
    if reason:
        pytest.skip(reason)
    return PREPROCESSORS.resolve("cuda")()


def _device(pre: Any) -> str:
    return "cpu" if pre.name == "cpu" else str(pre.device)


def model_input(pre: Any, images: list[Image], hw: tuple[int, int], dtype: str) -> torch.Tensor:
    """The (B, 3, H, W) model input a preprocessor gives: CPU bytes through ``to_model_input`` (as the
    backends do), or the CUDA kernel's own FP16/FP32 output."""
    if pre.name == "cpu":
        return to_model_input(pre(images, hw), "cpu", half=dtype == "float16")
    return pre(images, hw, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _image(src_hw: tuple[int, int], pix_fmt: str, matrix: str, range_: str) -> Image:
    return yuv_image(random_yuv(*src_hw, seed=src_hw[0] + 3 * src_hw[1]), pix_fmt, matrix, range_)


@functools.lru_cache(maxsize=64)
def _reference(src_hw: tuple[int, int], hw: tuple[int, int], pix_fmt: str, matrix: str, range_: str) -> np.ndarray:
    return letterbox_yuv420_reference(_image(src_hw, pix_fmt, matrix, range_), hw)


def expected_input(refs: list[np.ndarray], device: str, dtype: str) -> torch.Tensor:
    return to_model_input(np.stack(refs), device, half=dtype == "float16")


def _assert_bit_equal(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape and got.device == want.device
    assert torch.equal(got, want), f"{int((got != want).sum())} of {got.numel()} values differ"


# --- the suite over every preprocessor --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("matrix,range_", COMBOS)
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
@pytest.mark.parametrize("src_hw,hw", GEOMETRIES)
def test_model_input_equals_the_specification(pre: Any, src_hw, hw, pix_fmt: str, matrix: str, range_: str,
                                              dtype: str) -> None:
    got = model_input(pre, [_image(src_hw, pix_fmt, matrix, range_)], hw, dtype)
    _assert_bit_equal(got, expected_input([_reference(src_hw, hw, pix_fmt, matrix, range_)], _device(pre), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_batch_model_input(pre: Any, dtype: str) -> None:
    images = [
        _image((720, 1280), "yuv420p", "bt601", "limited"),
        _image((1080, 1920), "nv12", "bt709", "limited"),
        _image((480, 640), "yuv420p", "bt601", "full"),
        Image.bgr(np.random.default_rng(4).integers(0, 256, (377, 500, 3), dtype=np.uint8)),
    ]
    hw = batch_input_shape([im.hw for im in images], 640, 32)
    refs = [letterbox_yuv420_reference(im, hw) for im in images]
    _assert_bit_equal(model_input(pre, images, hw, dtype), expected_input(refs, _device(pre), dtype))


# --- CUDA only (skipped without CuPy or a GPU) ---------------------------------------------------------------


@pytest.mark.gpu
def test_cuda_writes_every_element_on_a_side_stream(cuda_pre: Any) -> None:
    images = [_image((576, 704), "nv12", "bt709", "full"), _image((96, 130), "yuv420p", "bt601", "limited")]
    hw = (544, 640)
    out = torch.full((4, 3, *hw), float("nan"), dtype=torch.float16, device=cuda_pre.device)
    side = torch.cuda.Stream(cuda_pre.device)
    got = cuda_pre(images, hw, out=out, stream=side)
    side.synchronize()
    assert got.data_ptr() == out.data_ptr() and got.shape == (2, 3, *hw)
    refs = [letterbox_yuv420_reference(im, hw) for im in images]
    _assert_bit_equal(out[:2], expected_input(refs, str(cuda_pre.device), "float16"))
    assert torch.isnan(out[2:]).all()  # beyond the batch: untouched


@pytest.mark.gpu
def test_cuda_launch_from_device_frames(cuda_pre: Any) -> None:
    images = [_image((720, 1280), "nv12", "bt601", "limited"), _image((240, 320), "yuv420p", "bt709", "limited")]
    hw = batch_input_shape([im.hw for im in images], 640, 32)
    arena = [torch.from_numpy(np.ascontiguousarray(im.data).reshape(-1)).to(cuda_pre.device) for im in images]
    frames = [DeviceFrame(t.data_ptr(), im.pix_fmt, im.width, im.height, im.color_matrix, im.color_range)
              for t, im in zip(arena, images, strict=True)]
    out = torch.empty((2, 3, *hw), dtype=torch.float32, device=cuda_pre.device)
    cuda_pre.launch(frames, hw, out)
    torch.cuda.synchronize(cuda_pre.device)
    refs = [letterbox_yuv420_reference(im, hw) for im in images]
    _assert_bit_equal(out, expected_input(refs, str(cuda_pre.device), "float32"))


@pytest.mark.gpu
def test_cuda_rejects_bad_out_tensors(cuda_pre: Any) -> None:
    images = [_image((96, 130), "nv12", "bt601", "limited")]
    dev = cuda_pre.device
    for bad in (torch.empty((1, 3, 64, 64)), torch.empty((1, 3, 64, 64), dtype=torch.float64, device=dev),
                torch.empty((1, 3, 64, 128), device=dev)[..., ::2], torch.empty((1, 3, 64, 32), device=dev)):
        with pytest.raises(ValueError):
            cuda_pre(images, (64, 64), out=bad)


@pytest.mark.gpu
def test_cuda_compiles_once_per_process(cuda_pre: Any) -> None:
    cuda_pre.compile()
    before = cuda_preprocess._compiled.cache_info()
    type(cuda_pre)(device=cuda_pre.device).compile()
    after = cuda_preprocess._compiled.cache_info()
    assert after.misses == before.misses and after.hits > before.hits


# --- the CUDA preprocessor's host side, on the CPU ------------------------------------------------------------


def test_registry_lists_cuda_with_the_gpu_extra() -> None:
    assert IMPLEMENTATIONS[:2] == ["cpu", "cuda"]
    entry = PREPROCESSORS.entry("cuda")
    assert entry.extra == "gpu" and entry.requires == ("cupy",)
    assert PREPROCESSORS.available("cuda") == (find_spec("cupy") is not None)


def test_cuda_preprocessor_without_cupy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ModuleNotFoundError
    cls = PREPROCESSORS.resolve("cuda")  # the module itself imports without CuPy
    with pytest.raises(ImplementationUnavailable, match=r"pip install 'streamdet\[gpu\]'") as e:
        cls()
    assert e.value.extra == "gpu" and e.value.missing == "cupy"


def test_kernel_arguments_carry_c_types() -> None:
    args = cuda_preprocess.kernel_args(0x7F00_0000_1000, 0x7F00_0000_2000, (384, 640))
    assert args[:2] == (0x7F00_0000_1000, 0x7F00_0000_2000) and all(type(a) is int for a in args[:2])
    assert type(args[2]) is np.int32 and type(args[3]) is np.int32 and (args[2], args[3]) == (384, 640)
    assert type(args[4]) is np.float32 and args[4] == INV_255


def test_torch_stream_adapter_for_cupy() -> None:
    torch_stream = SimpleNamespace(cuda_stream=0xBEEF)
    assert cuda_preprocess.StreamRef(torch_stream).__cuda_stream__() == (0, 0xBEEF)
    seen: list[Any] = []
    cp14 = SimpleNamespace(cuda=SimpleNamespace(Stream=SimpleNamespace(from_external=seen.append)))
    cuda_preprocess._cupy_stream(cp14, torch_stream)
    assert seen[0].__cuda_stream__() == (0, 0xBEEF) and seen[0].stream is torch_stream
    cp13 = SimpleNamespace(cuda=SimpleNamespace(Stream=SimpleNamespace(), ExternalStream=lambda ptr: ("ext", ptr)))
    assert cuda_preprocess._cupy_stream(cp13, torch_stream) == ("ext", 0xBEEF)


def test_gpu_modules_import_neither_cupy_nor_torch() -> None:
    code = ("import sys\n"
            "import streamdet.pipeline.preprocess.cuda, streamdet.pipeline.ring.pinned\n"
            "import streamdet.pipeline.preprocess.kernel_reference, streamdet.pipeline.ring.slots\n"
            "assert 'cupy' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
