"""The YOLOv5 training loss, written from the published method.

Targets are matched to anchors by width/height ratio (``max(r, 1/r) < anchor_t``) on every level;
each match is assigned to the cell holding the box centre and to the two neighbouring cells whose
shared edge is nearer than half a cell to the centre (the "offset 0.5" rule), which triples the
positives and lets the ``2*sigmoid - 0.5`` centre parameterisation reach them. Box loss is
``1 - CIoU``; objectness is BCE against the detached, non-negative IoU of each positive; class
loss is BCE (one-vs-rest, optional label smoothing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from streamdet.model.yolov5 import YOLOv5

# Per-level objectness weights: small-stride levels have many more negatives, so they weigh more.
OBJ_BALANCE: dict[int, list[float]] = {3: [4.0, 1.0, 0.4], 4: [4.0, 1.0, 0.25, 0.06], 5: [4.0, 1.0, 0.25, 0.06, 0.02]}


@dataclass(frozen=True)
class LossGains:
    """Unscaled loss gains (as in hyp.scratch-low) and matching settings."""

    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.5
    anchor_t: float = 4.0
    label_smoothing: float = 0.0


def bbox_ciou(box1: Tensor, box2: Tensor, eps: float = 1e-7) -> Tensor:
    """Complete IoU of paired boxes given as (..., 4) [cx, cy, w, h]; returns (...,).

    CIoU = IoU - rho^2/c^2 - alpha*v, where rho is the centre distance, c the diagonal of the
    smallest enclosing box and v the aspect-ratio consistency term (alpha is not differentiated).
    """
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.unbind(-1), box2.unbind(-1)
    b1x1, b1x2, b1y1, b1y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2x1, b2x2, b2y1, b2y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1x2, b2x2) - torch.max(b1x1, b2x1)).clamp(0) * (
        torch.min(b1y2, b2y2) - torch.max(b1y1, b2y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1x2, b2x2) - torch.min(b1x1, b2x1)
    ch = torch.max(b1y2, b2y2) - torch.min(b1y1, b2y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (x2 - x1) ** 2 + (y2 - y1) ** 2
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


@dataclass
class LevelTargets:
    """Positives of one level: image, anchor, grid row/col indices, class, box (offset in cell, wh)."""

    b: Tensor
    a: Tensor
    gj: Tensor
    gi: Tensor
    cls: Tensor
    box: Tensor  # (n, 4) [dx, dy, w, h] in grid units, dx/dy relative to cell (gi, gj)
    anchors: Tensor  # (n, 2) matched anchor wh in grid units


def build_targets(
    shapes: list[tuple[int, int]], anchors: Tensor, targets: Tensor, anchor_t: float = 4.0, g: float = 0.5
) -> list[LevelTargets]:
    """Assign ground truth to (level, anchor, cell) positives.

    Args:
        shapes: (ny, nx) of each level.
        anchors: (nl, na, 2) anchor sizes in grid units of their level.
        targets: (nt, 6) [image, class, cx, cy, w, h], box normalised to the model input.
        anchor_t: max allowed ratio between box and anchor side lengths.
        g: neighbour-cell offset (0.5 adds the two nearest neighbour cells).
    """
    device = targets.device
    na = anchors.shape[1]
    nt = targets.shape[0]
    offsets = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]], device=device, dtype=torch.float32) * g
    # (na, nt, 7): every target repeated per anchor, with the anchor index appended.
    ai = torch.arange(na, device=device, dtype=torch.float32).view(na, 1).repeat(1, nt)
    tall = torch.cat((targets.float().unsqueeze(0).repeat(na, 1, 1), ai[..., None]), 2)
    out = []
    for i, (ny, nx) in enumerate(shapes):
        anc = anchors[i].to(device=device, dtype=torch.float32)
        gain = torch.tensor([1, 1, nx, ny, nx, ny, 1], device=device, dtype=torch.float32)
        t = tall * gain
        if nt:
            r = t[..., 4:6] / anc[:, None]
            keep = torch.max(r, 1 / r).max(2)[0] < anchor_t
            t = t[keep]
            gxy = t[:, 2:4]
            gxi = gain[[2, 3]] - gxy
            j, k = ((gxy % 1 < g) & (gxy > 1)).T
            ll, m = ((gxi % 1 < g) & (gxi > 1)).T
            sel = torch.stack((torch.ones_like(j), j, k, ll, m))
            t = t.repeat((5, 1, 1))[sel]
            off = (torch.zeros_like(gxy)[None] + offsets[:, None])[sel]
        else:
            t = tall[0, :0]
            off = torch.zeros((0, 2), device=device)
        b, c = t[:, 0].long(), t[:, 1].long()
        gxy, gwh, a = t[:, 2:4], t[:, 4:6], t[:, 6].long()
        gij = (gxy - off).long()
        gi = gij[:, 0].clamp(0, nx - 1)
        gj = gij[:, 1].clamp(0, ny - 1)
        box = torch.cat((gxy - torch.stack((gi, gj), 1), gwh), 1)
        out.append(LevelTargets(b=b, a=a, gj=gj, gi=gi, cls=c, box=box, anchors=anc[a]))
    return out


class YoloLoss(nn.Module):
    """YOLOv5 loss for a model with a ``detect`` head (anchors in grid units, ``nc``, ``nl``).

    ``forward(preds, targets)`` takes the training-mode raw outputs (list of (B, na, ny, nx, 5+nc))
    and targets (nt, 6) [image, class, cx, cy, w, h] normalised; returns ``(total * B, parts)``
    with ``parts = [box, obj, cls]`` detached, as YOLOv5 reports them.
    """

    anchors: Tensor  # the registered buffer (declared for type checkers)

    def __init__(self, anchors: Tensor, nc: int, img_size: int, gains: LossGains | None = None) -> None:
        super().__init__()
        gains = gains or LossGains()
        nl = anchors.shape[0]
        self.nc = nc
        self.nl = nl
        self.register_buffer("anchors", anchors.detach().clone().float(), persistent=False)
        self.balance = OBJ_BALANCE.get(nl, [4.0, 1.0, 0.4])
        # The usual scaling to the number of levels, classes and image size.
        self.box_gain = gains.box * 3 / nl
        self.cls_gain = gains.cls * nc / 80 * 3 / nl
        self.obj_gain = gains.obj * (img_size / 640) ** 2 * 3 / nl
        self.anchor_t = gains.anchor_t
        eps = gains.label_smoothing
        self.cp, self.cn = 1.0 - 0.5 * eps, 0.5 * eps
        self.bce = nn.BCEWithLogitsLoss()

    @classmethod
    def for_model(cls, model: YOLOv5, img_size: int, gains: LossGains | None = None) -> YoloLoss:
        """Build from a YOLOv5 model (reads ``model.detect.anchors`` and ``model.nc``)."""
        det = model.detect
        return cls(det.anchors.detach().float().cpu(), int(model.nc), img_size, gains).to(det.anchors.device)

    def forward(self, preds: list[Tensor], targets: Tensor) -> tuple[Tensor, Tensor]:
        """Total loss times batch size, and the detached [box, obj, cls] components."""
        device = preds[0].device
        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        lcls = torch.zeros(1, device=device)
        shapes = [(p.shape[2], p.shape[3]) for p in preds]
        level_targets = build_targets(shapes, self.anchors.to(device), targets.to(device), self.anchor_t)
        for i, (p, lt) in enumerate(zip(preds, level_targets, strict=True)):
            tobj = torch.zeros(p.shape[:4], dtype=p.dtype, device=device)
            n = lt.b.shape[0]
            if n:
                ps = p[lt.b, lt.a, lt.gj, lt.gi].float()
                pxy = ps[:, :2].sigmoid() * 2 - 0.5
                pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * lt.anchors
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), lt.box)
                lbox = lbox + (1.0 - iou).mean()
                tobj[lt.b, lt.a, lt.gj, lt.gi] = iou.detach().clamp(0).to(tobj.dtype)
                if self.nc > 1:
                    t = torch.full_like(ps[:, 5:], self.cn)
                    t[torch.arange(n, device=device), lt.cls] = self.cp
                    lcls = lcls + self.bce(ps[:, 5:], t)
            lobj = lobj + self.bce(p[..., 4].float(), tobj.float()) * self.balance[i]
        lbox = lbox * self.box_gain
        lobj = lobj * self.obj_gain
        lcls = lcls * self.cls_gain
        bs = preds[0].shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()
