"""Training augmentation on uint8 BGR images with pixel boxes [cls, x1, y1, x2, y2].

Every function takes an explicit ``numpy.random.Generator`` so that a sample is a pure function of
(seed, epoch, index), whichever process draws it. Geometric transforms move the boxes with the
pixels: boxes are transformed by their corners (exact for scale + translation, which is all we
use), clipped to the canvas, and dropped when too little of them is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

FILL = 114  # letterbox grey, as at inference


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths (names as in YOLOv5 hyp files)."""

    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    translate: float = 0.1
    scale: float = 0.25
    fliplr: float = 0.5
    flipud: float = 0.5
    mosaic: float = 0.5


def augment_hsv(img: np.ndarray, rng: np.random.Generator, hgain: float, sgain: float, vgain: float) -> None:
    """Random hue/saturation/value gains, in place (lookup tables on the HSV image)."""
    if not (hgain or sgain or vgain):
        return
    r = rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=r.dtype)
    lut_hue = ((x * r[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * r[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * r[2], 0, 255).astype(np.uint8)
    im_hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    cv2.cvtColor(im_hsv, cv2.COLOR_HSV2BGR, dst=img)


def flip(img: np.ndarray, labels: np.ndarray, horizontal: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mirror image and boxes; box edges are pixel edges, so the flip is exact."""
    labels = labels.copy()
    if horizontal:
        w = img.shape[1]
        img = np.ascontiguousarray(img[:, ::-1])
        labels[:, [1, 3]] = w - labels[:, [3, 1]]
    else:
        h = img.shape[0]
        img = np.ascontiguousarray(img[::-1])
        labels[:, [2, 4]] = h - labels[:, [4, 2]]
    return img, labels


def box_candidates(
    before: np.ndarray, after: np.ndarray, wh_thr: float = 2.0, area_thr: float = 0.25, ar_thr: float = 20.0
) -> np.ndarray:
    """Keep boxes (4, n) that stay larger than ``wh_thr`` px with enough of their scaled area left."""
    w1, h1 = before[2] - before[0], before[3] - before[1]
    w2, h2 = after[2] - after[0], after[3] - after[1]
    ar = np.maximum(w2 / (h2 + 1e-16), h2 / (w2 + 1e-16))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + 1e-16) > area_thr) & (ar < ar_thr)


def random_affine(
    img: np.ndarray,
    labels: np.ndarray,
    out_hw: tuple[int, int],
    rng: np.random.Generator,
    scale: float = 0.25,
    translate: float = 0.1,
    base_scale: float = 1.0,
    center: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale about ``center`` (default: image centre) then translate into an ``out_hw`` canvas.

    The scale is ``base_scale * U(1 - scale, 1 + scale)``; the translation is ``U(-t, t)`` of the
    output size around the canvas centre. No rotation or shear, so transformed boxes stay tight.
    """
    h, w = out_hw
    cx, cy = center if center is not None else (img.shape[1] / 2, img.shape[0] / 2)
    s = base_scale * rng.uniform(1 - scale, 1 + scale)
    tx = rng.uniform(0.5 - translate, 0.5 + translate) * w
    ty = rng.uniform(0.5 - translate, 0.5 + translate) * h
    m = np.array([[s, 0, tx - s * cx], [0, s, ty - s * cy]], dtype=np.float64)
    out = cv2.warpAffine(img, m, dsize=(w, h), flags=cv2.INTER_LINEAR, borderValue=(FILL, FILL, FILL))
    if len(labels):
        before = labels[:, 1:5].T.copy()
        xy = labels[:, 1:5].copy()
        xy[:, [0, 2]] = xy[:, [0, 2]] * s + m[0, 2]
        xy[:, [1, 3]] = xy[:, [1, 3]] * s + m[1, 2]
        xy[:, [0, 2]] = xy[:, [0, 2]].clip(0, w)
        xy[:, [1, 3]] = xy[:, [1, 3]].clip(0, h)
        keep = box_candidates(before * s, xy.T)
        labels = np.concatenate((labels[keep, :1], xy[keep]), 1)
    return out, labels


def mosaic4(
    imgs: Sequence[np.ndarray], labels: Sequence[np.ndarray], out_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Tile four images around a random centre of a (2H, 2W) canvas; boxes follow their image."""
    h, w = out_hw
    canvas = np.full((2 * h, 2 * w, 3), FILL, dtype=np.uint8)
    xc = int(rng.uniform(0.5 * w, 1.5 * w))
    yc = int(rng.uniform(0.5 * h, 1.5 * h))
    out_labels = []
    for k, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
        ih, iw = img.shape[:2]
        if k == 0:  # top left
            x1a, y1a, x2a, y2a = max(xc - iw, 0), max(yc - ih, 0), xc, yc
            x1b, y1b, x2b, y2b = iw - (x2a - x1a), ih - (y2a - y1a), iw, ih
        elif k == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - ih, 0), min(xc + iw, 2 * w), yc
            x1b, y1b, x2b, y2b = 0, ih - (y2a - y1a), x2a - x1a, ih
        elif k == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - iw, 0), yc, xc, min(2 * h, yc + ih)
            x1b, y1b, x2b, y2b = iw - (x2a - x1a), 0, iw, y2a - y1a
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + iw, 2 * w), min(2 * h, yc + ih)
            x1b, y1b, x2b, y2b = 0, 0, x2a - x1a, y2a - y1a
        canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
        if len(lab):
            lab = lab.copy()
            dx, dy = x1a - x1b, y1a - y1b
            lab[:, [1, 3]] += dx
            lab[:, [2, 4]] += dy
            # Keep only what lies inside this tile; a box cut by the tile edge keeps its visible part.
            before = lab[:, 1:5].T.copy()
            lab[:, [1, 3]] = lab[:, [1, 3]].clip(x1a, x2a)
            lab[:, [2, 4]] = lab[:, [2, 4]].clip(y1a, y2a)
            keep = box_candidates(before, lab[:, 1:5].T)
            out_labels.append(lab[keep])
    lab = np.concatenate(out_labels, 0) if out_labels else np.zeros((0, 5), np.float32)
    return canvas, lab


def letterbox_fit(img: np.ndarray, labels: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to fit ``out_hw`` (keeping aspect, never enlarging past fit) and pad centred, like inference."""
    h, w = out_hw
    ih, iw = img.shape[:2]
    r = min(h / ih, w / iw)
    nw, nh = round(iw * r), round(ih * r)
    if (nw, nh) != (iw, ih):
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dw, dh = (w - nw) / 2, (h - nh) / 2
    top, left = round(dh - 0.1), round(dw - 0.1)
    out = np.full((h, w, 3), FILL, dtype=np.uint8)
    out[top : top + nh, left : left + nw] = img
    labels = labels.copy()
    if len(labels):
        labels[:, [1, 3]] = labels[:, [1, 3]] * (nw / iw) + left
        labels[:, [2, 4]] = labels[:, [2, 4]] * (nh / ih) + top
    return out, labels
