"""Forward parity of our YOLOv5 with the official reference outputs (fixture README section 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.model.conftest import REFERENCE_FILES, REFERENCE_INPUTS, ReferenceRuns, input_sha256, regenerate_input

# README "suggested float32 tolerances for a re-implementation"
TOL_RAW = 2e-3
TOL_XY = 2e-2
TOL_WH_ABS, TOL_WH_REL = 2e-2, 2e-3
TOL_CONF = 3e-4


def assert_pred_close(pred: np.ndarray, ref: np.ndarray) -> None:
    """Compare (B, k, 85) predictions column group by column group with the README tolerances."""
    assert pred.shape == ref.shape
    assert np.isfinite(pred).all()
    dxy = np.abs(pred[..., 0:2] - ref[..., 0:2]).max()
    assert dxy <= TOL_XY, f"xy deviates by {dxy} px"
    dwh = np.abs(pred[..., 2:4] - ref[..., 2:4])
    excess = (dwh - (TOL_WH_ABS + TOL_WH_REL * np.abs(ref[..., 2:4]))).max()
    assert excess <= 0, f"wh deviates by up to {dwh.max()} px ({excess} over tolerance)"
    dconf = np.abs(pred[..., 4:] - ref[..., 4:]).max()
    assert dconf <= TOL_CONF, f"obj/cls deviate by {dconf}"


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_regenerated_input_matches_readme(name: str) -> None:
    seed, shape, sha, first5 = REFERENCE_INPUTS[name]
    x = regenerate_input(name)
    assert x.shape == shape and x.dtype == np.float32
    assert input_sha256(x) == sha
    np.testing.assert_allclose(x.reshape(-1)[:5], first5, rtol=0, atol=1e-8)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_prediction_parity(reference_runs: ReferenceRuns, name: str, fused: bool) -> None:
    ref = reference_runs.reference(name)
    pred, raw = reference_runs.run(name, fused)
    b, _, h, w = ref["input_shape"].tolist() if "input_shape" in ref else REFERENCE_INPUTS[name][1]
    n_rows = sum(3 * (h // s) * (w // s) for s in (8, 16, 32))
    assert pred.shape == (b, n_rows, 85)
    assert [tuple(r.shape) for r in raw] == [(b, 3, h // s, w // s, 85) for s in (8, 16, 32)]
    assert_pred_close(pred[:, ref["sub_rows"]].numpy(), ref["pred_sub"])


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused"])
def test_raw_head_parity(reference_runs: ReferenceRuns, fused: bool) -> None:
    ref = reference_runs.reference("yolov5n_ref_rect.npz")
    _, raw = reference_runs.run("yolov5n_ref_rect.npz", fused)
    p2 = raw[2].numpy()
    assert p2.shape == ref["raw_p2"].shape == (1, 3, 12, 20, 85)
    assert np.abs(p2 - ref["raw_p2"]).max() <= TOL_RAW
    assert np.abs(ref["raw_p2"]).max() > 1.0  # the reference is not trivially near zero


def test_single_image_equals_batch_member(reference_runs: ReferenceRuns) -> None:
    """Image 0 alone gives the same prediction as inside the batch of 2 (README: <= 1.9e-9)."""
    name = "yolov5n_ref_s100.npz"
    batch_pred, _ = reference_runs.run(name, False)
    x0 = torch.from_numpy(regenerate_input(name)[:1])
    with torch.no_grad():
        alone = reference_runs.model(False)(x0)
    assert torch.allclose(alone[0], batch_pred[0], rtol=1e-5, atol=1e-4)


def test_float64_model_matches_reference(reference_runs: ReferenceRuns, checkpoint_path) -> None:
    """The same weights in float64 stay within the float32 tolerances (README: fp32 vs fp64 rows)."""
    from streamdet.model.checkpoint import load_model

    model = load_model(checkpoint_path, fuse=False).double()
    name = "yolov5n_ref_rect.npz"
    ref = reference_runs.reference(name)
    x = torch.from_numpy(regenerate_input(name)).double()
    with torch.no_grad():
        pred, raw = model.forward_raw(x)
    assert pred.dtype == torch.float64 and raw[0].dtype == torch.float64
    assert_pred_close(pred[:, ref["sub_rows"]].float().numpy(), ref["pred_sub"])
    assert np.abs(raw[2].numpy() - ref["raw_p2"]).max() <= TOL_RAW
