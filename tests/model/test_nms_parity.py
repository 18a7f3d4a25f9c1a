"""NMS on our model's full predictions reproduces the stored reference detections (README section 3).

Runs once ``streamdet.pipeline.postprocess.postprocessor.nms`` exists (it is written in parallel); skipped before.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.model.conftest import REFERENCE_FILES, ReferenceRuns

postprocess = pytest.importorskip("streamdet.pipeline.postprocess.postprocessor",
                                  reason="postprocess module not there yet")

BOX_ATOL, BOX_RTOL = 0.05, 2e-3  # px, and relative to the box size
CONF_ATOL = 1e-3


TIE_ATOL = 1e-5  # scores this close are a tie: float noise between CPUs may swap their order


def _rows_match(got: np.ndarray, expected: np.ndarray) -> bool:
    """One detection row equals another: same class, box within tolerance, score within CONF_ATOL."""
    size = np.abs(expected[2:4] - expected[0:2])
    tol = BOX_ATOL + BOX_RTOL * np.concatenate([size, size])
    return bool(got[5] == expected[5] and (np.abs(got[:4] - expected[:4]) <= tol).all()
                and abs(got[4] - expected[4]) <= CONF_ATOL)


def tie_groups(scores: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive rows whose scores differ by at most TIE_ATOL from the next."""
    groups, start = [], 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or abs(scores[i] - scores[i - 1]) > TIE_ATOL:
            groups.append((start, i))
            start = i
    return groups


def unmatched_rows(got: np.ndarray, expected: np.ndarray) -> list[int]:
    """Indices of expected rows with no equal row in ``got``: order is checked exactly, except that
    rows inside one tie group (scores within TIE_ATOL) may come in any order."""
    bad = []
    for start, end in tie_groups(expected[:, 4]):
        free = list(range(start, end))
        for i in range(start, end):
            j = next((j for j in free if _rows_match(got[j], expected[i])), None)
            if j is None:
                bad.append(i)
            else:
                free.remove(j)
    return bad


def test_tie_tolerant_comparison_still_catches_errors() -> None:
    rows = np.array([[0, 0, 10, 10, 0.9, 1], [5, 5, 20, 20, 0.5, 2], [30, 30, 40, 40, 0.5 + 1e-7, 3],
                     [50, 50, 60, 60, 0.1, 4]], dtype=np.float32)
    assert unmatched_rows(rows, rows) == []
    assert unmatched_rows(rows[[0, 2, 1, 3]], rows) == []  # a swapped tie is accepted
    assert unmatched_rows(rows[[1, 0, 2, 3]], rows) != []  # a swap across different scores is not
    moved = rows.copy()
    moved[2, 0] += 1.0
    assert unmatched_rows(moved, rows) == [2]  # a wrong box inside a tie group is still caught
    relabelled = rows.copy()
    relabelled[1, 5] = 7
    assert unmatched_rows(relabelled, rows) == [1]


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
            bad = unmatched_rows(got, expected)
            assert not bad, f"conf {conf} image {k}: rows {bad[:10]} differ from the reference"
            checked += expected.shape[0]
    assert checked > 0  # every reference file has 300 detections per image at conf 0.001
