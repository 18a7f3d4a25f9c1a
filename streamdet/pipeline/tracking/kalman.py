"""Constant-velocity Kalman filter over boxes, batched over all tracks of a camera.

State per track (8,): ``[cx, cy, w, h, vcx, vcy, vw, vh]``, pixels and pixels per frame; the
measurement is the box ``[cx, cy, w, h]``. As in SORT/ByteTrack, the noise scales with the box:
position and size noise are a fraction (``std_position``) of the box width (for ``cx``, ``w``) or
height (for ``cy``, ``h``), velocity noise a smaller fraction (``std_velocity``), so a big box
near the camera may move more pixels than a small one far away. One step is one frame.

Besides the usual ``initiate``/``predict``/``update``: ``initiate_ago`` (a track started at a box
some frames ago, as predicted now: the tracker restarts a track whose motion model failed from its
last box), ``gating_distance`` (the Mahalanobis distance of boxes from every track's prediction)
and ``paired_distance`` (the same for given box-track pairs).

Every function takes and returns whole arrays, means (n, 8) and covariances (n, 8, 8) float64, so
that a frame costs a few numpy calls whatever the number of tracks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CHI2_95", "KalmanBoxFilter", "boxes_to_xyxy", "xyxy_to_boxes"]

CHI2_95 = 9.4877  # 95 % quantile of the chi-square law with 4 degrees of freedom
_DIM = 4  # measured: cx, cy, w, h
# which of the four measured values scales with the width (0) or the height (1)
_SCALE_AXIS = np.array([0, 1, 0, 1])


def xyxy_to_boxes(xyxy: np.ndarray) -> np.ndarray:
    """(n, 4) ``[x1, y1, x2, y2]`` -> (n, 4) float64 ``[cx, cy, w, h]``."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return np.concatenate([xyxy[:, :2] + wh / 2, wh], axis=1)


def boxes_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(n, >=4) ``[cx, cy, w, h, ...]`` -> (n, 4) float64 ``[x1, y1, x2, y2]``."""
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1)


@dataclass(frozen=True)
class KalmanBoxFilter:
    """The filter's noise model; the state lives in the caller's arrays (one row per track).

    ``std_position`` / ``std_velocity``: standard deviations of position/size and of their
    velocities as fractions of the box size (SORT/ByteTrack use 1/20 and 1/160);
    ``initial_velocity``: standard deviation of a new track's unknown velocity, fraction of its
    size per frame (ByteTrack: 10/160; more here, so that a fast new object whose first match
    comes frames later, when the detector skips frames, still lies within the gate of
    :meth:`gating_distance`, and so that the first matches set the velocity quickly).
    """

    std_position: float = 1.0 / 20
    std_velocity: float = 1.0 / 160
    initial_velocity: float = 0.15

    def _scale(self, mean: np.ndarray) -> np.ndarray:
        """(n, 4) the box width or height each measured value's noise scales with (never below 1 px)."""
        wh = np.maximum(mean[:, 2:4], 1.0)
        return wh[:, _SCALE_AXIS]

    def initiate(self, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New tracks at boxes ``xyxy`` (n, 4): zero velocity, wide velocity uncertainty."""
        z = xyxy_to_boxes(xyxy)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        scale = self._scale(mean)
        std = np.concatenate([2 * self.std_position * scale, self.initial_velocity * scale], axis=1)
        cov = np.zeros((len(z), 2 * _DIM, 2 * _DIM))
        idx = np.arange(2 * _DIM)
        cov[:, idx, idx] = std * std
        return mean, cov

    def initiate_ago(self, xyxy: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tracks started at boxes ``xyxy`` (n, 4) ``frames`` (n,) frames ago, predicted to now.

        The same as :meth:`initiate` followed by ``frames[i]`` calls of :meth:`predict` (the velocity
        is zero, so the box and the noise stay put), in closed form: with ``P0 = diag(a, b)`` and
        ``Q = diag(qp, qv)`` per measured value, after k frames the position variance is
        ``a + k^2 b + k qp + S2 qv``, the cross term ``k b + S1 qv``, the velocity variance
        ``b + k qv``, where ``S1 = k(k-1)/2`` and ``S2 = (k-1)k(2k-1)/6``.
        """
        mean, cov = self.initiate(xyxy)
        k = np.asarray(frames, np.float64).reshape(-1, 1)
        scale = self._scale(mean)
        a = np.diagonal(cov[:, :_DIM, :_DIM], axis1=1, axis2=2)
        b = np.diagonal(cov[:, _DIM:, _DIM:], axis1=1, axis2=2)
        qp, qv = (self.std_position * scale) ** 2, (self.std_velocity * scale) ** 2
        s1, s2 = k * (k - 1) / 2, (k - 1) * k * (2 * k - 1) / 6
        idx = np.arange(_DIM)
        cov[:, idx, idx] = a + k * k * b + k * qp + s2 * qv
        cov[:, idx, idx + _DIM] = cov[:, idx + _DIM, idx] = k * b + s1 * qv
        cov[:, idx + _DIM, idx + _DIM] = b + k * qv
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance every track one frame: position += velocity; covariance F P F^T + Q."""
        if len(mean) == 0:
            return mean, cov
        scale = self._scale(mean)
        q = np.concatenate([self.std_position * scale, self.std_velocity * scale], axis=1) ** 2
        new_mean = mean.copy()
        new_mean[:, :_DIM] += mean[:, _DIM:]
        # F = [[I, I], [0, I]]: F P F^T written out in blocks instead of two (8x8) matmuls per track
        p11, p12 = cov[:, :_DIM, :_DIM], cov[:, :_DIM, _DIM:]
        p21, p22 = cov[:, _DIM:, :_DIM], cov[:, _DIM:, _DIM:]
        top = np.concatenate([p11 + p12 + p21 + p22, p12 + p22], axis=2)
        bottom = np.concatenate([p21 + p22, p22], axis=2)
        new_cov = np.concatenate([top, bottom], axis=1)
        idx = np.arange(2 * _DIM)
        new_cov[:, idx, idx] += q
        return new_mean, new_cov

    def update(self, mean: np.ndarray, cov: np.ndarray, xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Correct tracks (rows of ``mean``/``cov``) with their measured boxes ``xyxy`` (n, 4), row for row."""
        if len(mean) == 0:
            return mean, cov
        z = xyxy_to_boxes(xyxy)
        hp = cov[:, :_DIM, :]  # H P, (n, 4, 8), H = [I 0]
        # K = P H^T S^-1 with S = H P H^T + R diagonal (see _innovation_var), so K^T = (H P) / diag(S)
        gain = (hp / self._innovation_var(mean, cov)[:, :, None]).transpose(0, 2, 1)
        innovation = z - mean[:, :_DIM]
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = cov - gain @ hp
        # keep it symmetric against rounding drift over thousands of frames
        new_cov = (new_cov + new_cov.transpose(0, 2, 1)) / 2
        return new_mean, new_cov

    def _innovation_var(self, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
        """(n, 4) variances of each track's predicted measurement: the diagonal of ``H P H^T + R``.

        The filter never couples the four measured values (the transition, the noises and every
        initial covariance treat each value and its velocity alone), so this matrix is diagonal and
        the Mahalanobis distance needs no inverse.
        """
        idx = np.arange(_DIM)
        return cov[:, idx, idx] + (self.std_position * self._scale(mean)) ** 2

    def paired_distance(self, mean: np.ndarray, cov: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """(n,) squared Mahalanobis distance of box ``xyxy[i]`` from track i's predicted box, row for row.

        The diagonal of :meth:`gating_distance` without computing the other n^2 - n pairs.
        """
        diff = xyxy_to_boxes(xyxy) - mean[:, :_DIM]
        return (diff * diff / self._innovation_var(mean, cov)).sum(axis=1)

    def gating_distance(self, mean: np.ndarray, cov: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
        """(m, n) squared Mahalanobis distances of boxes ``xyxy`` (m, 4) from the n tracks' predicted boxes.

        Under the filter's model the distance of a track's true box follows a chi-square law with
        four degrees of freedom (95 % below :data:`CHI2_95`).
        """
        z = xyxy_to_boxes(xyxy)
        if len(z) == 0 or len(mean) == 0:
            return np.zeros((len(z), len(mean)))
        diff = z[:, None, :] - mean[None, :, :_DIM]  # (m, n, 4)
        return (diff * diff / self._innovation_var(mean, cov)[None]).sum(axis=2)
