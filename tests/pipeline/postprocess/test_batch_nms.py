"""Whole-batch NMS (streamdet.pipeline.postprocess.batch_nms) against the per-image nms, and the
Postprocessor's batched path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdet.pipeline.postprocess import batch_nms as bn
from streamdet.pipeline.postprocess import nms_primitives as prim
from streamdet.pipeline.postprocess.postprocessor import batched_greedy_nms, nms
from streamdet.pipeline.settings import NmsSettings
from tests.pipeline.postprocess.test_postprocessor import assert_det_equal, backend, random_boxes, random_pred

__all__ = ["backend"]  # the fixture, re-exported for pytest


# ----------------------------------------------------------------------------- whole-batch NMS


def random_batch(seed: int, b: int, n: int = 300, nc: int = 3, ties: bool = True) -> torch.Tensor:
    """(b, n, 5+nc): independent images, plus exact duplicates, tied scores and a copied image.

    torchvision's sort is not stable, so its order of equal scores on different boxes is its
    own: ``ties=False`` leaves those out when it is the reference.
    """
    pred = torch.cat([random_pred(seed * 100 + i, n, nc, zero_area=0.03 * (seed % 2)) for i in range(b)])
    pred[:, 1::7] = pred[:, 0:-1:7]  # duplicate rows (same box, same score)
    if ties:
        pred[:, 2:-1:11, 4:] = pred[:, 3::11, 4:]  # tied scores on other boxes
    if b > 2:
        pred[2] = pred[0]  # the same image twice: nothing may suppress across images
    return pred


NMS_CASES = [
    {"conf_thres": 0.25, "iou_thres": 0.45},
    {"conf_thres": 0.001, "iou_thres": 0.3},
    {"conf_thres": 0.1, "iou_thres": 0.6, "agnostic": True},
    {"conf_thres": 0.05, "iou_thres": 0.45, "classes": [0, 2]},
    {"conf_thres": 0.01, "iou_thres": 0.5, "max_det": 17},
    {"conf_thres": 0.01, "iou_thres": 0.0, "max_det": 1},
    {"conf_thres": 0.3, "iou_thres": 1.0},
]


@pytest.mark.parametrize("seed", range(8))
def test_nms_batch_equals_per_image_nms(backend: str, seed: int) -> None:
    pred = random_batch(seed, b=1 + seed % 5, ties=backend == "own")
    if seed == 3:
        pred[1, :, 4] = 0.0  # an image without candidates
    for kw in NMS_CASES:
        want = nms(pred, **kw)
        got = bn.nms_batch(pred, **kw)
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == w.dtype
            assert torch.equal(g, w), kw
    assert sum(len(d) for d in bn.nms_batch(pred, 0.01)) > 0


def test_nms_batch_keeps_images_apart_and_dtypes() -> None:
    pred = random_batch(1, b=3)
    out = bn.nms_batch(pred, 0.01, 0.45)
    assert torch.equal(out[0], out[2]) and len(out[0]) > 0  # image 2 is a copy of image 0
    for dtype in (torch.float16, torch.float64):
        p = pred.to(dtype)
        for g, w in zip(bn.nms_batch(p, 0.01), nms(p, 0.01), strict=True):
            assert g.dtype == dtype and torch.equal(g, w)
    empty = bn.nms_batch(torch.zeros(2, 0, 85))
    assert len(empty) == 2 and all(e.shape == (0, 6) and e.dtype == torch.float32 for e in empty)
    det, img = bn.nms_packed(pred, 0.01)
    assert img.dtype == torch.int64 and bool((img[1:] >= img[:-1]).all())
    with pytest.raises(ValueError, match="conf_thres"):
        bn.nms_batch(pred, conf_thres=2.0)
    with pytest.raises(ValueError, match="5\\+nc"):
        bn.nms_batch(torch.zeros(4, 6))


def test_nms_batch_caps_candidates_per_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prim, "MAX_NMS", 9)  # the cap is per image, after the stable conf sort
    pred = random_batch(2, b=4)
    for g, w in zip(bn.nms_batch(pred, 0.01, 0.45), nms(pred, 0.01, 0.45), strict=True):
        assert 0 < len(w) <= 9 and torch.equal(g, w)


@pytest.mark.parametrize("max_keep", [None, 1, 7, 10_000])
def test_grouped_kernel_equals_one_run_per_group(max_keep: int | None) -> None:
    boxes, scores = random_boxes(4, 1300, zero_area=0.05)
    groups = torch.from_numpy(np.random.default_rng(4).integers(0, 5, 1300))
    groups[groups == 3] = 2  # a group id with no boxes
    keep = bn.grouped_greedy_nms(boxes, scores, groups, 0.45, max_keep=max_keep)
    assert bool((groups[keep][1:] >= groups[keep][:-1]).all())  # by group
    for k in range(5):
        idx = (groups == k).nonzero()[:, 0]
        want = idx[batched_greedy_nms(boxes[idx], scores[idx], 0.45, max_keep=max_keep)]
        assert keep[groups[keep] == k].tolist() == want.tolist()
    assert bn.grouped_greedy_nms(boxes, scores, groups, 0.45, max_keep=0).numel() == 0
    assert bn.grouped_greedy_nms(boxes[:0], scores[:0], groups[:0], 0.45).numel() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_postprocessor_batched_path_is_identical(dtype: torch.dtype) -> None:
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor
    from streamdet.pipeline.types import Transform

    pred = random_batch(5, b=4).to(dtype)
    input_hw = (640, 640)
    transforms = [Transform((720, 1280), (720, 1280), input_hw), Transform((480, 640), (240, 320), input_hw),
                  Transform((1080, 1920), (540, 960), input_hw), Transform((500, 377), (500, 377), input_hw)]
    for kw in ({"conf_thres": 0.01}, {"conf_thres": 0.2, "classes": [1], "max_det": 5}):
        want = Postprocessor(NmsSettings.of(**kw))(pred, transforms)
        got = Postprocessor(NmsSettings.of(**kw), batched=True)(pred, transforms)
        assert sum(len(w) for w in want) > 0
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32 and g.shape[1] == 6
            np.testing.assert_array_equal(g, w)


@pytest.mark.gpu
def test_nms_batch_and_postprocessor_cuda_match_cpu() -> None:
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor
    from streamdet.pipeline.types import Transform

    pred = random_batch(6, b=5, ties=False)  # the CPU reference may be torchvision's (unstable on ties)
    for kw in NMS_CASES:
        for g, w in zip(bn.nms_batch(pred.cuda(), **kw), nms(pred, **kw), strict=True):
            assert g.device.type == "cuda"
            assert_det_equal(g, w.numpy(), box_atol=1e-4)
    transforms = [Transform((720, 1280), (720, 1280), (640, 640))] * 5
    for g, w in zip(Postprocessor()(pred.cuda(), transforms), Postprocessor()(pred, transforms), strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-3)


def test_postprocessor_batched_path_copies_to_the_host_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor
    from streamdet.pipeline.types import Transform

    pred = random_batch(7, b=6)
    transforms = [Transform((720, 1280), (720, 1280), (640, 640))] * 6
    copies: list[tuple[int, ...]] = []
    real_cpu = torch.Tensor.cpu

    def counting_cpu(self: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        copies.append(tuple(self.shape))
        return real_cpu(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", counting_cpu)
    out = Postprocessor(NmsSettings(conf_thres=0.01), batched=True)(pred, transforms)
    assert len(copies) == 1 and copies[0] == (sum(len(d) for d in out), 7)  # dets + image column, once
    copies.clear()
    per_frame = Postprocessor(NmsSettings(conf_thres=0.01))(pred, transforms)
    assert copies == []  # the per-frame path on a CPU works on the host arrays themselves (numpy)
    for a, b in zip(out, per_frame, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)
