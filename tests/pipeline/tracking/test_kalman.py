"""The batched box Kalman filter against the textbook equations, and its behaviour on straight motion."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.pipeline.tracking.kalman import KalmanBoxFilter, boxes_to_xyxy, xyxy_to_boxes

KF = KalmanBoxFilter()


def _reference_step(
    kf: KalmanBoxFilter, mean: np.ndarray, cov: np.ndarray, z: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """One track, explicit matrices: x = F x, P = F P F^T + Q; then the update with H = [I 0] if z is given."""
    f = np.eye(8)
    f[:4, 4:] = np.eye(4)
    w, h = max(mean[2], 1.0), max(mean[3], 1.0)
    scale = np.array([w, h, w, h])
    q = np.diag(np.concatenate([kf.std_position * scale, kf.std_velocity * scale]) ** 2)
    mean, cov = f @ mean, f @ cov @ f.T + q
    if z is None:
        return mean, cov
    hm = np.hstack([np.eye(4), np.zeros((4, 4))])
    w, h = max(mean[2], 1.0), max(mean[3], 1.0)
    r = np.diag((kf.std_position * np.array([w, h, w, h])) ** 2)
    s = hm @ cov @ hm.T + r
    k = cov @ hm.T @ np.linalg.inv(s)
    return mean + k @ (z - hm @ mean), (np.eye(8) - k @ hm) @ cov


def test_box_conversions_are_inverse() -> None:
    xyxy = np.array([[10.0, 20.0, 50.0, 100.0], [0.5, 1.5, 2.0, 9.0]])
    boxes = xyxy_to_boxes(xyxy)
    assert boxes[0].tolist() == [30.0, 60.0, 40.0, 80.0]
    assert np.allclose(boxes_to_xyxy(boxes), xyxy)


def test_initiate_at_the_box_with_no_velocity() -> None:
    mean, cov = KF.initiate(np.array([[10.0, 20.0, 50.0, 100.0]]))
    assert mean[0].tolist() == [30.0, 60.0, 40.0, 80.0, 0.0, 0.0, 0.0, 0.0]
    assert np.all(np.linalg.eigvalsh(cov[0]) > 0)
    # the velocity is far less certain than the position
    assert cov[0, 4, 4] > cov[0, 0, 0] / 10 and np.allclose(cov[0], np.diag(np.diag(cov[0])))


def test_batched_steps_equal_the_textbook_filter_per_track() -> None:
    rng = np.random.default_rng(3)
    n = 5
    start = np.column_stack([rng.uniform(0, 500, (n, 2)), rng.uniform(600, 700, (n, 2))])
    mean, cov = KF.initiate(start)
    ref = [(mean[i].copy(), cov[i].copy()) for i in range(n)]
    for step in range(12):
        z_xyxy = start + rng.normal(0, 2, (n, 4)) + step * 3.0
        mean, cov = KF.predict(mean, cov)
        updated = np.arange(n) % 2 == step % 2  # some tracks get a measurement, the others only predict
        mean[updated], cov[updated] = KF.update(mean[updated], cov[updated], z_xyxy[updated])
        z = xyxy_to_boxes(z_xyxy)
        ref = [_reference_step(KF, m, c, z[i] if updated[i] else None) for i, (m, c) in enumerate(ref)]
    for i in range(n):
        assert np.allclose(mean[i], ref[i][0], rtol=1e-9, atol=1e-9)
        assert np.allclose(cov[i], ref[i][1], rtol=1e-9, atol=1e-9)
        assert np.allclose(cov[i], cov[i].T) and np.all(np.linalg.eigvalsh(cov[i]) > 0)


def test_straight_motion_learns_the_velocity() -> None:
    velocity = np.array([4.0, -2.5])
    box = np.array([[100.0, 200.0, 160.0, 240.0]])
    mean, cov = KF.initiate(box)
    for step in range(1, 40):
        mean, cov = KF.predict(mean, cov)
        moved = box + np.tile(velocity, 2) * step
        mean, cov = KF.update(mean, cov, moved)
    assert mean[0, 4:6] == pytest.approx(velocity, abs=0.05)
    assert mean[0, 6:8] == pytest.approx([0.0, 0.0], abs=0.05)
    ahead, _ = KF.predict(mean, cov)
    assert boxes_to_xyxy(ahead)[0] == pytest.approx((box + np.tile(velocity, 2) * 40)[0], abs=0.2)


def test_empty_batches_pass_through() -> None:
    mean, cov = KF.initiate(np.zeros((0, 4)))
    assert mean.shape == (0, 8) and cov.shape == (0, 8, 8)
    assert KF.predict(mean, cov)[0].shape == (0, 8)
    assert KF.update(mean, cov, np.zeros((0, 4)))[1].shape == (0, 8, 8)


def test_initiate_ago_equals_initiate_then_predict() -> None:
    xyxy = np.array([[10.0, 20.0, 50.0, 100.0], [300.0, 40.0, 330.0, 52.0], [0.0, 0.0, 8.0, 8.0]])
    frames = np.array([0, 1, 7])
    mean, cov = KF.initiate_ago(xyxy, frames)
    for i, k in enumerate(frames):
        m, c = KF.initiate(xyxy[i : i + 1])
        for _ in range(k):
            m, c = KF.predict(m, c)
        assert np.allclose(mean[i], m[0]) and np.allclose(cov[i], c[0], rtol=1e-12, atol=1e-9)


def test_gating_distance_is_the_mahalanobis_distance_of_the_measurement() -> None:
    rng = np.random.default_rng(5)
    mean, cov = KF.initiate_ago(np.array([[100.0, 100.0, 140.0, 150.0], [400.0, 300.0, 420.0, 310.0]]), [3, 1])
    dets = np.array([[104.0, 98.0, 146.0, 149.0], [380.0, 290.0, 404.0, 303.0], [0.0, 0.0, 9.0, 9.0]])
    dets += rng.normal(0, 0.1, dets.shape)
    got = KF.gating_distance(mean, cov, dets)
    assert got.shape == (3, 2)
    z = xyxy_to_boxes(dets)
    for j in range(2):
        s = cov[j, :4, :4] + np.diag((KF.std_position * mean[j, [2, 3, 2, 3]]) ** 2)
        for i in range(3):
            d = z[i] - mean[j, :4]
            assert got[i, j] == pytest.approx(d @ np.linalg.solve(s, d))
    assert got[0, 0] < 9.4877 < got[2, 0]


def test_distances_are_the_textbook_mahalanobis_distance_after_updates() -> None:
    """gating_distance and paired_distance take the innovation covariance as diagonal: true for every
    state the filter makes (no step couples the four measured values), here after predict/update runs."""
    rng = np.random.default_rng(8)
    start = np.column_stack([rng.uniform(0, 500, (4, 2)), rng.uniform(600, 700, (4, 2))])
    mean, cov = KF.initiate(start)
    for step in range(9):
        mean, cov = KF.predict(mean, cov)
        if step % 3 != 1:
            mean, cov = KF.update(mean, cov, start + rng.normal(0, 3, (4, 4)) + step * 4.0)
    dets = start + rng.normal(0, 20, (4, 4)) + 40.0
    z = xyxy_to_boxes(dets)
    want = np.empty((4, 4))
    for j in range(4):
        s = cov[j, :4, :4] + np.diag((KF.std_position * mean[j, [2, 3, 2, 3]]) ** 2)
        for i in range(4):
            d = z[i] - mean[j, :4]
            want[i, j] = d @ np.linalg.solve(s, d)
    assert np.allclose(KF.gating_distance(mean, cov, dets), want, rtol=1e-9)
    assert np.allclose(KF.paired_distance(mean, cov, dets), np.diagonal(want), rtol=1e-9)
