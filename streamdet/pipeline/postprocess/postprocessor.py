"""Postprocessing: official-semantics NMS (CPU and CUDA) and box rescaling (the wire records: streamdet.wire).

NMS follows YOLOv5's ``non_max_suppression`` (multi_label=False, no masks, no time limit):
``torchvision.ops.nms`` when torchvision is importable, else :func:`batched_greedy_nms`, a
blocked, vectorised greedy NMS with the same decisions as torchvision's kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from streamdet.pipeline.postprocess import nms_primitives as prim
from streamdet.pipeline.postprocess.batch_nms import nms_packed
from streamdet.pipeline.postprocess.host_nms import host_nms
from streamdet.pipeline.postprocess.nms_primitives import (
    ArrayOrTensor,
    batched_greedy_nms,
    check_pred,
    torchvision_nms,
    xywh2xyxy,
)
from streamdet.pipeline.settings import NmsSettings
from streamdet.pipeline.types import clip_boxes

__all__ = [
    "Postprocessor",
    "batched_greedy_nms",
    "clip_boxes",
    "nms",
    "scale_boxes",
    "xywh2xyxy",
]

def nms(
    pred: torch.Tensor | Sequence[torch.Tensor],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_det: int = 300,
) -> list[torch.Tensor]:
    """YOLOv5 NMS on (B, N, 5+nc) [cx, cy, w, h, obj, cls...] -> per image (n, 6) [x1, y1, x2, y2, conf, cls].

    Official semantics: obj > conf_thres; conf = cls*obj, best class (first max); conf > conf_thres;
    classes filter; sort by conf (stable), keep MAX_NMS; per-class via a MAX_WH*cls offset (unless
    agnostic); greedy IoU > iou_thres; first max_det. Math in float32 (float64 for float64 input),
    so fp16 predictions neither overflow with the class offset nor round boxes; the output has
    pred's dtype and device. A model's (pred, ...) tuple output is accepted as in the official code.
    """
    pred = check_pred(pred, conf_thres, iou_thres)
    work = torch.float64 if pred.dtype == torch.float64 else torch.float32
    tv_nms = torchvision_nms()
    cls_filter = None if classes is None else torch.as_tensor(list(classes), dtype=work, device=pred.device)

    output = []
    for x in pred:
        x = x[x[:, 4].to(work) > conf_thres].to(work)
        cls_conf = x[:, 5:] * x[:, 4:5]
        conf, j = cls_conf.max(1, keepdim=True)
        det = torch.cat((xywh2xyxy(x[:, :4]), conf, j.to(work)), 1)[conf[:, 0] > conf_thres]
        if cls_filter is not None:
            det = det[(det[:, 5:6] == cls_filter).any(1)]
        if det.shape[0]:
            det = det[torch.sort(det[:, 4], descending=True, stable=True).indices[:prim.MAX_NMS]]
            boxes = det[:, :4] if agnostic else det[:, :4] + det[:, 5:6] * prim.MAX_WH
            if tv_nms is not None:
                keep = tv_nms(boxes, det[:, 4], iou_thres)[:max_det]
            else:
                keep = batched_greedy_nms(boxes, det[:, 4], iou_thres, max_keep=max_det)
            det = det[keep]
        output.append(det.to(pred.dtype))
    return output


def scale_boxes(
    img1_shape: Sequence[int],
    boxes: ArrayOrTensor,
    img0_shape: Sequence[int],
    ratio_pad: tuple[Any, Sequence[float]] | None = None,
) -> ArrayOrTensor:
    """Map xyxy boxes in place from model-input pixels (img1_shape) back to the source (img0_shape).

    Official semantics: without ratio_pad, gain = min(h1/h0, w1/w0) and pad = ((w1 - w0*gain)/2,
    (h1 - h0*gain)/2) are recomputed from the shapes (not letterbox's rounded borders); then
    in-place subtraction and division in the boxes' dtype, then clipping. ratio_pad is
    ((r, r), (pad_w, pad_h)) as letterbox returns it, or (r, (pad_w, pad_h)) from letterbox_params.
    """
    gain: Any  # a float, or ratio_pad's scalar as given (its type decides the division's precision)
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        pad_w = (img1_shape[1] - img0_shape[1] * gain) / 2
        pad_h = (img1_shape[0] - img0_shape[0] * gain) / 2
    else:
        ratio, (pad_w, pad_h) = ratio_pad
        gain = ratio if np.isscalar(ratio) else ratio[0]
    boxes[..., [0, 2]] -= pad_w
    boxes[..., [1, 3]] -= pad_h
    boxes[..., :4] /= gain
    return clip_boxes(boxes, img0_shape)


class Postprocessor:
    """Stage 5: raw predictions of a batch -> per-frame detections in each frame's source pixels.

    NMS (official semantics, see :func:`nms`; float32 predictions on the CPU through its numpy twin,
    :func:`~streamdet.pipeline.postprocess.host_nms.host_nms`) on the whole batch, then each frame's
    :class:`~streamdet.pipeline.types.Transform` inverse (letterbox and the decoder's
    downscale undone in one step), then one copy to host memory per frame. Predictions on a
    GPU take the whole-batch path (:func:`~streamdet.pipeline.postprocess.batch_nms.nms_packed`,
    one device-to-host copy per batch);
    ``batched=True`` uses it on CPU too (same output).
    """

    def __init__(self, settings: NmsSettings | None = None, batched: bool = False) -> None:
        self.batched = batched  # whole-batch NMS on CPU too (always used for predictions on a GPU)
        #: the NMS settings, replaced whole (never edited) when they change
        self.settings = settings if settings is not None else NmsSettings()

    @property
    def classes(self) -> list[int] | None:
        return list(self.settings.classes) if self.settings.classes is not None else None

    def __call__(self, pred: torch.Tensor, transforms: Sequence[Any]) -> list[np.ndarray]:
        """(B, N, 5+nc) predictions and B transforms -> B float32 arrays (n, 6) [x1, y1, x2, y2, score, cls]."""
        if pred.shape[0] != len(transforms):
            raise ValueError(f"{pred.shape[0]} predictions but {len(transforms)} transforms")
        # One pass over the whole batch keeps only rows that NMS's own first filter (obj > conf,
        # in the same precision) would keep: the same detections, far fewer per-image tensor ops.
        if pred.device.type != "cpu" or self.batched:
            return self._batched(pred, transforms)
        s = self.settings  # one snapshot for the whole batch
        if pred.dtype == torch.float32:  # numpy per image: the same output, a fraction of the overhead
            host = check_pred(pred, s.conf_thres, s.iou_thres).detach().numpy()
            kept = host[..., 4] > s.conf_thres
            found = [host_nms(host[i][kept[i]], s) for i in range(len(transforms))]
            for transform, boxes in zip(transforms, found, strict=True):
                transform.inverse(boxes[:, :4])  # in place, through the view
            return found
        work = torch.float64 if pred.dtype == torch.float64 else torch.float32
        keep = pred[..., 4].to(work) > s.conf_thres
        out = []
        for i, transform in enumerate(transforms):
            (det,) = nms(pred[i][keep[i]][None], conf_thres=s.conf_thres, iou_thres=s.iou_thres,
                         classes=s.classes, agnostic=s.agnostic, max_det=s.max_det)
            det = det.float()
            transform.inverse(det[:, :4])
            out.append(det.cpu().numpy().astype(np.float32, copy=False))
        return out

    def _batched(self, pred: torch.Tensor, transforms: Sequence[Any]) -> list[np.ndarray]:
        """Whole-batch NMS on pred's device, ONE device-to-host copy, then split and inverse on the host."""
        if pred.shape[0] != len(transforms):
            raise ValueError(f"{pred.shape[0]} predictions but {len(transforms)} transforms")
        return self.unpack(self.packed(pred).cpu(), transforms)  # the one copy

    def packed(self, pred: torch.Tensor) -> torch.Tensor:
        """Whole-batch NMS on pred's device: (k, 7) float32 [x1, y1, x2, y2, score, cls, image] in model
        input pixels, grouped by image in order (what :meth:`unpack` takes once on the host)."""
        s = self.settings
        det, img = nms_packed(pred, conf_thres=s.conf_thres, iou_thres=s.iou_thres, classes=s.classes,
                              agnostic=s.agnostic, max_det=s.max_det)
        return torch.cat((det.float(), img[:, None].float()), 1)  # img < 2**24: exact in float32

    def unpack(self, packed: torch.Tensor, transforms: Sequence[Any]) -> list[np.ndarray]:
        """:meth:`packed`'s rows (on the CPU) split per image and mapped to source pixels.

        The inverse runs on CPU tensors exactly as the per-frame path does, so the result is the
        same bit for bit whatever the device (CUDA's scalar division would differ by an ulp).
        """
        counts = torch.bincount(packed[:, 6].long(), minlength=len(transforms)).tolist()
        if len(counts) != len(transforms):
            raise ValueError(f"detections of {len(counts)} images but {len(transforms)} transforms")
        out = []
        for rows, transform in zip(packed[:, :6].split(counts), transforms, strict=True):
            rows = rows.clone()
            transform.inverse(rows[:, :4])
            out.append(rows.numpy())
        return out
