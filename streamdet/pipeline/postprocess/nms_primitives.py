"""NMS primitives shared by the per-image NMS (:mod:`~streamdet.pipeline.postprocess.postprocessor`) and the
whole-batch NMS (:mod:`~streamdet.pipeline.postprocess.batch_nms`): constants, the torchvision-exact overlap
test and threshold, the blocked greedy kernel, box format and input checks.

Both NMS paths import this module; neither imports the other's internals.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch

__all__ = [
    "CPU_BLOCK",
    "GPU_BLOCK",
    "MAX_NMS",
    "MAX_WH",
    "batched_greedy_nms",
    "check_pred",
    "overlaps",
    "strict_threshold",
    "torchvision_nms",
    "xywh2xyxy",
]

MAX_WH = 7680  # class offset (pixels) that makes one NMS pass per-class
MAX_NMS = 30000  # most candidates per image passed to NMS

CPU_BLOCK = 256  # candidates per block: small blocks do less wasted IoU work on CPU
GPU_BLOCK = 1024  # fewer, larger blocks (fewer host syncs) on accelerators

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
NmsFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


@functools.lru_cache(maxsize=1)
def torchvision_nms() -> NmsFn | None:
    """torchvision.ops.nms if torchvision imports cleanly, else None (looked up once)."""
    try:
        from torchvision.ops import nms as tv_nms
    except Exception:  # ImportError, or a torchvision built against another torch
        return None
    return tv_nms


def strict_threshold(thr: float, dtype: torch.dtype) -> float:
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


def overlaps(a: torch.Tensor, area_a: torch.Tensor, b: torch.Tensor, area_b: torch.Tensor, thr: float) -> torch.Tensor:
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
    thr = strict_threshold(iou_thres, work)
    block = CPU_BLOCK if dev.type == "cpu" else GPU_BLOCK
    limit = n if max_keep is None else min(max_keep, n)

    kept = empty  # positions in score order
    for start in range(0, n, block):
        pos = torch.arange(start, min(start + block, n), device=dev)
        for k0 in range(0, kept.numel(), block):
            if pos.numel() == 0:
                break
            kc = kept[k0 : k0 + block]
            pos = pos[~overlaps(b[kc], area[kc], b[pos], area[pos], thr).any(0)]
        if pos.numel() == 0:
            continue
        bp, ap = b[pos], area[pos]
        over = overlaps(bp, ap, bp, ap, thr).triu_(1)  # over[i, j]: earlier i would suppress j
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


def check_pred(pred: torch.Tensor | Sequence[torch.Tensor], conf_thres: float, iou_thres: float) -> torch.Tensor:
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
