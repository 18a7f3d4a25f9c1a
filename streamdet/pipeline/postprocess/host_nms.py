"""Per-image NMS of float32 predictions on the host, in numpy: the CPU worker's fast path.

The same decisions as :func:`~streamdet.pipeline.postprocess.postprocessor.nms` (YOLOv5's
semantics, see there) with the same float32 arithmetic in the same order, so the output is the
same to the bit (``tests/pipeline/postprocess/test_host_nms.py`` compares them). Why a second
implementation: an image has a few dozen candidates, and there the torch path's cost is its
per-operation overhead (about forty small tensor operations), not arithmetic; numpy's is a few
times lower. More than :data:`HOST_NMS_MAX` candidates go to the blocked torch kernel instead of
an n x n overlap matrix.
"""

from __future__ import annotations

import numpy as np
import torch

from streamdet.pipeline.postprocess import nms_primitives as prim
from streamdet.pipeline.settings import NmsSettings

__all__ = ["HOST_NMS_MAX", "host_nms"]

HOST_NMS_MAX = 1024  # candidates (after the score filter) resolved with one n x n matrix here


def host_nms(x: np.ndarray, settings: NmsSettings) -> np.ndarray:
    """One image's float32 rows (m, 5+nc) [cx, cy, w, h, obj, cls...] -> (n, 6) float32
    [x1, y1, x2, y2, conf, cls] in model-input pixels, by decreasing confidence."""
    s = settings
    x = x[x[:, 4] > s.conf_thres]  # float32 against a weak Python float: compared in float32, as torch does
    cls_conf = x[:, 5:] * x[:, 4:5]
    j = cls_conf.argmax(axis=1) if len(x) else np.zeros(0, np.intp)  # the first max, as torch's max(1)
    conf = cls_conf[np.arange(len(x)), j]
    det = np.empty((len(x), 6), np.float32)
    half = x[:, 2:4] / 2
    det[:, 0:2] = x[:, 0:2] - half
    det[:, 2:4] = x[:, 0:2] + half
    det[:, 4] = conf
    det[:, 5] = j
    det = det[conf > s.conf_thres]
    if s.classes is not None:
        det = det[np.isin(det[:, 5], np.asarray(s.classes, np.float32))]
    if not len(det):
        return det
    det = det[np.argsort(-det[:, 4], kind="stable")[: prim.MAX_NMS]]
    boxes = det[:, :4] if s.agnostic else det[:, :4] + det[:, 5:6] * np.float32(prim.MAX_WH)
    if len(det) > HOST_NMS_MAX:
        keep = prim.batched_greedy_nms(torch.from_numpy(np.ascontiguousarray(boxes)), torch.from_numpy(det[:, 4]),
                                       s.iou_thres, max_keep=s.max_det).numpy()
    else:
        keep = _greedy(boxes, s.iou_thres)[: s.max_det]
    return det[keep]


def _greedy(boxes: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy NMS of float32 boxes already in score order: the indices kept, in order.

    Torchvision's test (IoU > threshold, the threshold as torchvision compares it) on the whole
    upper-triangular overlap matrix, resolved by the torch kernel's fixed-point iteration
    (keep[j] = no kept i < j overlaps j).
    """
    x1, y1, x2, y2 = np.ascontiguousarray(boxes.T)  # one coordinate at a time: contiguous (n, n) arrays
    area = (x2 - x1) * (y2 - y1)
    zero = np.float32(0)
    w = np.minimum(x2[:, None], x2[None, :])
    w -= np.maximum(x1[:, None], x1[None, :])
    h = np.minimum(y2[:, None], y2[None, :])
    h -= np.maximum(y1[:, None], y1[None, :])
    inter = np.maximum(w, zero, out=w)
    inter *= np.maximum(h, zero, out=h)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0/0 is NaN: not an overlap, as in torchvision
        over = inter / (area[:, None] + area[None, :] - inter) > np.float32(prim.strict_threshold(iou_thres,
                                                                                                   torch.float32))
    over = np.triu(over, 1)
    keep = np.ones(len(boxes), bool)
    while True:
        new = ~(over & keep[:, None]).any(axis=0)
        if np.array_equal(new, keep):
            return new.nonzero()[0]
        keep = new
