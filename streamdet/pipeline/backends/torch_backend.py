"""The torch backend: our own YOLOv5 module (:func:`~streamdet.model.checkpoint.load_model`), fused.

The reference implementation every other backend is checked against. ``infer`` moves the
uint8 batch to the device and normalises there (``t.float(); t /= 255``, bit-exact with
:func:`~streamdet.pipeline.backends.model_input.to_model_input`), so only 1 byte per pixel crosses to
a GPU; a normalised float tensor already on the device (the CUDA preprocessor's output) is
taken as it is. On CPU the model and input run in ``channels_last`` memory format: measured on the
development machine (2 cores, AVX2, demo yolov5n, batch 4, median of 15 runs) it takes ~108 ms
instead of ~154 ms at 256x416 and ~215 ms instead of ~290 ms at 384x640 (oneDNN's NHWC
convolutions avoid layout reorders between layers). Its results differ from the plain layout by
float32 rounding only; ``channels_last=False`` is bit-identical to the pre-backend path.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from streamdet.model.checkpoint import load_model
from streamdet.model.yolov5 import YOLOv5
from streamdet.pipeline.backends import InputContract, check_batch, check_device, check_tensor_batch
from streamdet.pipeline.backends.model_input import to_model_input


class TorchBackend:
    """YOLOv5 in torch on ``device`` (``cpu`` or ``cuda:N``), FP16 on CUDA when ``half``.

    ``threads`` sets torch's intra-op thread count, which is process-wide in torch.
    ``channels_last`` defaults to True on CPU (measured faster) and False on CUDA.
    ``cache_dir`` is accepted for a uniform constructor and unused.
    """

    name = "torch"

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "cpu",
        half: bool = False,
        threads: int | None = None,
        cache_dir: Path | None = None,
        channels_last: bool | None = None,
    ) -> None:
        kind = check_device(device, half)
        if threads is not None:
            torch.set_num_threads(int(threads))
        channels_last = (kind == "cpu") if channels_last is None else channels_last
        model = load_model(weights, device=device, half=half, fuse=True)
        if channels_last:
            # torch's stubs leave memory_format out of Module.to's overloads; it is a documented argument
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._setup(model, device, half, channels_last)

    @classmethod
    def from_module(cls, model: YOLOv5, *, device: str = "cpu", threads: int | None = None) -> TorchBackend:
        """Wrap an in-memory YOLOv5 (e.g. the EMA model during training validation) as it is.

        The module is neither copied nor changed: no fusing, no memory-format change, no
        ``eval()`` (the caller puts it in eval mode for the duration). It must already be on
        ``device``; FP16 parameters mean FP16 inference.
        """
        check_device(device, False)
        if threads is not None:
            torch.set_num_threads(int(threads))
        backend = cls.__new__(cls)
        half = next(model.parameters()).dtype == torch.float16
        backend._setup(model, device, half, channels_last=False)
        return backend

    def _setup(self, model: YOLOv5, device: str, half: bool, channels_last: bool) -> None:
        self.device = torch.device(device)
        self.half = half
        self.channels_last = channels_last
        self.model: torch.nn.Module | None = model
        self.names: list[str] = list(model.names)
        self.stride: int = int(max(float(s) for s in model.stride))
        dtype: Literal["float32", "float16"] = "float16" if half else "float32"
        self.contract = InputContract(device=str(self.device), compute_dtype=dtype, tensor_dtype=dtype)
        self._lock = threading.Lock()

    def infer(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) RGB -> float32 (B, N, 5+nc) on the backend's device.

        Also takes a normalised (0..1) RGB tensor already on the device in the model's dtype
        (``contract.tensor_dtype``; the CUDA preprocessor's output), used as it is: no copy, no
        cast, no ``/255`` (only a memory-format change when it is not in the model's format).
        """
        if isinstance(batch, torch.Tensor):
            check_tensor_batch(batch, self.stride, str(self.device), "float16" if self.half else "float32")
        else:
            check_batch(batch, self.stride)
        with self._lock, torch.inference_mode():
            model = self.model
            if model is None:
                raise RuntimeError("TorchBackend is closed")
            if model.training:
                raise RuntimeError("the model is in training mode; call model.eval() before inference")
            t = batch if isinstance(batch, torch.Tensor) else to_model_input(batch, self.device, self.half)
            # a no-op when t is already in the model's memory format (always, for uint8 input)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            t = t.contiguous(memory_format=fmt)
            pred = model(t)
            return pred.float() if self.half else pred

    def close(self) -> None:
        """Drop the model (and, on CUDA, return its cached memory)."""
        with self._lock:
            self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
