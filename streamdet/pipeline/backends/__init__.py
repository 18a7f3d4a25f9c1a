"""Inference backends: the "infer" stage behind one seam.

Every backend takes the preprocessed uint8 (B, 3, H, W) RGB batch and returns the raw YOLOv5
prediction (B, N, 5+nc) as a float32 torch tensor; NMS and box scaling stay with the caller.
This module imports no inference library: :data:`BACKENDS` resolves the implementations lazily,
so asking which are installed (:func:`available_backends`) or creating the torch backend never
imports onnxruntime or openvino.

``create_backend("auto", ...)`` picks the first installed backend of :data:`AUTO_ORDER` for the
device type. The CPU order was measured on the development machine (2 shared, noisy cores, AVX2;
demo yolov5n, batch 4, median of 15 interleaved runs, ms):

    input     onnxruntime  openvino (static / dynamic)  torch (channels_last / plain)
    256x416   51           53 / 57                      108 / 154
    384x640   120          118 / 126                    215 / 290

onnxruntime and openvino tie within the noise; onnxruntime comes first because it loads faster
(~0.8 s vs ~1.5 s, plus ~0.4 s of compilation per new input shape for openvino) and needs no
per-shape compiled models. torch is last on CPU but first (and only) on CUDA, where FP16 and
the GPU preprocessing live.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from streamdet.pipeline.registry import Implementation, Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "Backend",
    "DeviceUnavailable",
    "InputContract",
    "available_backends",
    "check_batch",
    "check_tensor_batch",
    "check_device",
    "create_backend",
    "device_type",
    "ensure_device",
]


@dataclass(frozen=True)
class InputContract:
    """What a backend's :meth:`Backend.infer` accepts, so the preprocessor can produce exactly that.

    ``dtype`` is what ``infer`` is fed (always ``"uint8"`` today: the cast and ``/255`` happen
    inside the backend); ``compute_dtype`` is the precision the network runs in. ``fixed_hw`` /
    ``max_batch`` are None when any multiple of the stride / any batch size is accepted.
    ``tensor_dtype`` is set when ``infer`` also takes an already normalised (0..1) float
    (B, 3, H, W) torch tensor of that dtype on ``device`` (the CUDA preprocessor's output, which
    then skips the uint8 upload and ``/255``); None when only uint8 numpy batches are accepted.
    """

    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["uint8", "float32", "float16"] = "uint8"
    device: str = "cpu"
    dynamic_shape: bool = True
    fixed_hw: tuple[int, int] | None = None
    max_batch: int | None = None
    compute_dtype: Literal["float32", "float16"] = "float32"
    channels: int = 3
    tensor_dtype: Literal["float32", "float16"] | None = None


@runtime_checkable
class Backend(Protocol):
    """One loaded model on one device. ``infer`` may be called from any single thread at a time."""

    name: str  # "torch" | "onnxruntime" | "openvino"
    contract: InputContract
    names: list[str]  # class names, index = class id
    stride: int  # the model's largest stride (32 or 64)

    def infer(self, batch: np.ndarray) -> torch.Tensor:
        """C-contiguous uint8 (B, 3, H, W) RGB, H and W multiples of ``stride`` -> float32 (B, N, 5+nc)."""
        ...

    def close(self) -> None:
        """Release the model and runtime resources; ``infer`` must not be called afterwards."""
        ...


# requires: what must be installed for the backend to work at all. The extras also install onnx and
# onnxscript for the torch.export-based ONNX exporter; without them the TorchScript exporter is used.
_BACKEND_ENTRIES = MappingProxyType({
    "torch": Implementation("streamdet.pipeline.backends.torch_backend:TorchBackend", None, ("torch",)),
    "onnxruntime": Implementation(
        "streamdet.pipeline.backends.onnxruntime_backend:OnnxRuntimeBackend", "onnxruntime", ("onnxruntime",),
    ),
    "openvino": Implementation(
        "streamdet.pipeline.backends.openvino_backend:OpenVinoBackend", "openvino", ("openvino",),
    ),
})

#: The inference backends by name (resolved lazily).
BACKENDS = Registry("backend", _BACKEND_ENTRIES)

#: Preference order of ``create_backend("auto")`` per device type (measured; see the module doc).
AUTO_ORDER: MappingProxyType[str, tuple[str, ...]] = MappingProxyType({
    "cpu": ("onnxruntime", "openvino", "torch"),
    "cuda": ("torch",),
})


def device_type(device: str) -> str:
    """``"cuda:1"`` -> ``"cuda"``; accepts ``cpu``, ``cuda`` and ``cuda:N`` only."""
    kind, _, index = str(device).partition(":")
    if kind not in AUTO_ORDER or (index and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"unsupported device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")
    return kind


class DeviceUnavailable(RuntimeError):
    """The configured device does not exist on this machine (a restart cannot fix that)."""


def ensure_device(device: str) -> None:
    """Raise DeviceUnavailable, naming the device, when ``device`` cannot be used in this process.

    Initialises CUDA for a CUDA device: call it in a worker, never in the supervisor or a decoder.
    """
    kind = device_type(device)
    if kind != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU or driver is usable"
        raise DeviceUnavailable(f"device {device} is not available: {why} (torch {torch.__version__})")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise DeviceUnavailable(f"device {device} is not available: this process sees "
                                f"{torch.cuda.device_count()} CUDA device(s)")


def check_device(device: str, half: bool) -> str:
    """The device type (``cpu``/``cuda``) of ``device``; ValueError for FP16 on a CPU."""
    kind = device_type(device)
    if half and kind == "cpu":
        raise ValueError("half=True needs a CUDA device; FP16 inference is not supported on CPU")
    return kind


def available_backends(device: str = "cpu") -> list[str]:
    """The installed backends usable on ``device``, in ``auto`` preference order (imports nothing heavy)."""
    return [n for n in AUTO_ORDER[device_type(device)] if BACKENDS.available(n)]


def create_backend(
    name: str,
    weights: str | Path,
    *,
    device: str = "cpu",
    half: bool = False,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> Backend:
    """Load ``weights`` into backend ``name`` (or ``"auto"``: the preferred installed one for ``device``).

    Raises :class:`~streamdet.pipeline.registry.UnknownImplementation` for an unknown name and
    :class:`~streamdet.pipeline.registry.ImplementationUnavailable` (naming the pip extra) when
    the backend's optional dependency is not installed.
    """
    kind = check_device(device, half)
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if name == "auto":
        candidates = available_backends(device)
        if not candidates:
            raise ValueError(f"no backend for device {device!r} is installed (tried {', '.join(AUTO_ORDER[kind])})")
        name = candidates[0]
    cls = BACKENDS.resolve(name)
    backend: Backend = cls(weights, device=device, half=half, threads=threads, cache_dir=cache_dir)
    return backend


def check_batch(batch: np.ndarray, stride: int) -> None:
    """Raise ValueError unless ``batch`` is a C-contiguous uint8 (B, 3, H, W) array with H, W multiples of stride."""
    if not isinstance(batch, np.ndarray) or batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1] != 3:
        shape = getattr(batch, "shape", None)
        raise ValueError(f"expected a uint8 (B, 3, H, W) numpy array, got {type(batch).__name__} "
                         f"{getattr(batch, 'dtype', '')} {shape}")
    b, _, h, w = batch.shape
    if b < 1 or h < stride or w < stride or h % stride or w % stride:
        raise ValueError(f"batch shape {batch.shape}: need B >= 1 and H, W positive multiples of {stride}")
    if not batch.flags.c_contiguous:
        raise ValueError("batch must be C-contiguous")


def check_tensor_batch(batch: torch.Tensor, stride: int, device: str, dtype: str) -> None:
    """Raise ValueError unless ``batch`` is a dense ``dtype`` (B, 3, H, W) tensor on ``device``, H, W stride multiples.

    ``device`` is ``cpu``, ``cuda`` (any CUDA device) or ``cuda:N``; ``dtype`` is ``float32`` or
    ``float16``. Dense means contiguous or channels_last (either is accepted; the backend converts).
    """
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) tensor, got shape {tuple(batch.shape)}")
    if str(batch.dtype) != f"torch.{dtype}":
        raise ValueError(f"expected a {dtype} tensor (normalised 0..1), got {str(batch.dtype).removeprefix('torch.')}")
    kind, _, index = device.partition(":")
    if batch.device.type != kind or (index and str(batch.device.index) != index):
        raise ValueError(f"batch is on {batch.device}, the model on {device}: move it there first")
    b, _, h, w = batch.shape
    if b < 1 or h < stride or w < stride or h % stride or w % stride:
        raise ValueError(f"batch shape {tuple(batch.shape)}: need B >= 1 and H, W positive multiples of {stride}")
    if not (batch.is_contiguous() or batch.is_contiguous(memory_format=_channels_last())):
        raise ValueError("batch tensor must be contiguous or channels_last")


def _channels_last() -> torch.memory_format:
    """torch.channels_last, imported only when a tensor is checked (this module imports no torch)."""
    import torch

    return torch.channels_last
