"""The onnxruntime backend: the cached ONNX export of our YOLOv5 (:mod:`.onnx_export`) in an ORT session.

CPUExecutionProvider, or the CUDA provider first when the device is ``cuda:N`` and the installed
onnxruntime has it. The intra-op pool gets ``threads`` threads, inter-op 1 (the graph is a
chain), and thread spinning is off (``session.intra_op.allow_spinning = 0``): a spinning idle
pool would burn the cores the decoders need between batches, for a few ms of latency at most.
The graph takes uint8 and normalises inside, so ``infer`` passes the caller's buffer unchanged.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from streamdet.pipeline.backends import InputContract, check_batch, check_device
from streamdet.pipeline.backends.onnx_export import load_verified


class OnnxRuntimeBackend:
    """YOLOv5 in onnxruntime. ``half`` (CUDA only) runs an FP16 export."""

    name = "onnxruntime"

    def __init__(
        self,
        weights: str | Path,
        *,
        device: str = "cpu",
        half: bool = False,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        check_device(device, half)
        self.device = torch.device(device)
        self.providers = self._providers(self.device)
        self.threads = threads

        prepared = load_verified(
            weights, self._open, _run, what="onnxruntime", half=half, cache_dir=cache_dir,
        )
        self._session: ort.InferenceSession | None = prepared.session
        self.onnx_path: Path = prepared.path
        self.exported: bool = prepared.exported  # False: the cached export was reused
        self.names: list[str] = prepared.names
        self.stride: int = prepared.stride
        self.contract = InputContract(device=str(self.device), compute_dtype="float16" if half else "float32")
        self._lock = threading.Lock()

    @staticmethod
    def _providers(device: torch.device) -> list[str | tuple[str, dict[str, object]]]:
        if device.type == "cpu":
            return ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"device {device} needs onnxruntime's CUDAExecutionProvider, which this onnxruntime "
                             f"build lacks (install onnxruntime-gpu); available: {ort.get_available_providers()}")
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]

    def _open(self, path: Path) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.threads is not None:
            opts.intra_op_num_threads = int(self.threads)
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only
        return ort.InferenceSession(str(path), sess_options=opts, providers=self.providers)

    def infer(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, H, W) RGB -> float32 (B, N, 5+nc) (on the backend's device)."""
        check_batch(batch, self.stride)
        session = self._session
        if session is None:
            raise RuntimeError("OnnxRuntimeBackend is closed")
        pred = torch.from_numpy(_run(session, batch))
        return pred if self.device.type == "cpu" else pred.to(self.device)

    def close(self) -> None:
        """Drop the session (its memory is freed when no ``infer`` still holds it)."""
        with self._lock:
            self._session = None


def _run(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """One session run (``InferenceSession.run`` is thread-safe); the prediction as float32."""
    (pred,) = session.run(["pred"], {"images": batch})
    return np.asarray(pred, dtype=np.float32)
