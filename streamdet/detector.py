"""Detector: BGR frames in, per-frame detections out.

The one inference path of streamdet. The daemon's worker and `streamdet val` both call it, so
accuracy measured by `val` is the accuracy the daemon publishes. Frames of any sizes are
letterboxed to one common model-input shape (each keeps the ratio it would get alone), run as one
batch, and the boxes are mapped back to each frame's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from streamdet.model.checkpoint import load_model
from streamdet.pipeline.postprocess import nms, scale_boxes
from streamdet.pipeline.preprocess import batch_input_shape, preprocess_batch, to_model_input


class Detector:
    """YOLOv5 detector over batches of BGR uint8 frames.

    Args:
        weights: path of an Ultralytics YOLOv5 ``.pt`` checkpoint (loaded safely).
        device: torch device string, ``"cpu"`` or ``"cuda:N"``.
        img_size: long side of the model input (a multiple of the model's largest stride).
        half: run in FP16 (CUDA only).
        conf_thres, iou_thres, max_det, classes: NMS settings (official semantics).
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
    ) -> None:
        self.device = torch.device(device)
        if half and self.device.type == "cpu":
            raise ValueError("half=True needs a CUDA device; FP16 convolutions are not supported on CPU")
        self.model = load_model(weights, device=str(self.device), half=half, fuse=True)
        self.half = half
        self.stride = int(max(float(s) for s in self.model.stride))
        if img_size % self.stride:
            raise ValueError(f"img_size {img_size} is not a multiple of the model stride {self.stride}")
        self.img_size = img_size
        self.conf_thres = conf_thres
        self.iou_thres = iou_thres
        self.max_det = max_det
        self.classes = list(classes) if classes is not None else None

    @property
    def names(self) -> list[str]:
        """Class names, index = class id."""
        return list(self.model.names)

    def input_shape(self, frames: Sequence[np.ndarray]) -> tuple[int, int]:
        """The (H, W) model input the batch of ``frames`` is letterboxed into."""
        return batch_input_shape([f.shape[:2] for f in frames], self.img_size, self.stride)

    @torch.inference_mode()
    def __call__(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Detect objects; returns one float32 array (n, 6) [x1, y1, x2, y2, score, class] per frame."""
        if not frames:
            return []
        for i, frame in enumerate(frames):
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frame {i}: expected an HxWx3 uint8 BGR array, got {frame.dtype} {frame.shape}")
        input_hw = self.input_shape(frames)
        batch = to_model_input(preprocess_batch(list(frames), input_hw), self.device, self.half)
        pred = self.model(batch)
        dets = nms(
            pred,
            conf_thres=self.conf_thres,
            iou_thres=self.iou_thres,
            classes=self.classes,
            max_det=self.max_det,
        )
        out = []
        for det, frame in zip(dets, frames, strict=True):
            det = det.float()
            det[:, :4] = scale_boxes(input_hw, det[:, :4], frame.shape[:2])
            out.append(det.cpu().numpy().astype(np.float32, copy=False))
        return out

    def warmup(self, shapes: Sequence[tuple[int, int]], max_batch: int) -> None:
        """Run dummy batches of every size up to ``max_batch`` so the first real frames are not slow."""
        for b in range(1, max_batch + 1):
            frames = [np.full((h, w, 3), 114, np.uint8) for h, w in (shapes[i % len(shapes)] for i in range(b))]
            self(frames)
