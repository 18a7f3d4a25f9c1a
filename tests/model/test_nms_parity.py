"""NMS on our model's full predictions reproduces the stored reference detections (README section 3).

Runs once ``streamdet.pipeline.postprocess.nms`` exists (it is written in parallel); skipped before.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.model.conftest import REFERENCE_FILES, ReferenceRuns

postprocess = pytest.importorskip("streamdet.pipeline.postprocess", reason="postprocess module not there yet")

BOX_ATOL, BOX_RTOL = 0.05, 2e-3  # px, and relative to the box size
CONF_ATOL = 1e-3


@pytest.mark.parametrize("name", REFERENCE_FILES)
def test_nms_matches_reference(reference_runs: ReferenceRuns, name: str) -> None:
    ref = reference_runs.reference(name)
    pred, _ = reference_runs.run(name, False)  # the references come from the unfused model
    checked = 0
    for conf in ref["conf_thresholds"].tolist():
        dets = postprocess.nms(pred, conf, 0.45)
        assert len(dets) == pred.shape[0]
        for k, det in enumerate(dets):
            expected = ref[f"nms_c{conf:g}_img{k}"]
            got = det.detach().cpu().numpy()
            assert got.shape == expected.shape, f"conf {conf} image {k}: {got.shape[0]} vs {expected.shape[0]} boxes"
            np.testing.assert_array_equal(got[:, 5], expected[:, 5])  # classes, in the same order
            size = np.abs(expected[:, 2:4] - expected[:, 0:2])  # (n, 2) box w, h
            tol = BOX_ATOL + BOX_RTOL * np.concatenate([size, size], 1)
            assert (np.abs(got[:, :4] - expected[:, :4]) <= tol).all(), f"conf {conf} image {k}: boxes differ"
            assert np.abs(got[:, 4] - expected[:, 4]).max(initial=0) <= CONF_ATOL
            checked += expected.shape[0]
    assert checked > 0  # every reference file has 300 detections per image at conf 0.001
