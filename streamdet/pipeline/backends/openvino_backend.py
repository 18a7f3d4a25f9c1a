"""The OpenVINO backend: the same cached ONNX export (:mod:`.onnx_export`) compiled for the CPU plugin.

Settings: ``INFERENCE_NUM_THREADS = threads``; ``PERFORMANCE_HINT = LATENCY`` with one stream
(the worker runs one synchronous batch at a time, so throughput streams would only split the
threads); ``INFERENCE_PRECISION_HINT = f32`` (on CPUs with bf16/AMX the plugin would otherwise
silently run in bf16, far outside the torch tolerance); ``ENABLE_CPU_PINNING = False`` (the
cores are shared with decoder threads).

Shapes: each input shape gets its own compiled model (the graph reshaped to that static shape),
for the first ``max_static_shapes`` shapes seen. Measured on the development machine (2 cores,
demo yolov5n, batch 4): static 52 ms vs dynamic 57 ms at 256x416, 119 vs 128 ms at 384x640, i.e.
~8% faster, for ~0.4 s of compilation per new shape (the worker's warm-up compiles its batch
sizes). The dynamic-shape model (compiled anyway for the load check) serves every further shape,
so a caller that cycles through many shapes pays neither unbounded memory nor a compile per call.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import torch

from streamdet.pipeline.backends import InputContract, check_batch, device_type
from streamdet.pipeline.backends.onnx_export import load_verified

MAX_STATIC_SHAPES = 8  # shapes that get their own compiled model (each holds its own copy of the weights)


class OpenVinoBackend:
    """YOLOv5 in OpenVINO on the CPU. ``static_shapes=False`` uses the dynamic-shape model only."""

    name = "openvino"

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "cpu",
        half: bool = False,
        threads: int | None = None,
        cache_dir: Path | None = None,
        static_shapes: bool = True,
        max_static_shapes: int = MAX_STATIC_SHAPES,
    ) -> None:
        if device_type(device) != "cpu":
            raise ValueError(f"the openvino backend runs on the CPU only, not {device!r}")
        if half:
            raise ValueError("half=True needs a CUDA device; the openvino backend runs float32 on the CPU")
        self.threads = threads
        self.static_shapes = static_shapes
        self.max_static_shapes = max_static_shapes
        self._core = ov.Core()
        self._lock = threading.Lock()
        self._static: dict[tuple[int, ...], Any] = {}  # shape -> InferRequest of the reshaped model
        self._model: Any = None  # the ov.Model read from the ONNX file (dynamic shapes)

        prepared = load_verified(weights, self._open, self._run_dynamic, what="openvino", cache_dir=cache_dir)
        self._dynamic: Any = prepared.session  # InferRequest of the dynamic-shape model
        self.onnx_path: Path = prepared.path
        self.exported: bool = prepared.exported  # False: the cached export was reused
        self.names: list[str] = prepared.names
        self.stride: int = prepared.stride
        self.contract = InputContract(device="cpu", compute_dtype="float32")
        self._closed = False

    def _config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False,
        }
        if self.threads is not None:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        return cfg

    def _open(self, path: Path) -> Any:
        """Read and compile ``path`` with dynamic shapes; returns an infer request."""
        self._model = None
        model = self._core.read_model(str(path))
        request = self._core.compile_model(model, "CPU", self._config()).create_infer_request()
        self._model = model
        return request

    def _compile_static(self, shape: tuple[int, ...]) -> Any:
        """An infer request of the model reshaped to the static ``shape``."""
        model = self._model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        return self._core.compile_model(model, "CPU", self._config()).create_infer_request()

    @staticmethod
    def _run_dynamic(request: Any, batch: np.ndarray) -> np.ndarray:
        return _run(request, batch)

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request for ``shape``: its static model (compiled on first use while there is room) or the
        dynamic one."""
        request = self._static.get(shape)
        if request is not None:
            return request
        if not self.static_shapes or len(self._static) >= self.max_static_shapes:
            return self._dynamic
        request = self._compile_static(shape)
        self._static[shape] = request
        return request

    @property
    def static_shape_count(self) -> int:
        """How many shapes have their own compiled model."""
        return len(self._static)

    def infer(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, H, W) RGB -> float32 (B, N, 5+nc) on the CPU."""
        check_batch(batch, self.stride)
        with self._lock:  # an InferRequest is not safe for concurrent use
            if self._closed:
                raise RuntimeError("OpenVinoBackend is closed")
            return torch.from_numpy(_run(self._request(tuple(batch.shape)), batch))

    def close(self) -> None:
        """Drop every compiled model."""
        with self._lock:
            self._closed = True
            self._static.clear()
            self._dynamic = None


def _run(request: Any, batch: np.ndarray) -> np.ndarray:
    """Run one batch; the output is copied out of the request's buffer (it is reused by the next call)."""
    result = request.infer({0: batch}, share_inputs=True, share_outputs=False)
    return np.asarray(result[0], dtype=np.float32)
