"""Transform: model-input boxes -> source pixels in one place (official scale_boxes + decoder downscale)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from streamdet.pipeline.postprocess.postprocessor import scale_boxes
from streamdet.pipeline.preprocess.letterbox import batch_input_shape
from streamdet.pipeline.types import Transform

FRAMES = [(720, 1280), (1080, 1920), (1057, 1920), (377, 500), (500, 377), (480, 640)]


def _boxes(input_hw: tuple[int, int], n: int = 200, seed: int = 0) -> np.ndarray:
    """Random xyxy boxes, partly outside the input (so clipping matters), with score and class columns."""
    rng = np.random.default_rng(seed)
    h, w = input_hw
    xy = rng.uniform([-20, -20], [w + 20, h + 20], (n, 2))
    wh = rng.uniform(1, max(h, w) / 2, (n, 2))
    extra = rng.uniform(0, 1, (n, 2))
    return np.concatenate([xy, xy + wh, extra], axis=1)


@pytest.mark.parametrize("frame_hw", FRAMES)
@pytest.mark.parametrize("kind", ["np64", "np32", "torch32", "torch64"])
def test_identity_equals_scale_boxes_exactly(frame_hw: tuple[int, int], kind: str) -> None:
    input_hw = batch_input_shape([frame_hw], 640, 32)
    base = _boxes(input_hw, seed=frame_hw[0])
    make = {
        "np64": lambda: base.copy(),
        "np32": lambda: base.astype(np.float32),
        "torch32": lambda: torch.from_numpy(base).float(),
        "torch64": lambda: torch.from_numpy(base.copy()),
    }[kind]
    expected = scale_boxes(input_hw, make(), frame_hw)
    boxes = make()
    got = Transform.identity(frame_hw, input_hw).inverse(boxes)
    assert got is boxes  # in place
    if isinstance(got, torch.Tensor):
        assert got.dtype == expected.dtype and torch.equal(got, expected)
    else:
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    assert (got[:, 4:] == make()[:, 4:]).all()  # score and class untouched


def test_identity_in_a_wider_batch_shape() -> None:
    frame_hw, input_hw = (720, 1280), (640, 640)  # frame in a batch with a taller frame
    boxes = _boxes(input_hw, seed=5)
    expected = scale_boxes(input_hw, boxes.copy(), frame_hw)
    np.testing.assert_array_equal(Transform(frame_hw, frame_hw, input_hw).inverse(boxes), expected)


def test_downscaled_frame_maps_to_source_pixels() -> None:
    src, frame, inp = (1080, 1920), (540, 960), (384, 640)
    t = Transform(src, frame, inp)
    boxes = _boxes(inp, seed=9)
    expected = scale_boxes(inp, boxes.copy(), frame)  # in frame pixels
    expected[:, [0, 2]] *= 2.0
    expected[:, [1, 3]] *= 2.0
    np.testing.assert_allclose(t.inverse(boxes), expected, rtol=0, atol=1e-9)
    assert boxes[:, [0, 2]].max() <= 1920 and boxes[:, [1, 3]].max() <= 1080 and boxes[:, :4].min() >= 0
    # the letterboxed content (12 px borders top and bottom) spans the whole source
    whole = t.inverse(np.array([[0.0, 12.0, 640.0, 372.0]]))
    np.testing.assert_allclose(whole, [[0, 0, 1920, 1080]], atol=1e-9)


def test_anamorphic_downscale_scales_axes_separately() -> None:
    t = Transform((1080, 1440), (540, 960), (384, 640))  # x by 1.5, y by 2
    pts = t.forward(np.array([[144.0, 108.0, 1440.0, 1080.0]]))
    np.testing.assert_allclose(t.inverse(pts.copy()), [[144.0, 108.0, 1440.0, 1080.0]], atol=1e-9)
    pad_w, pad_h = t.pad
    expected = [[96 * t.gain + pad_w, 54 * t.gain + pad_h, 960 * t.gain + pad_w, 540 * t.gain + pad_h]]
    np.testing.assert_allclose(pts, expected, atol=1e-9)


SRC_FRAME = [
    ((1080, 1920), (1080, 1920)),
    ((1080, 1920), (720, 1280)),
    ((2160, 3840), (540, 960)),
    ((1057, 1920), (1057, 1920)),
    ((377, 500), (377, 500)),
]


@pytest.mark.parametrize("src,frame", SRC_FRAME)
def test_inverse_of_forward_is_identity(src: tuple[int, int], frame: tuple[int, int]) -> None:
    inp = batch_input_shape([frame], 640, 32)
    t = Transform(src, frame, inp)
    rng = np.random.default_rng(1)
    xy = rng.uniform([0, 0], [src[1], src[0]], (100, 2))
    boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(1, 300, (100, 2)), [src[1], src[0]])], axis=1)
    fwd = t.forward(boxes.copy())
    assert fwd[:, [0, 2]].min() >= -1e-9 and fwd[:, [0, 2]].max() <= inp[1] + 1e-9
    assert fwd[:, [1, 3]].min() >= -1e-9 and fwd[:, [1, 3]].max() <= inp[0] + 1e-9
    np.testing.assert_allclose(t.inverse(fwd.copy()), boxes, rtol=0, atol=1e-6)
    pts = t.forward(xy.copy())  # (n, 2) points
    np.testing.assert_allclose(pts, fwd[:, :2], atol=1e-9)
    tt = torch.from_numpy(boxes).float()
    torch.testing.assert_close(t.inverse(t.forward(tt.clone())), tt, rtol=0, atol=0.01)


def test_gain_and_pad_are_recomputed_from_shapes() -> None:
    t = Transform.identity((1057, 1920), (352, 640))
    assert t.gain == min(352 / 1057, 640 / 1920)  # official scale_boxes, not the letterbox's own 1/3
    assert t.pad == ((640 - 1920 * t.gain) / 2, (352 - 1057 * t.gain) / 2)


def test_validation_and_immutability() -> None:
    t = Transform([1080, 1920], np.array([540, 960]), (384.0, 640.0))  # normalised to int tuples
    assert t.src_hw == (1080, 1920) and t.frame_hw == (540, 960) and t.input_hw == (384, 640)
    assert all(isinstance(v, int) for hw in (t.src_hw, t.frame_hw, t.input_hw) for v in hw)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.src_hw = (1, 1)  # type: ignore[misc]
    with pytest.raises(ValueError):
        Transform((0, 10), (10, 10), (10, 10))
    with pytest.raises(ValueError):
        Transform((10, 10), (10, 10), (10, -1))


def test_transform_module_does_not_import_torch() -> None:
    code = "import sys, streamdet.pipeline.types; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
