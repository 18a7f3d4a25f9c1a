"""The device feed's start-up self-check: the GPU path must give exactly the CPU path's model input.

Run at warm-up, before READY (:func:`self_check`): a fixed set of synthetic frames (I420, NV12 and
BGR; even and unusual sizes, odd ones for BGR; BT.601 and BT.709, limited and full range) is
copied to the device and letterboxed by the fused kernel through the worker's own
:class:`~streamdet.pipeline.cuda.runtime.CudaRuntime`, once into uint8 and once into the model's
dtype, and compared with the CPU preprocessor's bytes and with ``to_model_input`` of those bytes
on the same device: uint8 identical, FP16/FP32 identical bit for bit. Any difference (a driver,
a CuPy or an NVRTC that computes otherwise) is a reason not to use the device feed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from streamdet.pipeline.backends.model_input import to_model_input
from streamdet.pipeline.preprocess.kernel_plan import DeviceFrame, pack_offsets
from streamdet.pipeline.preprocess.letterbox import CpuPreprocessor
from streamdet.pipeline.types import Image

if TYPE_CHECKING:
    from streamdet.pipeline.cuda.runtime import CudaRuntime

__all__ = ["CHECK_FRAMES", "self_check", "synthetic_images"]

#: (pix_fmt, width, height, colour matrix, colour range) of the self-check frames.
CHECK_FRAMES: tuple[tuple[str, int, int, str, str], ...] = (
    ("yuv420p", 1280, 720, "bt709", "limited"),
    ("yuv420p", 642, 362, "bt601", "limited"),
    ("yuv420p", 320, 240, "bt601", "full"),
    ("nv12", 1920, 1080, "bt709", "limited"),
    ("nv12", 358, 202, "bt709", "full"),
    ("nv12", 704, 576, "bt601", "limited"),
    ("bgr24", 641, 361, "bt601", "limited"),
    ("bgr24", 97, 211, "bt709", "full"),
)


def synthetic_images(seed: int = 7) -> list[Image]:
    """The self-check frames: random bytes (every value occurs, so every table entry is exercised)."""
    rng = np.random.default_rng(seed)
    images = []
    for pix_fmt, w, h, matrix, range_ in CHECK_FRAMES:
        shape = (h, w, 3) if pix_fmt == "bgr24" else (h * 3 // 2, w)
        images.append(Image(rng.integers(0, 256, shape, dtype=np.uint8), pix_fmt, matrix, range_))
    return images


def _device_batch(rt: CudaRuntime, images: Sequence[Image], input_hw: tuple[int, int],
                  dtypes: Sequence[str]) -> list[np.ndarray]:
    """The kernel's output for ``images`` in each of ``dtypes``, through the runtime's own copy path."""
    stream = rt.new_stream()
    raws = [np.ascontiguousarray(im.data).reshape(-1) for im in images]
    offsets, total = pack_offsets([r.size for r in raws])
    host = rt.pinned_empty(total)
    dev = rt.device_empty(total, stream)
    frames = []
    for im, raw, off in zip(images, raws, offsets, strict=True):
        host.array[off:off + raw.size] = raw
        rt.copy_async(dev.ptr + off, host.ptr + off, raw.size, stream)
        frames.append(DeviceFrame(dev.ptr + off, im.pix_fmt, im.width, im.height, im.color_matrix, im.color_range))
    b, (h, w) = len(images), input_hw
    outs = []
    for dtype in dtypes:
        out = rt.empty_batch(b * 3 * h * w, dtype, stream).view(b, 3, h, w)
        rt.launch_preprocess(frames, input_hw, out, stream)
        outs.append(out)
    rt.synchronize(rt.record(stream))
    result = [o.cpu().numpy() for o in outs]
    del host, dev  # kept alive until the stream has run the copies and kernels
    return result


def self_check(rt: CudaRuntime, input_shape: Callable[[Sequence[tuple[int, int]]], tuple[int, int]],
               dtype: str) -> str | None:
    """None when the device path equals the CPU path on every self-check frame, else one line naming
    the first difference. ``input_shape``: the stages' batch shape for frame sizes; ``dtype``: the
    model input dtype ("float16" or "float32")."""
    images = synthetic_images()
    cpu = CpuPreprocessor()
    for i, image in enumerate(images):  # one frame per batch: every geometry is its own letterbox
        hw = input_shape([image.hw])
        want_u8 = cpu([image], hw)
        got_u8, got_model = _device_batch(rt, [image], hw, ("uint8", dtype))
        what = "{} {}x{} {}/{}".format(*CHECK_FRAMES[i])
        if got_u8.shape != want_u8.shape or not np.array_equal(got_u8, want_u8):
            diff = int(np.count_nonzero(got_u8 != want_u8)) if got_u8.shape == want_u8.shape else -1
            return f"the CUDA kernel's uint8 output differs from the CPU preprocessor on {what} ({diff} bytes)"
        want_model = to_model_input(want_u8, rt.device, half=dtype == "float16").cpu().numpy()
        if got_model.dtype != want_model.dtype or got_model.tobytes() != want_model.tobytes():
            return f"the CUDA kernel's {dtype} output differs from the CPU path's model input on {what}"
    mixed = images[:3] + images[3:6] + images[6:]  # and all formats in one launch
    hw = input_shape([im.hw for im in mixed])
    got_u8, = _device_batch(rt, mixed, hw, ("uint8",))
    if not np.array_equal(got_u8, cpu(mixed, hw)):
        return "the CUDA kernel's uint8 output differs from the CPU preprocessor on a mixed batch"
    return None
