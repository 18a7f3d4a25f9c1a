"""The look variation: valid ranges, backgrounds within the spec, hard edges, H.264 round trip."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.datasets import shapes
from streamdet.datasets.shapes_look import TEXTURES, VARIATIONS, Variation, h264_roundtrip, varied_background

W, H = 160, 120


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"noise_grid": (64.0, 16.0)}, "noise_grid"),
        ({"noise_grid": (1.0, 16.0)}, "noise_grid"),
        ({"textures": ("plasma",)}, "textures"),
        ({"textures": ()}, "textures"),
        ({"gradient": (0.0, 1.5)}, "gradient"),
        ({"tint_saturation": (0.0, 2.0)}, "tint_saturation"),
        ({"contrast": (-0.1, 1.0)}, "contrast"),
        ({"brightness": (40.0, 200.0)}, "brightness"),
        ({"antialias": 1.5}, "antialias"),
        ({"noise_sigma": (-1.0, 2.0)}, "noise_sigma"),
        ({"crf": (30, 20)}, "crf"),
    ],
)
def test_variation_rejects_bad_ranges(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Variation(**kwargs)


def test_heldout_preset_draws_a_texture_training_never_sees() -> None:
    assert set(VARIATIONS["heldout"].textures).isdisjoint(VARIATIONS["wide"].textures)
    assert set(VARIATIONS["wide"].textures) | set(VARIATIONS["heldout"].textures) == set(TEXTURES)


@pytest.mark.parametrize("texture", TEXTURES)
def test_varied_background_stays_within_the_spec(texture: str) -> None:
    look = Variation(textures=(texture,), gradient=(0.0, 0.8), tint_saturation=(0.0, 1.0), contrast=(0.5, 1.0))
    rng = np.random.default_rng(5)
    for _ in range(20):
        bg = varied_background(W, H, rng, look)
        assert bg.shape == (H, W, 3) and bg.dtype == np.float32
        assert 60 - 1e-3 <= bg.mean() <= 200 + 1e-3  # mean brightness of all B, G, R values
        assert bg.min() > -0.01 and bg.max() < 255.01  # nothing clips
        assert bg.std() > 0
        # smooth: neighbouring pixels differ far less than the texture's range
        step = np.abs(np.diff(bg.mean(axis=2), axis=1)).max()
        assert step < 0.5 * (bg.mean(axis=2).max() - bg.mean(axis=2).min())


def test_hard_edges_use_only_the_object_and_background_colours() -> None:
    bg = np.full((H, W, 3), (30.0, 60.0, 90.0), np.float32)
    s = shapes.Shape(cls=2, cx=80.3, cy=55.7, diameter=33.3, angle=17.0, color=(200.4, 10.2, 120.6))
    soft, hard = shapes.render_frame(bg, [s]), shapes.render_frame(bg, [s], antialias=False)
    colours = {tuple(p) for p in hard.image.reshape(-1, 3).tolist()}
    assert colours == {(30, 60, 90), (200, 10, 121)}
    assert len({tuple(p) for p in soft.image.reshape(-1, 3).tolist()}) > 2
    assert np.array_equal(hard.boxes, soft.boxes) and np.array_equal(hard.visible, soft.visible)
    x0, y0, alpha = shapes.shape_alpha(s, W, H)
    covered = np.zeros((H, W), bool)
    covered[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha > 0.5
    assert (hard.image[covered] == [200, 10, 121]).all() and (hard.image[~covered] == [30, 60, 90]).all()


def test_h264_roundtrip_keeps_the_picture_and_adds_codec_loss() -> None:
    image = shapes.render_image(3, 0, [(W, H)], Variation()).image
    low = h264_roundtrip(image, 20)
    high = h264_roundtrip(image, 40)
    assert low.shape == image.shape and low.dtype == np.uint8
    err_low = np.abs(low.astype(int) - image.astype(int)).mean()
    err_high = np.abs(high.astype(int) - image.astype(int)).mean()
    assert 0 < err_low < 6  # lossy, but the same picture
    assert err_high > err_low  # a higher CRF loses more
    with pytest.raises(ValueError, match="even"):
        h264_roundtrip(image[:, :-1], 23)


def test_varied_images_are_deterministic_and_compressed_when_asked() -> None:
    look = VARIATIONS["wide"]
    a = shapes.render_image(9, 4, [(W, H)], look)
    b = shapes.render_image(9, 4, [(W, H)], look)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    plain = Variation(**{**look.__dict__, "crf": None})
    raw = shapes.render_image(9, 4, [(W, H)], plain)
    assert np.array_equal(raw.boxes, a.boxes)  # compression draws after the scene: same objects
    assert not np.array_equal(raw.image, a.image)
    assert np.abs(raw.image.astype(int) - a.image.astype(int)).mean() < 6


def test_fixed_generator_is_unchanged_by_the_variation_code() -> None:
    # Without a variation the draws are those of the original generator: the clip's background is
    # make_background's output for the clip's seed sequence, bit for bit.
    clip = shapes.ShapesClip(W, H, 4, num_frames=2)
    rng = np.random.default_rng(np.random.SeedSequence(4, spawn_key=(0,)))
    assert np.array_equal(clip.background, shapes.make_background(W, H, rng))
    assert clip.antialias
