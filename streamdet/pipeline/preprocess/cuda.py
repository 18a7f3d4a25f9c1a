"""CUDA preprocessor: one fused kernel per batch, from YUV 4:2:0 (or BGR) frames to the model input.

:class:`CudaPreprocessor` compiles :mod:`streamdet.pipeline.preprocess.cuda_kernel` once per process and
device (CuPy RawModule, NVRTC; CuPy also caches the binary on disk), and launches it on the
caller's torch stream, writing uint8, float16 or float32 (B, 3, H, W) straight into a torch tensor:
the same bytes as :class:`~streamdet.pipeline.preprocess.letterbox.CpuPreprocessor`, or the same values as
``to_model_input`` of those bytes on the GPU (``v * (1/255)`` in float32, rounded to half for
FP16). The per-frame geometry, descriptors and tables come from
:mod:`streamdet.pipeline.preprocess.kernel_plan`, which CI runs through the numpy emulation
(:mod:`streamdet.pipeline.preprocess.kernel_reference`) and a host build of the kernel source.

Two entry points:

* ``pre(images, input_hw, out=None, dtype=None)``: host Images (the Preprocessor seam; Detector,
  warm-up). Their bytes go through a pinned staging buffer to the device, then one launch.
* ``pre.launch(frames, input_hw, out, stream)``: frames already on the device (the worker's
  pinned-ring arena, :mod:`streamdet.pipeline.ring.pinned`), given as
  :class:`~streamdet.pipeline.preprocess.kernel_plan.DeviceFrame` addresses: only the descriptors travel.

CuPy and torch are imported lazily (never at import time). One instance serves one stream at a
time: its staging and table buffers are allocated on, and reused in the order of, that stream.
"""

from __future__ import annotations

import functools
import importlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from streamdet.pipeline.preprocess.cuda_kernel import KERNEL_NAMES, kernel_source
from streamdet.pipeline.preprocess.kernel_plan import (
    DESC_FIELDS,
    INV_255,
    OUT_DTYPES,
    DeviceFrame,
    axis_table,
    describe,
    launch_config,
    pack_offsets,
    plan_frame,
)
from streamdet.pipeline.preprocess.letterbox import _batch_out
from streamdet.pipeline.registry import ImplementationUnavailable
from streamdet.pipeline.types import Image

if TYPE_CHECKING:
    import torch

__all__ = ["CudaPreprocessor", "StreamRef", "check_out", "import_cupy", "kernel_args"]


def import_cupy() -> Any:
    """``cupy``, or :class:`ImplementationUnavailable` naming the ``gpu`` extra when it is not installed."""
    try:
        return importlib.import_module("cupy")
    except ModuleNotFoundError as e:
        raise ImplementationUnavailable(
            "preprocessor \"cuda\" needs the optional dependency cupy: pip install 'streamdet[gpu]'",
            missing="cupy", extra="gpu") from e


class StreamRef:
    """A torch CUDA stream seen through the ``__cuda_stream__`` protocol (what CuPy 14's
    ``Stream.from_external`` takes): ``(0, handle)``. Keeps the torch stream alive."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __cuda_stream__(self) -> tuple[int, int]:
        return 0, int(self.stream.cuda_stream)


def _cupy_stream(cp: Any, stream: Any) -> Any:
    """A CuPy view of a torch stream (CuPy >= 14: ``Stream.from_external``; older: ``ExternalStream``)."""
    from_external = getattr(cp.cuda.Stream, "from_external", None)
    if from_external is not None:
        return from_external(StreamRef(stream))
    return cp.cuda.ExternalStream(int(stream.cuda_stream))


def kernel_args(descs_ptr: int, out_ptr: int, input_hw: tuple[int, int]) -> tuple[Any, ...]:
    """The kernel's arguments with C types CuPy cannot guess: a Python int would travel as int64 and
    a float as double, so ``int`` parameters get ``np.int32`` and the ``float`` scale ``np.float32``."""
    return int(descs_ptr), int(out_ptr), np.int32(input_hw[0]), np.int32(input_hw[1]), np.float32(INV_255)


@functools.cache
def _compiled(device_index: int) -> dict[str, Any]:
    """The kernels by output dtype, compiled once per process and device (NVRTC through CuPy)."""
    cp = import_cupy()
    with cp.cuda.Device(device_index):
        module = cp.RawModule(code=kernel_source())
        return {dtype: module.get_function(name) for dtype, name in KERNEL_NAMES.items()}


def _check_hw(input_hw: tuple[int, int]) -> tuple[int, int]:
    h, w = int(input_hw[0]), int(input_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"bad input_hw {input_hw}")
    return h, w


class _StagedUpload:
    """Host bytes -> device through page-locked buffers, on a stream, double-buffered: a host buffer is
    refilled only once its previous copy has completed (its event), so copies stay asynchronous."""

    def __init__(self, device: Any, slots: int = 2) -> None:
        self.device = device
        self._slots: list[dict[str, Any]] = [{"host": None, "dev": None, "event": None} for _ in range(slots)]
        self._next = 0

    def reserve(self, nbytes: int, stream: Any) -> np.ndarray:
        """A writable uint8 view of ``nbytes`` of the next pinned buffer (commit it with :meth:`commit`)."""
        import torch

        slot = self._slots[self._next]
        if slot["event"] is not None:
            slot["event"].synchronize()
        if slot["host"] is None or slot["host"].numel() < nbytes:
            cap = max(4096, 1 << max(0, int(nbytes) - 1).bit_length())
            slot["host"] = torch.empty(cap, dtype=torch.uint8, pin_memory=True)
            with torch.cuda.device(self.device), torch.cuda.stream(stream):
                slot["dev"] = torch.empty(cap, dtype=torch.uint8, device=self.device)
        slot["n"] = int(nbytes)
        return slot["host"][: int(nbytes)].numpy()

    def commit(self, stream: Any) -> torch.Tensor:
        """Enqueue the copy of the reserved bytes on ``stream``; the device view of them."""
        import torch

        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        n = slot["n"]
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            slot["dev"][:n].copy_(slot["host"][:n], non_blocking=True)
            slot["event"] = torch.cuda.Event()
            slot["event"].record(stream)
        return slot["dev"][:n]


def check_out(out: Any, n: int, hw: tuple[int, int], device: Any) -> torch.Tensor:
    """``out[:n]`` once ``out`` is a contiguous (>= n, 3, H, W) uint8/float16/float32 tensor on
    ``device`` (what the kernel writes into); ValueError naming what is wrong otherwise."""
    import torch

    ok_dtypes = {getattr(torch, name) for name in OUT_DTYPES}
    if not isinstance(out, torch.Tensor) or out.dtype not in ok_dtypes or out.ndim != 4:
        raise ValueError(f"out must be a (>= {n}, 3, {hw[0]}, {hw[1]}) uint8/float16/float32 tensor, "
                         f"got {type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}")
    if out.device != device or out.shape[0] < n or tuple(out.shape[1:]) != (3, *hw):
        raise ValueError(f"out must be (>= {n}, 3, {hw[0]}, {hw[1]}) on {device}, "
                         f"got {tuple(out.shape)} on {out.device}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous (N, C, H, W)")
    return out[:n]


class CudaPreprocessor:
    """Fused GPU preprocessing (see the module docstring).

    ``device``: a CUDA device (default: the current one). ``dtype``: the output when no ``out`` is
    given: "uint8" (the Preprocessor seam: the CPU preprocessor's bytes), "float16" or "float32"
    (the model input). ``max_tables``: axis tables kept on the device (one per axis and geometry).
    Raises ImplementationUnavailable without CuPy, RuntimeError without a CUDA device.
    """

    name = "cuda"

    def __init__(self, device: str | int | None = None, dtype: str = "uint8", max_tables: int = 256) -> None:
        self._cp = import_cupy()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("preprocessor \"cuda\" needs a CUDA device; torch sees none")
        dev = torch.device("cuda" if device is None else (f"cuda:{device}" if isinstance(device, int) else device))
        if dev.type != "cuda":
            raise ValueError(f"preprocessor \"cuda\" runs on a CUDA device, not {dev}")
        self.device = dev if dev.index is not None else torch.device("cuda", torch.cuda.current_device())
        if dtype not in OUT_DTYPES:
            raise ValueError(f"unsupported output dtype {dtype!r} (expected one of {tuple(OUT_DTYPES)})")
        self.dtype = dtype
        self._max_tables = max(2, int(max_tables))
        self._tables: OrderedDict[tuple[int, int, bool], torch.Tensor] = OrderedDict()
        self._frames = _StagedUpload(self.device)
        self._descs = _StagedUpload(self.device)
        self._streams: dict[int, Any] = {}

    def compile(self) -> None:
        """Compile the kernels now (NVRTC, or CuPy's disk cache): call during warm-up, before READY."""
        _compiled(int(self.device.index))

    # -- the Preprocessor seam: host Images -------------------------------------------------------

    def __call__(self, images: Sequence[Image], input_hw: tuple[int, int], out: Any = None, *,
                 dtype: str | None = None, stream: Any = None) -> Any:
        """Letterbox host ``images`` on the GPU. ``out``: None (a new tensor of ``dtype``, default the
        instance's), a CUDA tensor ((>= B, 3, H, W), uint8/float16/float32, contiguous; written and
        ``out[:B]`` returned), or a uint8 numpy array as the CPU preprocessor takes (the result is
        copied into it and ``out[:B]`` returned)."""
        import torch

        hw = _check_hw(input_hw)
        host_out = None
        if isinstance(out, np.ndarray):
            if dtype not in (None, "uint8"):
                raise ValueError("a numpy out buffer holds uint8 only")
            host_out = _batch_out(len(images), hw, out)
        stream = stream if stream is not None else torch.cuda.current_stream(self.device)
        if out is None or host_out is not None:
            name = "uint8" if host_out is not None else (dtype or self.dtype)
            if name not in OUT_DTYPES:
                raise ValueError(f"unsupported output dtype {name!r} (expected one of {tuple(OUT_DTYPES)})")
            with torch.cuda.device(self.device), torch.cuda.stream(stream):
                dev_out = torch.empty((len(images), 3, *hw), dtype=getattr(torch, name), device=self.device)
        else:
            dev_out = out
        frames: list[DeviceFrame] = []
        if images:
            raws = [np.ascontiguousarray(im.data).reshape(-1) for im in images]
            offsets, total = pack_offsets([r.size for r in raws])
            staging = self._frames.reserve(total, stream)
            for raw, off in zip(raws, offsets, strict=True):
                staging[off:off + raw.size] = raw
            base = self._frames.commit(stream).data_ptr()
            frames = [DeviceFrame(base + off, im.pix_fmt, im.width, im.height, im.color_matrix, im.color_range)
                      for im, off in zip(images, offsets, strict=True)]
        result = self.launch(frames, hw, dev_out, stream)
        if host_out is None:
            return result
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            torch.from_numpy(host_out).copy_(result)  # device -> pageable host: returns once copied
        return host_out

    # -- frames already on the device -------------------------------------------------------------

    def launch(self, frames: Sequence[DeviceFrame], input_hw: tuple[int, int], out: torch.Tensor,
               stream: Any = None) -> torch.Tensor:
        """Enqueue one kernel on ``stream`` (default: the current stream) that letterboxes ``frames``
        (device addresses, valid until the kernel has run) into ``out[:B]``; returns ``out[:B]``.
        Nothing waits: the caller orders the frames' copies before it (``stream.wait_event``) and
        keeps the frames alive until an event recorded after it has completed."""
        import torch

        hw = _check_hw(input_hw)
        batch = check_out(out, len(frames), hw, self.device)
        if not frames:
            return batch
        stream = stream if stream is not None else torch.cuda.current_stream(self.device)
        descs = np.empty((len(frames), len(DESC_FIELDS)), np.int64)
        in_use = []
        for i, frame in enumerate(frames):
            plan = plan_frame(frame, hw)
            xt = self._table(plan.xtab_key, stream)
            yt = self._table(plan.ytab_key, stream)
            in_use += [xt, yt]
            descs[i] = describe(plan, xt.data_ptr() if xt is not None else 0, yt.data_ptr() if yt is not None else 0)
        raw = descs.view(np.uint8).reshape(-1)
        self._descs.reserve(raw.size, stream)[:] = raw
        descs_dev = self._descs.commit(stream)
        kernel = _compiled(int(self.device.index))[str(batch.dtype).removeprefix("torch.")]
        grid, block = launch_config(len(frames), hw)
        cp = self._cp
        with cp.cuda.Device(int(self.device.index)), self._cupy_stream(stream):
            kernel(grid, block, kernel_args(descs_dev.data_ptr(), batch.data_ptr(), hw))
        return batch

    def _table(self, key: tuple[int, int, bool] | None, stream: Any) -> torch.Tensor | None:
        """The device copy of an axis table, cached (least recently used dropped beyond max_tables;
        tables live on the instance's stream, so a dropped one is reused only after queued work)."""
        import torch

        if key is None:
            return None
        table = self._tables.get(key)
        if table is None:
            with torch.cuda.device(self.device), torch.cuda.stream(stream):
                table = torch.from_numpy(axis_table(*key)).to(self.device)
            self._tables[key] = table
            while len(self._tables) > self._max_tables:
                self._tables.popitem(last=False)
        else:
            self._tables.move_to_end(key)
        return table

    def _cupy_stream(self, stream: Any) -> Any:
        handle = int(stream.cuda_stream)
        cs = self._streams.get(handle)
        if cs is None:
            cs = self._streams[handle] = _cupy_stream(self._cp, stream)
        return cs
