"""YOLOv5 loss: CIoU values, anchor/cell matching, and loss ordering on hand-built predictions."""

from __future__ import annotations

import math

import pytest
import torch

from streamdet.training.loss import YoloLoss, bbox_ciou, build_targets


def test_ciou_identical_boxes_is_one() -> None:
    b = torch.tensor([[5.0, 7.0, 2.0, 3.0], [0.5, 0.5, 0.1, 0.4]])
    assert torch.allclose(bbox_ciou(b, b), torch.ones(2), atol=1e-5)


def test_ciou_same_aspect_offset_boxes() -> None:
    # [0,0,2,2] vs [1,1,3,3]: IoU 1/7, enclosing 3x3 (c^2 = 18), centre distance^2 = 2, v = 0.
    got = bbox_ciou(torch.tensor([1.0, 1.0, 2.0, 2.0]), torch.tensor([2.0, 2.0, 2.0, 2.0]))
    assert got.item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-5)


def test_ciou_aspect_term() -> None:
    # [0,0,2,2] inside [-1,0,3,2]: IoU 0.5, same centre, aspect term only.
    got = bbox_ciou(torch.tensor([1.0, 1.0, 2.0, 2.0]), torch.tensor([1.0, 1.0, 4.0, 2.0]))
    v = 4 / math.pi**2 * (math.atan(2.0) - math.atan(1.0)) ** 2
    alpha = v / (v - 0.5 + 1)
    assert got.item() == pytest.approx(0.5 - alpha * v, abs=1e-5)


def test_ciou_gradient_flows_to_prediction() -> None:
    p = torch.tensor([1.2, 1.0, 2.0, 2.0], requires_grad=True)
    bbox_ciou(p, torch.tensor([1.0, 1.0, 2.0, 2.0])).backward()
    assert p.grad is not None and p.grad[0] < 0  # moving right (away) lowers CIoU


ANCHORS = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [10.0, 10.0]]])  # one level, grid units


def test_anchor_and_neighbour_cell_matching() -> None:
    # One target on an 8x8 grid at (3.3, 4.7) cells, 1.2 cells wide: anchors 0 and 1 match
    # (ratios 1.2 and 2.5 < 4), anchor 2 does not (8.3). x frac 0.3 < 0.5 adds the left cell, y frac
    # 0.7 > 0.5 adds the cell below.
    t = torch.tensor([[0, 2, 3.3 / 8, 4.7 / 8, 1.2 / 8, 1.2 / 8]])
    (lt,) = build_targets([(8, 8)], ANCHORS, t, anchor_t=4.0)
    got = sorted(zip(lt.a.tolist(), lt.gi.tolist(), lt.gj.tolist(), strict=True))
    want = sorted((a, gi, gj) for a in (0, 1) for gi, gj in ((3, 4), (2, 4), (3, 5)))
    assert got == want
    assert set(lt.cls.tolist()) == {2} and set(lt.b.tolist()) == {0}
    for gi, gj, box in zip(lt.gi, lt.gj, lt.box, strict=True):
        assert box[0].item() == pytest.approx(3.3 - gi.item(), abs=1e-5)
        assert box[1].item() == pytest.approx(4.7 - gj.item(), abs=1e-5)
        assert box[2].item() == pytest.approx(1.2, abs=1e-5)
    assert torch.equal(lt.anchors, ANCHORS[0][lt.a])


def test_no_neighbour_outside_the_grid_edge() -> None:
    # Centre at x = 0.3 cells: x frac < 0.5, but there is no cell to the left (the rule needs x > 1);
    # y = 7.4 of 8: y frac 0.4 < 0.5 adds the cell above; nothing below the last row.
    t = torch.tensor([[0, 0, 0.3 / 8, 7.4 / 8, 1.0 / 8, 1.0 / 8]])
    (lt,) = build_targets([(8, 8)], ANCHORS, t)
    cells = set(zip(lt.gi.tolist(), lt.gj.tolist(), strict=True))
    assert cells == {(0, 7), (0, 6)}


def test_anchor_ratio_threshold() -> None:
    # Side ratios to anchors 1, 3, 10: a 0.5-cell box -> 2, 6, 20 (only anchor 0); a 9-cell box ->
    # 9, 3, 1.1 (anchors 1 and 2).
    t = torch.tensor([[0, 0, 0.5, 0.5, 0.5 / 8, 0.5 / 8], [1, 0, 0.5, 0.5, 9.0 / 8, 9.0 / 8]])
    (lt,) = build_targets([(8, 8)], ANCHORS, t)
    assert set(lt.a[lt.b == 0].tolist()) == {0}
    assert set(lt.a[lt.b == 1].tolist()) == {1, 2}


def _logit(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


def _perfect_preds(targets: torch.Tensor, shapes: list[tuple[int, int]], anchors: torch.Tensor, nc: int) -> list:
    """Raw outputs that decode exactly to every positive's box, confident object and class."""
    preds = []
    for (ny, nx), lt in zip(shapes, build_targets(shapes, anchors, targets), strict=True):
        p = torch.full((2, anchors.shape[1], ny, nx, 5 + nc), -8.0)
        p[lt.b, lt.a, lt.gj, lt.gi, 0:2] = _logit((lt.box[:, :2] + 0.5) / 2)
        p[lt.b, lt.a, lt.gj, lt.gi, 2:4] = _logit(torch.sqrt(lt.box[:, 2:4] / lt.anchors) / 2)
        p[lt.b, lt.a, lt.gj, lt.gi, 4] = 8.0
        p[lt.b, lt.a, lt.gj, lt.gi, 5 + lt.cls] = 8.0
        preds.append(p)
    return preds


def test_perfect_prediction_beats_shifted_prediction() -> None:
    anchors = torch.tensor(
        [[[1.25, 1.625], [2.0, 3.75], [4.125, 2.875]], [[1.875, 3.8125], [3.875, 2.8125], [3.6875, 7.4375]]]
    )
    shapes = [(16, 16), (8, 8)]
    targets = torch.tensor(
        [[0, 0, 0.30, 0.40, 0.10, 0.12], [0, 2, 0.71, 0.22, 0.30, 0.25], [1, 1, 0.52, 0.55, 0.05, 0.07]]
    )
    shifted = targets.clone()
    shifted[:, 2:4] += 0.01
    shifted[:, 4:6] *= 1.2
    loss_fn = YoloLoss(anchors, nc=3, img_size=128)
    good, good_parts = loss_fn(_perfect_preds(targets, shapes, anchors, 3), targets)
    bad, bad_parts = loss_fn(_perfect_preds(shifted, shapes, anchors, 3), targets)
    assert good_parts[0].item() < 1e-3  # CIoU of a perfect box is 1
    assert good_parts[0] < bad_parts[0]
    assert good < bad
    # Loss is scaled by the batch size and by the usual gains.
    assert loss_fn.box_gain == pytest.approx(0.05 * 3 / 2)
    assert loss_fn.cls_gain == pytest.approx(0.5 * 3 / 80 * 3 / 2)
    assert loss_fn.obj_gain == pytest.approx((128 / 640) ** 2 * 3 / 2)
    assert good.item() == pytest.approx(good_parts.sum().item() * 2, rel=1e-5)


def test_loss_without_targets_is_objectness_only() -> None:
    loss_fn = YoloLoss(ANCHORS, nc=3, img_size=64)
    p = [torch.zeros(1, 3, 8, 8, 8, requires_grad=True)]
    loss, parts = loss_fn(p, torch.zeros((0, 6)))
    assert parts[0] == 0 and parts[2] == 0 and parts[1] > 0
    loss.backward()
    assert p[0].grad is not None and p[0].grad[..., 4].sum() > 0
