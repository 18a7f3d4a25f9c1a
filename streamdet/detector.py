"""Detector: frames in, per-frame detections out — a facade over the daemon's own stages.

The worker, ``streamdet val`` and training validation all run the same
:class:`streamdet.pipeline.stages.Stages` (preprocessor -> backend -> postprocessor), so accuracy
measured by ``val`` is the accuracy the daemon publishes. Frames of any sizes are letterboxed to
one common model-input shape (each keeps the ratio it would get alone), run as one batch, and the
boxes are mapped back to each frame's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamdet.pipeline.settings import InferenceOptions, NmsSettings
from streamdet.pipeline.stages import Stages, build_stages
from streamdet.pipeline.types import Image


class Detector:
    """YOLOv5 detector over batches of BGR uint8 frames (or :class:`~streamdet.pipeline.types.Image`).

    Args:
        weights: path of an Ultralytics YOLOv5 ``.pt`` checkpoint (loaded safely).
        device: ``"cpu"`` or ``"cuda:N"``.
        img_size: long side of the model input (a multiple of the model's largest stride).
        half: run in FP16 (CUDA only).
        conf_thres, iou_thres, max_det, classes: NMS settings (official semantics).
        backend: ``"torch"`` (default), ``"onnxruntime"``, ``"openvino"`` or ``"auto"``.
        threads: intra-op inference threads (None: the backend's default).
        cache_dir: where ONNX exports are cached (onnxruntime/openvino).

    The keywords make one :class:`~streamdet.pipeline.settings.InferenceOptions` (``options``);
    :meth:`from_options` takes one whole.
    """

    def __init__(
        self,
        weights: str | Path,
        device: str = "cpu",
        img_size: int = 640,
        half: bool = False,
        conf_thres: float = 0.25,
        iou_thres: float = 0.45,
        max_det: int = 300,
        classes: Sequence[int] | None = None,
        backend: str = "torch",
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.options = InferenceOptions(
            weights, device=device, img_size=img_size, half=half, backend=backend, threads=threads,
            cache_dir=cache_dir, nms=NmsSettings.of(conf_thres, iou_thres, classes, max_det),
        )
        self.stages: Stages = build_stages(self.options)

    @classmethod
    def from_options(cls, options: InferenceOptions) -> Detector:
        """A Detector as ``options`` say (what the CLI, ``val`` and the tools build)."""
        self = cls.__new__(cls)
        self.options = options
        self.stages = build_stages(options)
        return self

    @classmethod
    def from_model(cls, model: Any, options: InferenceOptions) -> Detector:
        """A Detector over an in-memory streamdet YOLOv5 module (training validation), torch backend;
        ``options.weights`` is not read."""
        self = cls.__new__(cls)
        self.options = options
        self.stages = build_stages(options, model=model)
        return self

    @property
    def names(self) -> list[str]:
        """Class names, index = class id."""
        return self.stages.names

    @property
    def backend(self) -> str:
        """Name of the inference backend in use."""
        return str(self.stages.backend.name)

    @property
    def stride(self) -> int:
        return self.stages.stride

    @property
    def img_size(self) -> int:
        return self.stages.img_size

    def input_shape(self, frames: Sequence[np.ndarray | Image]) -> tuple[int, int]:
        """The (H, W) model input the batch of ``frames`` is letterboxed into."""
        return self.stages.input_shape([_as_image(f, i).hw for i, f in enumerate(frames)])

    def __call__(self, frames: Sequence[np.ndarray | Image]) -> list[np.ndarray]:
        """Detect objects; returns one float32 array (n, 6) [x1, y1, x2, y2, score, class] per frame."""
        return self.stages([_as_image(f, i) for i, f in enumerate(frames)])

    def warmup(self, shapes: Sequence[tuple[int, int]], max_batch: int) -> None:
        """Run dummy batches of every size up to ``max_batch`` so the first real frames are not slow."""
        self.stages.warmup(shapes, max_batch)

    def close(self) -> None:
        """Release the backend (sessions, threads)."""
        self.stages.close()


def _as_image(frame: np.ndarray | Image, i: int) -> Image:
    if isinstance(frame, Image):
        return frame
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        desc = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame {i}: expected an HxWx3 uint8 BGR array, got {desc}")
    return Image.bgr(frame)
