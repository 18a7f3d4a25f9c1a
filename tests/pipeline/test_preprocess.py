"""Letterbox / batch preprocessing against the official letterbox fixtures (bit-exact)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from streamdet.pipeline.preprocess import (
    batch_input_shape,
    letterbox,
    letterbox_params,
    preprocess_batch,
    to_model_input,
)

IMAGES = ["img1_1280x720", "img3_500x377", "img4_377x500"]
MODES = {"square": False, "auto": True}


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def images(fixtures_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for name in IMAGES:
        img = cv2.imread(str(fixtures_dir / "letterbox" / f"{name}.png"), cv2.IMREAD_COLOR)
        assert img is not None, name
        out[name] = img
    return out


def _ref(fixtures_dir: Path, name: str) -> np.lib.npyio.NpzFile:
    return np.load(fixtures_dir / "letterbox" / f"letterbox_{name}.npz")


def _to_hwc_bgr(chw_rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw_rgb[::-1].transpose(1, 2, 0))


def _content(img: np.ndarray, pad: tuple[float, float], unpad_hw: tuple[int, int]) -> np.ndarray:
    top, left = int(round(pad[1] - 0.1)), int(round(pad[0] - 0.1))
    return img[top : top + unpad_hw[0], left : left + unpad_hw[1]]


@pytest.mark.parametrize("name", IMAGES)
def test_source_images_decode_as_reference(fixtures_dir: Path, images: dict[str, np.ndarray], name: str) -> None:
    z = _ref(fixtures_dir, name)
    assert tuple(images[name].shape[:2]) == tuple(z["src_shape_hw"])
    assert _sha(images[name]) == str(z["src_sha256"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", IMAGES)
def test_letterbox_bit_exact(fixtures_dir: Path, images: dict[str, np.ndarray], name: str, mode: str) -> None:
    z = _ref(fixtures_dir, name)
    out, ratio, pad = letterbox(images[name], 640, auto=MODES[mode], stride=32)
    assert out.shape == tuple(z[f"out_{mode}_shape"])
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[z[f"out_{mode}_rows"]], z[f"out_{mode}_sub"])
    assert _sha(out) == str(z[f"out_{mode}_sha256"])
    assert ratio == tuple(z[f"ratio_{mode}"])
    assert pad == tuple(z[f"pad_{mode}"])
    assert all(isinstance(v, float) for v in (*ratio, *pad))


@pytest.mark.parametrize("name", IMAGES)
def test_letterbox_tuple_shape_and_modes_share_content(images: dict[str, np.ndarray], name: str) -> None:
    img = images[name]
    sq, r_sq, pad_sq = letterbox(img, (640, 640), auto=False)
    assert _sha(sq) == _sha(letterbox(img, 640, auto=False)[0])
    au, r_au, pad_au = letterbox(img, 640, auto=True)
    assert r_sq == r_au
    unpad = (round(img.shape[0] * r_sq[0]), round(img.shape[1] * r_sq[0]))
    np.testing.assert_array_equal(_content(sq, pad_sq, unpad), _content(au, pad_au, unpad))


def test_letterbox_rect_target_and_no_scaleup(images: dict[str, np.ndarray]) -> None:
    img = images["img3_500x377"]  # h=377, w=500
    out, ratio, pad = letterbox(img, (480, 800), auto=False)
    r = min(480 / 377, 800 / 500)
    assert ratio == (r, r)
    assert out.shape == (480, 800, 3)
    unpad_w, unpad_h = round(500 * r), round(377 * r)
    assert pad == ((800 - unpad_w) / 2, (480 - unpad_h) / 2)

    out, ratio, pad = letterbox(img, 640, auto=False, scaleup=False)
    assert ratio == (1.0, 1.0)
    assert pad == (70.0, 131.5)
    assert out.shape == (640, 640, 3)
    np.testing.assert_array_equal(out[131 : 131 + 377, 70 : 70 + 500], img)  # no resize at all
    assert (out[:131] == 114).all() and (out[131 + 377 :] == 114).all()
    assert (out[:, :70] == 114).all() and (out[:, 570:] == 114).all()


def test_letterbox_border_colour_and_rounding() -> None:
    img = np.full((10, 21, 3), 7, np.uint8)  # already at width 21: no resize, dh = 5.5
    out, ratio, pad = letterbox(img, (21, 21), color=(1, 2, 3), auto=False)
    assert ratio == (1.0, 1.0) and pad == (0.0, 5.5)
    assert out.shape == (21, 21, 3)
    assert (out[:5] == (1, 2, 3)).all() and (out[5:15] == 7).all() and (out[15:] == (1, 2, 3)).all()


def test_batch_input_shape(images: dict[str, np.ndarray]) -> None:
    shapes = {n: images[n].shape[:2] for n in IMAGES}
    assert batch_input_shape([shapes["img1_1280x720"]], 640, 32) == (384, 640)
    assert batch_input_shape([shapes["img3_500x377"]], 640, 32) == (512, 640)
    assert batch_input_shape([shapes["img4_377x500"]], 640, 32) == (640, 512)
    assert batch_input_shape([shapes["img1_1280x720"], shapes["img3_500x377"]], 640, 32) == (512, 640)
    assert batch_input_shape(list(shapes.values()), 640, 32) == (640, 640)
    assert batch_input_shape([(1080, 1920)], 640, 32) == (384, 640)
    assert batch_input_shape([(1080, 1920)], 1280, 64) == (768, 1280)
    with pytest.raises(ValueError):
        batch_input_shape([], 640, 32)


def test_preprocess_batch_matches_individual_letterbox(images: dict[str, np.ndarray]) -> None:
    frames = [images[n] for n in IMAGES]
    hw = batch_input_shape([f.shape[:2] for f in frames], 640, 32)
    batch = preprocess_batch(frames, hw)
    assert batch.shape == (3, 3, *hw) and batch.dtype == np.uint8 and batch.flags.c_contiguous
    for i, frame in enumerate(frames):
        alone, ratio, pad_alone = letterbox(frame, 640, auto=True, stride=32)
        r, pad = letterbox_params(frame.shape[:2], hw)
        assert r == ratio[0]  # the claim: same ratio in the batch as alone
        unpad = (round(frame.shape[0] * r), round(frame.shape[1] * r))
        got = _to_hwc_bgr(batch[i])
        np.testing.assert_array_equal(_content(got, pad, unpad), _content(alone, pad_alone, unpad))
        # and the whole padded image is exactly letterbox(auto=False) into the common shape
        assert _sha(got) == _sha(letterbox(frame, hw, auto=False)[0])
        mask = np.ones(hw, bool)
        top, left = int(round(pad[1] - 0.1)), int(round(pad[0] - 0.1))
        mask[top : top + unpad[0], left : left + unpad[1]] = False
        assert (got[mask] == 114).all()


@pytest.mark.parametrize("name", IMAGES)
def test_single_frame_batch_is_official_auto_letterbox(images: dict[str, np.ndarray], name: str) -> None:
    img = images[name]
    batch = preprocess_batch([img], batch_input_shape([img.shape[:2]], 640, 32))
    expected = letterbox(img, 640, auto=True)[0]
    assert _sha(_to_hwc_bgr(batch[0])) == _sha(expected)
    np.testing.assert_array_equal(batch[0], expected[..., ::-1].transpose(2, 0, 1))  # RGB, CHW


def _sizes() -> list[tuple[int, int]]:
    rng = np.random.default_rng(0)
    common = [(1080, 1920), (720, 1280), (480, 640), (1944, 2592), (1057, 1920), (377, 500), (1, 1), (3000, 7)]
    return common + [tuple(int(v) for v in rng.integers(1, 2500, 2)) for _ in range(400)]


def test_batch_ratio_claim_holds_for_many_shapes() -> None:
    sizes = _sizes()
    rng = np.random.default_rng(1)
    for img_size, stride in ((640, 32), (1280, 64), (320, 32)):
        for k in range(len(sizes)):
            group = [sizes[k]] + [sizes[int(j)] for j in rng.integers(0, len(sizes), int(rng.integers(0, 3)))]
            hw = batch_input_shape(group, img_size, stride)
            assert max(hw) == img_size
            for h, w in group:
                _, ratio, _ = letterbox(np.zeros((h, w, 3), np.uint8), img_size, auto=True, stride=stride)
                r, (pad_w, pad_h) = letterbox_params((h, w), hw)
                assert r == ratio[0], ((h, w), hw)
                uw, uh = round(w * r), round(h * r)
                assert uw <= hw[1] and uh <= hw[0]
                assert (pad_w, pad_h) == ((hw[1] - uw) / 2, (hw[0] - uh) / 2)


def test_rounding_corner_case_keeps_own_ratio() -> None:
    # 1920x1057 at 640: r = 1/3 -> 640x352 (352 = 11*32, rounded down from 352.33), so the auto
    # shape is exactly 352x640 and plain letterbox(auto=False) into it picks r' = 352/1057 < 1/3.
    img = np.random.default_rng(2).integers(0, 256, (1057, 1920, 3), dtype=np.uint8)
    hw = batch_input_shape([img.shape[:2]], 640, 32)
    assert hw == (352, 640)
    alone, ratio, _ = letterbox(img, 640, auto=True)
    naive, naive_ratio, _ = letterbox(img, hw, auto=False)
    assert naive_ratio[0] < ratio[0] and _sha(naive) != _sha(alone)  # why preprocess_batch is careful
    batch = preprocess_batch([img], hw)
    assert _sha(_to_hwc_bgr(batch[0])) == _sha(alone)
    assert letterbox_params(img.shape[:2], hw) == (ratio[0], (0.0, 0.0))
    # in a taller common shape it is centred, with the same resized pixels
    batch2 = preprocess_batch([img, np.zeros((640, 480, 3), np.uint8)], (640, 640))
    r, (pad_w, pad_h) = letterbox_params(img.shape[:2], (640, 640))
    assert r == ratio[0] and (pad_w, pad_h) == (0.0, 144.0)
    np.testing.assert_array_equal(_to_hwc_bgr(batch2[0])[144:496], alone)


def test_preprocess_batch_validates_and_handles_empty() -> None:
    assert preprocess_batch([], (64, 64)).shape == (0, 3, 64, 64)
    with pytest.raises(ValueError):
        preprocess_batch([np.zeros((10, 10), np.uint8)], (64, 64))
    with pytest.raises(ValueError):
        preprocess_batch([np.zeros((10, 10, 3), np.float32)], (64, 64))
    with pytest.raises(ValueError):
        preprocess_batch([np.zeros((10, 10, 4), np.uint8)], (64, 64))


def test_preprocess_batch_accepts_non_contiguous_frames(images: dict[str, np.ndarray]) -> None:
    img = images["img3_500x377"]
    view = img[::-1]  # negative stride
    hw = batch_input_shape([view.shape[:2]], 640, 32)
    expected = letterbox(np.ascontiguousarray(view), 640, auto=True)[0]
    assert _sha(_to_hwc_bgr(preprocess_batch([view], hw)[0])) == _sha(expected)


def test_to_model_input() -> None:
    batch = np.random.default_rng(3).integers(0, 256, (2, 3, 8, 16), dtype=np.uint8)
    before = batch.copy()
    x = to_model_input(batch, "cpu")
    assert x.dtype == torch.float32 and x.shape == (2, 3, 8, 16) and x.device.type == "cpu"
    assert torch.equal(x, torch.from_numpy(before).float() / 255)
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    np.testing.assert_array_equal(batch, before)  # input untouched
    xh = to_model_input(torch.from_numpy(batch), torch.device("cpu"), half=True)
    assert xh.dtype == torch.float16
    assert torch.equal(xh, torch.from_numpy(before).half() / 255)


def test_preprocess_module_does_not_import_torch() -> None:
    code = "import sys, streamdet.pipeline.preprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
