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
    """Detections (n, 6) [x1, y1, x2, y2, score, cls] per frame, exactly as the Detector computes them."""
    from streamdet.pipeline.postprocess import nms, scale_boxes
    from streamdet.pipeline.preprocess import batch_input_shape, preprocess_batch, to_model_input

    stride = int(max(float(s) for s in model.stride))
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = []
    try:
        for k in range(0, len(frames), batch):
            chunk = frames[k : k + batch]
            input_hw = batch_input_shape([f.shape[:2] for f in chunk], img_size, stride)
            x = to_model_input(preprocess_batch(chunk, input_hw), device, False)
            pred = model(x)
            if isinstance(pred, (tuple, list)):
                pred = pred[0]
            dets = nms(pred.float(), conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)
            for det, frame in zip(dets, chunk, strict=True):
                det = det.float()
                det[:, :4] = scale_boxes(input_hw, det[:, :4], frame.shape[:2])
                out.append(det.cpu().numpy().astype(np.float32))
    finally:
        model.train(was_training)
    return out


def validate(model: nn.Module, val: ValSet, img_size: int, device: torch.device, nc: int) -> Any:
    """``streamdet.evaluation.EvalResult`` (map50, map50_95, per class) of ``model`` on ``val``."""
    from streamdet.evaluation import evaluate

    preds = predict(model, val.frames, img_size, device)
    return evaluate(preds, val.boxes, nc)
