"""The numpy per-image NMS gives the torch NMS's output to the bit, and the official fixture's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamdet.pipeline.postprocess import host_nms as host
from streamdet.pipeline.postprocess import postprocessor as pp
from streamdet.pipeline.postprocess.host_nms import host_nms
from streamdet.pipeline.postprocess.postprocessor import nms
from streamdet.pipeline.settings import NmsSettings
from tests.pipeline.postprocess.test_postprocessor import assert_det_equal, random_pred

CASES = [
    NmsSettings(0.25, 0.45),
    NmsSettings(0.01, 0.3),
    NmsSettings(0.1, 0.6, agnostic=True),
    NmsSettings(0.05, 0.45, classes=(0, 2)),
    NmsSettings(0.01, 0.5, max_det=17),
    NmsSettings(0.3, 0.1),  # 0.1 rounds up in float32: the threshold is compared as torchvision does
]


def torch_nms(pred: torch.Tensor, s: NmsSettings) -> np.ndarray:
    return nms(pred, s.conf_thres, s.iou_thres, list(s.classes) if s.classes else None, s.agnostic,
               s.max_det)[0].numpy()


@pytest.fixture(autouse=True)
def own_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch side with our kernel (torchvision, where installed, is compared in test_postprocessor)."""
    monkeypatch.setattr(pp, "torchvision_nms", lambda: None)


@pytest.mark.parametrize("n", [0, 1, 40, 300, 900])
@pytest.mark.parametrize("seed", range(4))
def test_host_nms_equals_torch_nms_bit_for_bit(n: int, seed: int) -> None:
    pred = random_pred(seed, n=n, nc=3, zero_area=0.05 if seed % 2 else 0.0)
    for s in CASES:
        got = host_nms(pred[0].numpy(), s)
        want = torch_nms(pred, s)
        assert got.dtype == np.float32 and got.shape[1] == 6
        np.testing.assert_array_equal(got, want)


def test_ties_in_score_and_class_keep_the_torch_order() -> None:
    """Equal class scores pick the first class; equal confidences keep their row order."""
    rng = np.random.default_rng(5)
    n = 200
    pred = np.zeros((n, 8), np.float32)
    pred[:, :2] = rng.uniform(0, 400, (n, 2)).round()
    pred[:, 2:4] = rng.choice([20.0, 40.0], (n, 2))
    pred[:, 4] = rng.choice([0.5, 0.75, 1.0], n)
    pred[:, 5:] = rng.choice([0.5, 1.0], (n, 3))  # many rows with two or three best classes
    t = torch.from_numpy(pred)[None]
    for s in CASES:
        np.testing.assert_array_equal(host_nms(pred, s), torch_nms(t, s))
    assert len(host_nms(pred, NmsSettings(0.25, 0.45))) > 10


def test_more_candidates_than_the_matrix_limit_go_to_the_blocked_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    pred = random_pred(9, n=700, nc=3)
    want = {s: torch_nms(pred, s) for s in CASES}
    calls = []
    real = host.prim.batched_greedy_nms

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(host, "HOST_NMS_MAX", 50)
    monkeypatch.setattr(host.prim, "batched_greedy_nms", spy)
    for s in CASES:
        np.testing.assert_array_equal(host_nms(pred[0].numpy(), s), want[s])
    assert calls  # the fallback really ran


@pytest.mark.parametrize("conf", [0.25, 0.001])
def test_host_nms_matches_the_official_fixture(fixtures_dir: Path, conf: float) -> None:
    synthetic = np.load(fixtures_dir / "yolov5" / "nms_synthetic_nc80_seed7.npz")
    s = NmsSettings(conf, float(synthetic["iou_thres"]), max_det=int(synthetic["max_det"]))
    for k in range(3):
        got = host_nms(synthetic["pred"][k], s)
        assert_det_equal(torch.from_numpy(got), synthetic[f"nms_c{conf}_img{k}"])
