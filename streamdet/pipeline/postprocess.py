"""Postprocessing: official-semantics NMS (CPU and CUDA), box rescaling, and wire records.

NMS follows YOLOv5's ``non_max_suppression`` (multi_label=False, no masks, no time limit):
``torchvision.ops.nms`` when torchvision is importable, else :func:`batched_greedy_nms`, a
blocked, vectorised greedy NMS with the same decisions as torchvision's kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch

from streamdet.pipeline.transform import clip_boxes

__all__ = [
    "Postprocessor",
    "batched_greedy_nms",
    "clip_boxes",
    "detection_records",
    "nms",
    "scale_boxes",
    "xywh2xyxy",
]

MAX_WH = 7680  # class offset (pixels) that makes one NMS pass per-class
MAX_NMS = 30000  # most candidates per image passed to NMS

_CPU_BLOCK = 256  # candidates per block: small blocks do less wasted IoU work on CPU
_GPU_BLOCK = 1024  # fewer, larger blocks (fewer host syncs) on accelerators

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
NmsFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@functools.lru_cache(maxsize=1)
def _torchvision_nms() -> NmsFn | None:
    """torchvision.ops.nms if torchvision imports cleanly, else None (looked up once)."""
    try:
        from torchvision.ops import nms as tv_nms
    except Exception:  # ImportError, or a torchvision built against another torch
        return None
    return tv_nms


def _strict_threshold(thr: float, dtype: torch.dtype) -> float:
    """Largest value of dtype <= thr, so that ``x > result`` in dtype equals ``double(x) > thr``.

    torchvision compares the float IoU with a double threshold; torch would round the Python
    threshold to float32 first, which differs when thr rounds up (e.g. 0.1 -> 0.100000001).
    """
    if dtype == torch.float64:
        return float(thr)
    t = np.float32(thr)
    if float(t) > thr:
        t = np.nextafter(t, np.float32(-np.inf))
    return float(t)


def _overlaps(a: torch.Tensor, area_a: torch.Tensor, b: torch.Tensor, area_b: torch.Tensor, thr: float) -> torch.Tensor:
    """(len(a), len(b)) bool: IoU > thr, computed like torchvision's kernel (0/0 -> not > thr)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter) > thr


def batched_greedy_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_thres: float, *, max_keep: int | None = None
) -> torch.Tensor:
    """Greedy NMS with ``torchvision.ops.nms`` semantics; int64 keep indices by decreasing score.

    Candidates are visited in blocks (in score order): a block is first cleared against every box
    already kept, then resolved internally from its upper-triangular overlap matrix by fixed-point
    iteration (keep[j] = no kept i < j overlaps j; converges to the unique greedy answer). Memory
    is O(block^2 + block * kept), so 30000 candidates are fine, and there is no per-box Python loop.
    ``max_keep`` stops once that many boxes are kept (the result equals a truncated full run).
    """
    dev = boxes.device
    n = boxes.shape[0]
    empty = torch.empty(0, dtype=torch.int64, device=dev)
    if n == 0 or (max_keep is not None and max_keep <= 0):
        return empty
    work = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].to(work)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    thr = _strict_threshold(iou_thres, work)
    block = _CPU_BLOCK if dev.type == "cpu" else _GPU_BLOCK
    limit = n if max_keep is None else min(max_keep, n)

    kept = empty  # positions in score order
    for start in range(0, n, block):
        pos = torch.arange(start, min(start + block, n), device=dev)
        for k0 in range(0, kept.numel(), block):
            if pos.numel() == 0:
                break
            kc = kept[k0 : k0 + block]
            pos = pos[~_overlaps(b[kc], area[kc], b[pos], area[pos], thr).any(0)]
        if pos.numel() == 0:
            continue
        bp, ap = b[pos], area[pos]
        over = _overlaps(bp, ap, bp, ap, thr).triu_(1)  # over[i, j]: earlier i would suppress j
        keep = torch.ones(pos.numel(), dtype=torch.bool, device=dev)
        while True:
            new = ~(over & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        kept = torch.cat((kept, pos[keep]))
        if kept.numel() >= limit:
            break
    return order[kept[:limit]]


def xywh2xyxy(x: ArrayOrTensor) -> ArrayOrTensor:
    """[cx, cy, w, h] -> [x1, y1, x2, y2] (x1 = cx - w/2, ...); new array/tensor, same type."""
    y = x.clone() if isinstance(x, torch.Tensor) else np.copy(x)
    half = x[..., 2:4] / 2
    y[..., 0:2] = x[..., 0:2] - half
    y[..., 2:4] = x[..., 0:2] + half
    return y


def _check_pred(pred: torch.Tensor | Sequence[torch.Tensor], conf_thres: float, iou_thres: float) -> torch.Tensor:
    """The (B, N, 5+nc) prediction tensor (first item of a tuple); clear errors for bad input."""
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"pred must be a tensor or a (tensor, ...) tuple, got {type(pred).__name__}")
    if not 0 <= conf_thres <= 1:
        raise ValueError(f"conf_thres must be in [0, 1], got {conf_thres}")
    if not 0 <= iou_thres <= 1:
        raise ValueError(f"iou_thres must be in [0, 1], got {iou_thres}")
    if pred.ndim != 3 or pred.shape[2] < 6:
        raise ValueError(f"pred must be (B, N, 5+nc) with nc >= 1, got {tuple(pred.shape)}")
    return pred


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
    pred = _check_pred(pred, conf_thres, iou_thres)
    work = torch.float64 if pred.dtype == torch.float64 else torch.float32
    tv_nms = _torchvision_nms()
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
            det = det[torch.sort(det[:, 4], descending=True, stable=True).indices[:MAX_NMS]]
            boxes = det[:, :4] if agnostic else det[:, :4] + det[:, 5:6] * MAX_WH
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

    NMS (official semantics, see :func:`nms`) on the whole batch, then each frame's
    :class:`~streamdet.pipeline.transform.Transform` inverse (letterbox and the decoder's
    downscale undone in one step), then one copy to host memory per frame. Predictions on a
    GPU take the whole-batch path (:func:`~streamdet.pipeline.batch_nms.nms_packed`, one device-to-host copy per batch);
    ``batched=True`` uses it on CPU too (same output).
    """

    def __init__(self, conf_thres: float = 0.25, iou_thres: float = 0.45, classes: Sequence[int] | None = None,
                 max_det: int = 300, batched: bool = False) -> None:
        self.batched = batched  # whole-batch NMS on CPU too (always used for predictions on a GPU)
        self.conf_thres = conf_thres
        self.iou_thres = iou_thres
        self.classes = list(classes) if classes is not None else None
        self.max_det = max_det

    def __call__(self, pred: torch.Tensor, transforms: Sequence[Any]) -> list[np.ndarray]:
        """(B, N, 5+nc) predictions and B transforms -> B float32 arrays (n, 6) [x1, y1, x2, y2, score, cls]."""
        if pred.shape[0] != len(transforms):
            raise ValueError(f"{pred.shape[0]} predictions but {len(transforms)} transforms")
        # One pass over the whole batch keeps only rows that NMS's own first filter (obj > conf,
        # in the same precision) would keep: the same detections, far fewer per-image tensor ops.
        if pred.device.type != "cpu" or self.batched:
            return self._batched(pred, transforms)
        work = torch.float64 if pred.dtype == torch.float64 else torch.float32
        keep = pred[..., 4].to(work) > self.conf_thres
        out = []
        for i, transform in enumerate(transforms):
            (det,) = nms(pred[i][keep[i]][None], conf_thres=self.conf_thres, iou_thres=self.iou_thres,
                         classes=self.classes, max_det=self.max_det)
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
        from streamdet.pipeline.batch_nms import nms_packed  # lazy: batch_nms imports this module

        det, img = nms_packed(pred, conf_thres=self.conf_thres, iou_thres=self.iou_thres,
                              classes=self.classes, max_det=self.max_det)
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


def detection_records(det: np.ndarray, names: Sequence[str] | Mapping[int, str]) -> list[dict[str, Any]]:
    """(n, 6) [x1, y1, x2, y2, conf, cls] -> wire dicts with compact floats (boxes 2 dp, score 4 dp).

    The label is names[class_id], or str(class_id) when the id is out of range.
    """
    rows = np.asarray(det, dtype=np.float64).reshape(-1, 6).tolist()
    records = []
    for x1, y1, x2, y2, score, cls in rows:
        class_id = int(cls)
        if isinstance(names, Mapping):
            label = names.get(class_id, str(class_id))
        else:
            label = names[class_id] if 0 <= class_id < len(names) else str(class_id)
        records.append(
            {
                # + 0.0 turns -0.0 into 0.0 so the JSON stays "0.0"
                "box": [round(x1, 2) + 0.0, round(y1, 2) + 0.0, round(x2, 2) + 0.0, round(y2, 2) + 0.0],
                "score": round(score, 4) + 0.0,
                "class_id": class_id,
                "label": str(label),
            }
        )
    return records
