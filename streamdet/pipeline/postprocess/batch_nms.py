"""Whole-batch NMS: one pass over every image of a batch, identical to per-image :func:`nms`.

For the GPU path (issue 8): the per-image loop of :func:`~streamdet.pipeline.postprocess.postprocessor.nms`
launches a handful of kernels per image and syncs with the host per image; here the filters,
sorts and the greedy kernel run once for the batch, and the result comes back grouped by image,
ready for a single device-to-host copy.

Images are kept apart by a group id (the image index) inside the kernel rather than by a
coordinate offset: an offset of ``image * big`` would round float32 boxes and change IoUs, so
the answer would no longer be exactly the per-image one. For the same reason this path always
uses our kernel, never torchvision (whose ``batched_nms`` separates groups by such offsets);
our kernel makes the same decisions as ``torchvision.ops.nms`` (tests/pipeline/postprocess/test_postprocessor.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from streamdet.pipeline.postprocess import nms_primitives as prim

__all__ = ["grouped_greedy_nms", "nms_batch", "nms_packed"]


def _rank_in_run(groups: torch.Tensor) -> torch.Tensor:
    """Position of each element within its run of equal values (``groups`` sorted)."""
    idx = torch.arange(groups.numel(), device=groups.device)
    new_run = torch.ones_like(groups, dtype=torch.bool)
    new_run[1:] = groups[1:] != groups[:-1]
    run_start = torch.cummax(torch.where(new_run, idx, torch.zeros_like(idx)), 0).values
    return idx - run_start


def grouped_greedy_nms(
    boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_thres: float, *, max_keep: int | None = None
) -> torch.Tensor:
    """Greedy NMS (torchvision semantics) within each group; keep indices ordered by group, then score.

    Equals :func:`~streamdet.pipeline.postprocess.nms_primitives.batched_greedy_nms` run on each group alone
    (with ``max_keep`` per group). Candidates are ordered by (group, decreasing score, index), so
    a block holds few groups and is cleared only against kept boxes of the groups it holds; a
    group stops taking candidates once it has ``max_keep`` boxes.
    """
    dev = boxes.device
    n = boxes.shape[0]
    empty = torch.empty(0, dtype=torch.int64, device=dev)
    if n == 0 or (max_keep is not None and max_keep <= 0):
        return empty
    work = boxes.dtype if boxes.dtype in (torch.float32, torch.float64) else torch.float32
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(groups[order], stable=True).indices]
    b = boxes[order].to(work)
    g = groups[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    thr = prim.strict_threshold(iou_thres, work)
    block = prim.CPU_BLOCK if dev.type == "cpu" else prim.GPU_BLOCK
    n_groups = int(g[-1]) + 1
    limit = n if max_keep is None else max_keep
    count = torch.zeros(n_groups, dtype=torch.int64, device=dev)

    kept = empty  # positions in (group, score) order
    for start in range(0, n, block):
        pos = torch.arange(start, min(start + block, n), device=dev)
        pos = pos[count[g[pos]] < limit]  # groups already full take nothing more
        if pos.numel() == 0:
            continue
        lo, hi = g[pos[0]], g[pos[-1]]
        kg = g[kept]
        near = kept[(kg >= lo) & (kg <= hi)]  # kept boxes of this block's groups
        for k0 in range(0, near.numel(), block):
            if pos.numel() == 0:
                break
            kc = near[k0 : k0 + block]
            hit = prim.overlaps(b[kc], area[kc], b[pos], area[pos], thr) & (g[kc][:, None] == g[pos][None, :])
            pos = pos[~hit.any(0)]
        if pos.numel() == 0:
            continue
        bp, ap, gp = b[pos], area[pos], g[pos]
        over = prim.overlaps(bp, ap, bp, ap, thr).triu_(1) & (gp[:, None] == gp[None, :])
        keep = torch.ones(pos.numel(), dtype=torch.bool, device=dev)
        while True:
            new = ~(over & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
        kept = torch.cat((kept, pos[keep]))
        count += torch.bincount(gp[keep], minlength=n_groups)
    kept = kept[_rank_in_run(g[kept]) < limit]  # a block may overfill a group
    return order[kept]


def nms_packed(
    pred: torch.Tensor | Sequence[torch.Tensor],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_det: int = 300,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~streamdet.pipeline.postprocess.postprocessor.nms` for the whole batch: (dets (M, 6), image (M,) int64).

    Same filters, candidate cap (MAX_NMS per image), class offsets, decisions and order as the
    per-image function; rows are grouped by image, each image's rows in that function's order,
    so a caller can copy them to the host once and split there. On pred's device.
    """
    pred = prim.check_pred(pred, conf_thres, iou_thres)
    work = torch.float64 if pred.dtype == torch.float64 else torch.float32
    hit = pred[..., 4].to(work) > conf_thres
    img = hit.nonzero()[:, 0]  # row-major: image by image, rows in their original order
    x = pred[hit].to(work)
    cls_conf = x[:, 5:] * x[:, 4:5]
    conf, j = cls_conf.max(1, keepdim=True)
    sel = conf[:, 0] > conf_thres
    det, img = torch.cat((prim.xywh2xyxy(x[:, :4]), conf, j.to(work)), 1)[sel], img[sel]
    if classes is not None:
        cls_filter = torch.as_tensor(list(classes), dtype=work, device=pred.device)
        sel = (det[:, 5:6] == cls_filter).any(1)
        det, img = det[sel], img[sel]
    if det.shape[0]:
        # per image: stable by decreasing conf, first MAX_NMS (two stable sorts keep ties in row order)
        order = torch.sort(det[:, 4], descending=True, stable=True).indices
        order = order[torch.sort(img[order], stable=True).indices]
        order = order[_rank_in_run(img[order]) < prim.MAX_NMS]
        det, img = det[order], img[order]
        boxes = det[:, :4] if agnostic else det[:, :4] + det[:, 5:6] * prim.MAX_WH
        keep = grouped_greedy_nms(boxes, det[:, 4], img, iou_thres, max_keep=max_det)
        det, img = det[keep], img[keep]
    return det.to(pred.dtype), img


def nms_batch(
    pred: torch.Tensor | Sequence[torch.Tensor],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: Sequence[int] | None = None,
    agnostic: bool = False,
    max_det: int = 300,
) -> list[torch.Tensor]:
    """:func:`nms_packed` split into one (n, 6) tensor per image, as ``nms`` returns them."""
    pred = prim.check_pred(pred, conf_thres, iou_thres)
    det, img = nms_packed(pred, conf_thres, iou_thres, classes, agnostic, max_det)
    counts = torch.bincount(img, minlength=pred.shape[0]).tolist()
    return list(det.split(counts))
