"""NMS, scale_boxes and wire records against the official fixtures and slow pure-Python references."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamdet.pipeline.postprocess import postprocessor as pp
from streamdet.pipeline.postprocess.postprocessor import (
    batched_greedy_nms,
    clip_boxes,
    nms,
    scale_boxes,
    xywh2xyxy,
)
from streamdet.pipeline.settings import NmsSettings

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
E2E = ["img1_1280x720", "img3_500x377", "img4_377x500"]
F32 = np.float32


# ----------------------------------------------------------------------------- references


def ref_greedy(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    """torchvision.ops.nms (CPU kernel) one box pair at a time, in float32 scalars."""
    b = [[F32(v) for v in row] for row in np.asarray(boxes, F32)]
    s = [float(v) for v in scores]
    order = sorted(range(len(b)), key=lambda i: -s[i])  # stable: lower index first on ties
    area = [(x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in b]
    suppressed = [False] * len(b)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(i)
            ix1, iy1, ix2, iy2 = b[i]
            for j in order[a + 1 :]:
                if suppressed[j]:
                    continue
                x1, y1, x2, y2 = b[j]
                w = max(F32(0), min(ix2, x2) - max(ix1, x1))
                h = max(F32(0), min(iy2, y2) - max(iy1, y1))
                inter = w * h
                iou = inter / (area[i] + area[j] - inter)
                if float(iou) > thr:  # float IoU vs double threshold; NaN (0/0) is not suppressed
                    suppressed[j] = True
    return keep


def ref_nms(pred: np.ndarray, conf_thres: float, iou_thres: float, classes=None, agnostic=False, max_det=300):
    """Official non_max_suppression semantics (README section 3) on one image, numpy float32."""
    x = pred[pred[:, 4] > F32(conf_thres)]
    cls_conf = x[:, 5:] * x[:, 4:5]
    j = cls_conf.argmax(1)
    conf = cls_conf[np.arange(len(x)), j]
    box = np.stack([x[:, 0] - x[:, 2] / 2, x[:, 1] - x[:, 3] / 2, x[:, 0] + x[:, 2] / 2, x[:, 1] + x[:, 3] / 2], 1)
    det = np.concatenate([box, conf[:, None], j[:, None].astype(F32)], 1)[conf > F32(conf_thres)]
    if classes is not None:
        det = det[np.isin(det[:, 5], classes)]
    det = det[np.argsort(-det[:, 4], kind="stable")[:30000]]
    offset = 0 if agnostic else det[:, 5:6] * F32(7680)
    keep = ref_greedy(det[:, :4] + offset, det[:, 4], iou_thres)[:max_det]
    return det[keep]


def random_pred(seed: int, n: int = 400, nc: int = 4, zero_area: float = 0.0) -> torch.Tensor:
    """(1, n, 5+nc) float32 predictions: clustered boxes so that many overlap, continuous scores."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 640, (max(n // 6, 1), 2))
    k = rng.integers(0, len(centres), n)
    cxcy = centres[k] + rng.normal(0, 10, (n, 2))
    wh = rng.uniform(5, 120, (len(centres), 2))[k] * rng.uniform(0.7, 1.3, (n, 2))
    wh[rng.random(n) < zero_area, 0] = 0.0
    obj = rng.uniform(0, 1, n)
    cls = rng.uniform(0, 1, (n, nc))
    pred = np.concatenate([cxcy, wh, obj[:, None], cls], 1).astype(F32)
    return torch.from_numpy(pred)[None]


def random_boxes(seed: int, n: int, zero_area: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    p = random_pred(seed, n, 1, zero_area)[0]
    return xywh2xyxy(p[:, :4]), p[:, 4]


def assert_det_equal(got: torch.Tensor, ref: np.ndarray, box_atol: float = 1e-3) -> None:
    got = got.detach().cpu().float().numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose(got[:, :4], ref[:, :4], rtol=0, atol=box_atol)
    np.testing.assert_allclose(got[:, 4], ref[:, 4], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[:, 5], ref[:, 5])


@pytest.fixture(params=["own", "torchvision"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run NMS with our kernel, and with torchvision.ops.nms where it is installed."""
    if request.param == "own":
        monkeypatch.setattr(pp, "torchvision_nms", lambda: None)
    elif not HAS_TORCHVISION:
        pytest.skip("torchvision not installed")
    else:
        assert pp.torchvision_nms() is not None
    return request.param


@pytest.fixture(scope="module")
def synthetic(fixtures_dir: Path) -> np.lib.npyio.NpzFile:
    return np.load(fixtures_dir / "yolov5" / "nms_synthetic_nc80_seed7.npz")


# ----------------------------------------------------------------------------- NMS vs fixtures


@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_nms_matches_synthetic_fixture(synthetic, backend: str, conf: float) -> None:
    pred = torch.from_numpy(synthetic["pred"])
    out = nms(pred, conf, float(synthetic["iou_thres"]), max_det=int(synthetic["max_det"]))
    assert len(out) == 3
    for k in range(3):
        ref = synthetic[f"nms_c{conf}_img{k}"]
        assert out[k].dtype == torch.float32 and out[k].shape[1] == 6
        assert_det_equal(out[k], ref)
        single = nms(pred[k : k + 1], conf, float(synthetic["iou_thres"]), max_det=300)[0]
        assert torch.equal(single, out[k])  # batch members do not interact
    counts = {0.25: (49, 0, 300), 0.001: (94, 60, 300)}[conf]
    assert tuple(len(o) for o in out) == counts


def test_nms_max_det_truncates_in_order(synthetic, backend: str) -> None:
    pred = torch.from_numpy(synthetic["pred"][2:3])  # 400 separate confident boxes
    full = nms(pred, 0.25, 0.45, max_det=1000)[0]
    assert len(full) == 400
    assert torch.equal(nms(pred, 0.25, 0.45, max_det=300)[0], full[:300])
    assert torch.equal(nms(pred, 0.25, 0.45, max_det=7)[0], full[:7])
    assert nms(pred, 0.25, 0.45, max_det=0)[0].shape == (0, 6)
    assert bool((full[1:, 4] < full[:-1, 4]).all())


def test_nms_fp16_and_fp64_inputs(synthetic) -> None:
    p32 = torch.from_numpy(synthetic["pred"])
    p16 = p32.half()
    for a, b in zip(nms(p16, 0.001), nms(p16.float(), 0.001), strict=True):
        assert a.dtype == torch.float16
        assert torch.equal(a, b.half())  # same decisions, math in float32, cast at the end
    for k, det in enumerate(nms(p32.double(), 0.25)):
        assert det.dtype == torch.float64
        assert_det_equal(det, synthetic[f"nms_c0.25_img{k}"])


def test_nms_empty_and_edge_inputs() -> None:
    out = nms(torch.zeros(2, 0, 85))
    assert len(out) == 2 and all(o.shape == (0, 6) and o.dtype == torch.float32 for o in out)
    low = torch.zeros(1, 10, 85)
    low[..., 2:4] = 10.0
    low[..., 4] = 0.25  # obj must be strictly greater than conf_thres
    low[..., 5] = 1.0
    assert nms(low, 0.25)[0].shape == (0, 6)
    low[..., 4] = 0.2501
    assert nms(low, 0.25)[0].shape[0] == 1  # identical boxes: one survives
    pred = random_pred(0)
    assert torch.equal(nms((pred, [torch.zeros(1)]))[0], nms(pred)[0])  # (pred, raw) model output
    with pytest.raises(ValueError):
        nms(pred, conf_thres=1.5)
    with pytest.raises(ValueError):
        nms(pred, iou_thres=-0.1)


# ----------------------------------------------------------------------------- NMS vs slow reference


@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_reference_random(backend: str, seed: int) -> None:
    pred = random_pred(seed, n=600, nc=3, zero_area=0.05 if seed % 2 else 0.0)
    cases = [
        {"conf_thres": 0.25, "iou_thres": 0.45},
        {"conf_thres": 0.01, "iou_thres": 0.3},
        {"conf_thres": 0.1, "iou_thres": 0.6, "agnostic": True},
        {"conf_thres": 0.05, "iou_thres": 0.45, "classes": [0, 2]},
        {"conf_thres": 0.01, "iou_thres": 0.5, "max_det": 17},
    ]
    for kw in cases:
        got = nms(pred, **kw)[0]
        ref = ref_nms(pred[0].numpy(), **kw)
        assert len(ref) > 0, kw
        assert_det_equal(got, ref, box_atol=0)
    # the filters really change something
    assert len(nms(pred, 0.05, classes=[0, 2], max_det=1000)[0]) < len(nms(pred, 0.05, max_det=1000)[0])
    assert len(nms(pred, 0.1, 0.6, agnostic=True, max_det=1000)[0]) < len(nms(pred, 0.1, 0.6, max_det=1000)[0])


@pytest.mark.parametrize("n", [1, 2, 40, 255, 256, 257, 700])
@pytest.mark.parametrize("thr", [0.3, 0.45, 0.7])
def test_kernel_matches_reference(n: int, thr: float) -> None:
    boxes, scores = random_boxes(n + int(thr * 100), n)
    keep = batched_greedy_nms(boxes, scores, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == ref_greedy(boxes.numpy(), scores.numpy(), thr)
    assert batched_greedy_nms(boxes, scores, thr, max_keep=5).tolist() == keep[:5].tolist()
    assert batched_greedy_nms(boxes.double(), scores.double(), thr).tolist() == keep.tolist()


def test_kernel_zero_area_and_duplicates() -> None:
    boxes = torch.tensor(
        [
            [10.0, 10.0, 10.0, 50.0],  # zero width
            [10.0, 10.0, 10.0, 50.0],  # identical zero-area box: IoU 0/0 -> NaN -> kept
            [0.0, 0.0, 100.0, 100.0],
            [0.0, 0.0, 100.0, 100.0],  # identical real box: IoU 1 -> suppressed
            [200.0, 200.0, 201.0, 201.0],
        ]
    )
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    assert batched_greedy_nms(boxes, scores, 0.45).tolist() == [0, 1, 2, 4]
    assert batched_greedy_nms(boxes, scores, 0.45).tolist() == ref_greedy(boxes.numpy(), scores.numpy(), 0.45)
    boxes, scores = random_boxes(11, 500, zero_area=0.3)
    assert batched_greedy_nms(boxes, scores, 0.45).tolist() == ref_greedy(boxes.numpy(), scores.numpy(), 0.45)


def test_kernel_long_suppression_chain() -> None:
    # each box overlaps its neighbour with IoU 0.6 (next-but-one: 0.33): greedy keeps every other
    # one, and each decision depends on the previous one, across block boundaries
    n = 600
    x = torch.arange(n, dtype=torch.float32) * 10
    boxes = torch.stack([x, torch.zeros(n), x + 40, torch.full((n,), 10.0)], 1)
    scores = torch.linspace(1, 0.1, n)
    keep = batched_greedy_nms(boxes, scores, 0.5)
    assert keep.tolist() == list(range(0, n, 2))
    assert keep.tolist() == ref_greedy(boxes.numpy(), scores.numpy(), 0.5)
    # unsorted scores: indices refer to the input order
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    assert perm[batched_greedy_nms(boxes[perm], scores[perm], 0.5)].tolist() == keep.tolist()


def test_kernel_threshold_compared_like_torchvision() -> None:
    # inner box: IoU = 10/100 = float32(0.1) = 0.100000001 > 0.1 in double: torchvision suppresses it
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert batched_greedy_nms(boxes, scores, 0.1).tolist() == [0]
    assert batched_greedy_nms(boxes, scores, 0.10000001).tolist() == [0, 1]


def test_kernel_empty_and_large() -> None:
    assert batched_greedy_nms(torch.zeros(0, 4), torch.zeros(0), 0.45).shape == (0,)
    boxes, scores = random_boxes(5, 30000)
    keep = batched_greedy_nms(boxes, scores, 0.45, max_keep=300)
    assert keep.shape == (300,) and len(set(keep.tolist())) == 300
    assert bool((scores[keep][1:] <= scores[keep][:-1]).all())


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision not installed")
def test_kernel_matches_torchvision() -> None:
    from torchvision.ops import nms as tv_nms

    for seed in range(5):
        boxes, scores = random_boxes(seed, 1500, zero_area=0.05)
        for thr in (0.3, 0.45, 0.7):
            assert batched_greedy_nms(boxes, scores, thr).tolist() == tv_nms(boxes, scores, thr).tolist()


@pytest.mark.gpu
def test_nms_cuda_matches_cpu(synthetic) -> None:
    pred = torch.from_numpy(synthetic["pred"])
    for conf in (0.25, 0.001):
        cuda_out = nms(pred.cuda(), conf, 0.45)
        for k, det in enumerate(cuda_out):
            assert det.device.type == "cuda"
            assert_det_equal(det, synthetic[f"nms_c{conf}_img{k}"])
    for seed in range(3):
        pred = random_pred(seed, 3000, nc=5, zero_area=0.02)
        for got, exp in zip(nms(pred.cuda(), 0.01), nms(pred, 0.01), strict=True):
            assert_det_equal(got, exp.numpy(), box_atol=1e-4)
        for got, exp in zip(nms(pred.cuda().half(), 0.01), nms(pred.half(), 0.01), strict=True):
            assert got.dtype == torch.float16
            assert_det_equal(got, exp.float().numpy(), box_atol=1e-4)
        boxes, scores = random_boxes(seed, 5000, zero_area=0.02)
        keep = batched_greedy_nms(boxes.cuda(), scores.cuda(), 0.45)
        assert keep.device.type == "cuda"
        assert keep.cpu().tolist() == batched_greedy_nms(boxes, scores, 0.45).tolist()


# ----------------------------------------------------------------------------- boxes


@pytest.mark.parametrize("name", E2E)
@pytest.mark.parametrize("conf", ["0.25", "0.001"])
@pytest.mark.parametrize("kind", ["torch", "numpy"])
def test_scale_boxes_matches_e2e(fixtures_dir: Path, name: str, conf: str, kind: str) -> None:
    z = np.load(fixtures_dir / "yolov5" / f"yolov5n_e2e_{name}.npz")
    src = cv2.imread(str(fixtures_dir / "letterbox" / f"{name}.png"), cv2.IMREAD_COLOR).shape
    boxes = z[f"nms_c{conf}"][:, :4].copy()
    if kind == "torch":
        t = torch.from_numpy(boxes)
        out = scale_boxes(tuple(z["model_input_shape"][2:]), t, src)
        assert out is t
        got = out.round().numpy()
    else:
        out = scale_boxes(tuple(z["model_input_shape"][2:]), boxes, src)
        assert out is boxes
        got = out.round()
    np.testing.assert_array_equal(got, z[f"det_scaled_c{conf}"][:, :4])


def test_scale_boxes_e2e_has_rows(fixtures_dir: Path) -> None:
    z = np.load(fixtures_dir / "yolov5" / "yolov5n_e2e_img3_500x377.npz")
    assert len(z["det_scaled_c0.001"]) == 9  # the parametrised test above is not vacuous


def test_scale_boxes_pad_semantics() -> None:
    # img3 (377x500) in 512x640: gain 1.28, pad_y recomputed as 14.72 (letterbox used 14 rows)
    b = torch.tensor([[0.0, 14.72, 640.0, 497.28], [-50.0, 0.0, 700.0, 600.0]])
    scale_boxes((512, 640), b, (377, 500))
    torch.testing.assert_close(b[0], torch.tensor([0.0, 0.0, 500.0, 377.0]), atol=1e-4, rtol=0)
    assert b[1].tolist() == [0.0, 0.0, 500.0, 377.0]  # clipped
    n = np.array([[100.0, 114.5, 228.0, 242.5]], np.float32)
    scale_boxes((512, 640), n, (377, 500), ratio_pad=((1.28, 1.28), (0.0, 14.5)))
    np.testing.assert_allclose(n, [[100 / 1.28, 100 / 1.28, 228 / 1.28, 228 / 1.28]], rtol=1e-6)
    n2 = np.array([[100.0, 114.5, 228.0, 242.5]], np.float32)
    scale_boxes((512, 640), n2, (377, 500), ratio_pad=(1.28, (0.0, 14.5)))  # letterbox_params form
    np.testing.assert_array_equal(n2, n)
    assert n.dtype == np.float32


def test_clip_and_xywh2xyxy() -> None:
    x = torch.tensor([[10.0, 20.0, 4.0, 6.0]])
    assert xywh2xyxy(x).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    assert x.tolist() == [[10.0, 20.0, 4.0, 6.0]]  # not in place
    xn = np.array([[10.0, 20.0, 4.0, 6.0]], np.float32)
    assert xywh2xyxy(xn).tolist() == [[8.0, 17.0, 12.0, 23.0]]
    b = np.array([[-1.0, -2.0, 30.0, 40.0], [5.0, 6.0, 7.0, 8.0]], np.float32)
    clip_boxes(b, (20, 25))
    assert b.tolist() == [[0.0, 0.0, 25.0, 20.0], [5.0, 6.0, 7.0, 8.0]]
    t = torch.tensor([[-1.0, -2.0, 30.0, 40.0]])
    clip_boxes(t, (20, 25, 3))
    assert t.tolist() == [[0.0, 0.0, 25.0, 20.0]]


@pytest.mark.parametrize("conf", [0.001, 0.25, 0.9])
def test_postprocessor_equals_nms_then_scale_boxes(conf: float) -> None:
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor
    from streamdet.pipeline.types import Transform

    g = torch.Generator().manual_seed(3)
    b, n, nc = 3, 2000, 4
    pred = torch.rand((b, n, 5 + nc), generator=g)
    pred[..., :2] *= 640
    pred[..., 2:4] = pred[..., 2:4] * 120 + 4
    input_hw, frames = (384, 640), [(720, 1280), (480, 640), (1080, 1920)]
    post = Postprocessor(NmsSettings(conf_thres=conf, iou_thres=0.45))
    got = post(pred, [Transform(f, f, input_hw) for f in frames])
    want = nms(pred, conf, 0.45)
    assert sum(len(d) for d in want) > 0 or conf == 0.9
    for det, ref, hw in zip(got, want, frames, strict=True):
        ref = ref.clone()
        ref[:, :4] = scale_boxes(input_hw, ref[:, :4], hw)
        np.testing.assert_array_equal(det, ref.numpy())



def test_nms_settings_are_one_checked_value() -> None:
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor

    s = NmsSettings(conf_thres=0.5, iou_thres=0.3, classes=[2, 0], max_det=5)  # type: ignore[arg-type]
    assert s.classes == (2, 0) and s.max_det == 5
    for bad in ({"conf_thres": 1.5}, {"iou_thres": -0.1}, {"max_det": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            NmsSettings(**bad)  # type: ignore[arg-type]
    post = Postprocessor(NmsSettings.of(conf_thres=0.4, classes=[1]))
    assert post.settings == NmsSettings(conf_thres=0.4, classes=(1,)) and post.classes == [1]

    from streamdet.pipeline.types import Transform

    pred = random_pred(3, n=300)
    t = [Transform((640, 640), (640, 640), (640, 640))]
    post = Postprocessor(NmsSettings(conf_thres=0.1, iou_thres=0.45, agnostic=True))
    (agnostic,) = post(pred, t)
    (want,) = nms(pred, 0.1, 0.45, agnostic=True)
    want[:, :4] = want[:, :4].clamp(0, 640)  # the inverse transform clips to the frame
    np.testing.assert_array_equal(agnostic, want.numpy())  # the whole settings value is what NMS uses
    post.settings = NmsSettings(conf_thres=0.1, iou_thres=0.45)  # swapped whole (a reload)
    (per_class,) = post(pred, t)
    assert len(per_class) > len(agnostic)
