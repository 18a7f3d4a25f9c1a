"""mAP of an in-memory model on a validation set, through the daemon's own letterbox and NMS."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from streamdet.training.data import ValSet


@torch.no_grad()
def predict(
    model: nn.Module,
    frames: list[np.ndarray],
    img_size: int,
    device: torch.device,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    batch: int = 8,
) -> list[np.ndarray]:
    """Detections (n, 6) [x1, y1, x2, y2, score, cls] per frame, through the Detector's own stages."""
    from streamdet.detect import batched
    from streamdet.detector import Detector
    from streamdet.pipeline.settings import InferenceOptions, NmsSettings

    was_training = model.training
    model.eval()
    try:
        options = InferenceOptions("", device=str(device), img_size=img_size, backend="torch",
                                   nms=NmsSettings.of(conf_thres, iou_thres, max_det=max_det))
        detector = Detector.from_model(model, options)
        out: list[np.ndarray] = []
        for chunk in batched(frames, batch):
            out.extend(detector(chunk))
    finally:
        model.train(was_training)
    return out


def validate(model: nn.Module, val: ValSet, img_size: int, device: torch.device, nc: int) -> Any:
    """``streamdet.evaluation.EvalResult`` (map50, map50_95, per class) of ``model`` on ``val``."""
    from streamdet.evaluation import evaluate

    preds = predict(model, val.frames, img_size, device)
    return evaluate(preds, val.boxes, nc)
