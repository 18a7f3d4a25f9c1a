"""Augmentation keeps boxes on their pixels: every label still frames its coloured rectangle."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.training.augment import AugmentConfig, flip, letterbox_fit, random_affine
from streamdet.training.data import (
    ImageCache,
    ScaleBatchSampler,
    ShapesTrainDataset,
    multi_scale_sizes,
    scaled_canvas,
)

# Distinct saturated colours, one per drawn rectangle (BGR).
COLOURS = [
    (0, 0, 255),
    (0, 255, 0),
    (255, 0, 0),
    (0, 255, 255),
    (255, 0, 255),
    (255, 255, 0),
    (0, 128, 255),
    (255, 128, 0),
]


def _image(k: int) -> tuple[np.ndarray, np.ndarray]:
    """A 240x135 grey image with two filled rectangles of unique colours; labels [cls, x1, y1, x2, y2]."""
    img = np.full((135, 240, 3), 90, np.uint8)
    rects = [(20 + 7 * k, 15 + 3 * k, 90 + 5 * k, 60 + 4 * k), (140 - 4 * k, 70 - 2 * k, 200, 120)]
    labels = []
    for j, (x1, y1, x2, y2) in enumerate(rects):
        img[y1:y2, x1:x2] = COLOURS[2 * k + j]
        labels.append([2 * k + j, x1, y1, x2, y2])  # class = colour index, to find the colour back
    return img, np.asarray(labels, np.float32)


def _colour_mask(img: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.abs(img.astype(int) - np.asarray(colour)).max(axis=2) < 60


def _check(img: np.ndarray, labels: np.ndarray) -> None:
    """Each box is filled with its colour and the colour's extent near the box matches the box."""
    h, w = img.shape[:2]
    assert len(labels) > 0
    for cls, x1, y1, x2, y2 in labels:
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        mask = _colour_mask(img, COLOURS[int(cls)])
        inner = mask[int(np.ceil(y1)) : int(y2), int(np.ceil(x1)) : int(x2)]
        assert inner.size and inner.mean() > 0.85, f"box {x1, y1, x2, y2} is not on its rectangle"
        # Tight: within a 4-px margin, the colour's extent matches the box to about a pixel.
        ya, yb, xa, xb = max(int(y1) - 4, 0), min(int(y2) + 5, h), max(int(x1) - 4, 0), min(int(x2) + 5, w)
        ys, xs = np.nonzero(mask[ya:yb, xa:xb])
        assert xs.min() + xa == pytest.approx(x1, abs=1.5) and xs.max() + xa + 1 == pytest.approx(x2, abs=1.5)
        assert ys.min() + ya == pytest.approx(y1, abs=1.5) and ys.max() + ya + 1 == pytest.approx(y2, abs=1.5)


def test_flips_move_boxes_with_pixels() -> None:
    img, lab = _image(0)
    for horizontal in (True, False):
        out, out_lab = flip(img, lab, horizontal)
        _check(out, out_lab)


def test_random_affine_and_letterbox_keep_boxes_tight() -> None:
    img, lab = _image(1)
    for seed in range(10):
        rng = np.random.default_rng(seed)
        out, out_lab = random_affine(img, lab, (160, 256), rng, scale=0.4, translate=0.1, base_scale=1.05)
        assert out.shape == (160, 256, 3)
        _check(out, out_lab)
    out, out_lab = letterbox_fit(img, lab, (192, 256))
    _check(out, out_lab)


def test_clipped_boxes_are_cut_to_the_canvas_or_dropped() -> None:
    img, lab = _image(2)
    rng = np.random.default_rng(0)
    out, out_lab = random_affine(img, lab, (100, 100), rng, scale=0.0, translate=0.0, base_scale=1.6)
    for _, x1, y1, x2, y2 in out_lab:
        assert 0 <= x1 < x2 <= 100 and 0 <= y1 < y2 <= 100


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_dataset_samples_keep_labels_on_their_shapes(mosaic: float) -> None:
    pairs = [_image(k) for k in range(4)]
    cache = ImageCache(images=[p[0] for p in pairs], labels=[p[1] for p in pairs], source_shapes=[(135, 240)] * 4)
    aug = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, mosaic=mosaic, scale=0.3, translate=0.1)
    ds = ShapesTrainDataset(cache, (160, 256), aug, seed=3)
    n_checked = 0
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            img, lab = ds.sample(i)
            assert img.shape == (160, 256, 3)
            if len(lab):
                _check(img, lab)
                n_checked += len(lab)
            # The tensor form is the same boxes, normalised xywh.
            chw, t = ds[i]
            assert chw.shape == (3, 160, 256) and t.shape == (len(lab), 6)
            if len(lab):
                assert np.allclose(t[:, 2].numpy() * 256, (lab[:, 1] + lab[:, 3]) / 2, atol=1e-3)
    assert n_checked > 10
    # A sample is a pure function of (seed, epoch, index).
    a, b = ds.sample(1), ds.sample(1)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_hsv_keeps_geometry() -> None:
    img0, lab0 = _image(0)
    cache = ImageCache(images=[img0], labels=[lab0], source_shapes=[(135, 240)])
    ds = ShapesTrainDataset(cache, (160, 256), AugmentConfig(mosaic=0.0, fliplr=0.0, flipud=0.0), seed=1)
    for epoch in range(4):
        ds.set_epoch(epoch)
        img, lab = ds.sample(0)
        i16 = img.astype(np.int16)
        saturated = (i16.max(axis=2) - i16.min(axis=2)) > 30  # the grey background never is
        assert saturated.mean() < 0.5
        for _, x1, y1, x2, y2 in lab:
            inner = saturated[int(np.ceil(y1)) + 1 : int(y2) - 1, int(np.ceil(x1)) + 1 : int(x2) - 1]
            assert inner.mean() > 0.95  # the (recoloured) rectangle is where its box says


@pytest.mark.parametrize("mosaic", [0.0, 1.0])
def test_multi_scale_samples_keep_labels_and_object_scale(mosaic: float) -> None:
    pairs = [_image(k) for k in range(4)]
    cache = ImageCache(images=[p[0] for p in pairs], labels=[p[1] for p in pairs], source_shapes=[(135, 240)] * 4)
    aug = AugmentConfig(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, fliplr=0.0, flipud=0.0, mosaic=mosaic, scale=0.0,
                        translate=0.0)  # fmt: skip
    ds = ShapesTrainDataset(cache, (160, 256), aug, seed=2, stride=32)
    for size, hw in ((128, (96, 128)), (192, (128, 192)), (256, (160, 256))):
        assert scaled_canvas((160, 256), size, 32) == hw
        img, lab = ds.sample(1, size)
        assert img.shape == (*hw, 3)
        _check(img, lab)
        chw, _ = ds[(1, size)]
        assert chw.shape == (3, *hw)
    # Without scale augmentation an object's size follows the input size, mosaic or not: the
    # largest box at input 128 is half the largest at 256 (the two images' rectangles are tiled alike).
    big = ds.sample(0, 256)[1]
    small = ds.sample(0, 128)[1]
    if mosaic == 0.0:
        w_big = (big[:, 3] - big[:, 1]).max()
        w_small = (small[:, 3] - small[:, 1]).max()
        assert w_small == pytest.approx(w_big / 2, abs=1.5)
    else:
        area = lambda lab: ((lab[:, 3] - lab[:, 1]) * (lab[:, 4] - lab[:, 2])).sum()  # noqa: E731
        assert area(small) == pytest.approx(area(big) / 4, rel=0.2)


def test_scale_batch_sampler_draws_one_size_per_batch_deterministically() -> None:
    sizes = multi_scale_sizes(320, 640, 32)
    assert sizes == list(range(320, 641, 32))
    with pytest.raises(ValueError, match="stride"):
        multi_scale_sizes(300, 640, 32)
    sampler = ScaleBatchSampler(50, 8, sizes, seed=4)
    assert len(sampler) == 6
    first = list(sampler)
    assert first == list(sampler)  # same epoch, same batches
    seen = []
    for batch in first:
        assert len(batch) == 8 and len({s for _, s in batch}) == 1 and batch[0][1] in sizes
        seen.extend(i for i, _ in batch)
    assert len(set(seen)) == 48 and set(seen) <= set(range(50))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    assert len({b[0][1] for b in first + second}) > 1  # sizes vary between batches
    assert len(ScaleBatchSampler(50, 8, sizes, drop_last=False)) == 7
