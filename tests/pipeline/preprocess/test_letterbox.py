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

from streamdet.pipeline.backends.model_input import to_model_input
from streamdet.pipeline.preprocess.letterbox import (
    CpuPreprocessor,
    Preprocessor,
    batch_input_shape,
    letterbox,
    letterbox_params,
    letterbox_yuv420_reference,
    linear_axis_table,
    preprocess_batch,
)
from streamdet.pipeline.stages import PREPROCESSORS
from streamdet.pipeline.types import Image
from tests.pipeline.preprocess.test_colour import random_yuv, yuv_image

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
    # times the float32 reciprocal of 255 (what CUDA computes for / 255 and the kernel writes), not a CPU division
    assert torch.equal(x, torch.from_numpy(before).float() * float(np.float32(1) / np.float32(255)))
    assert torch.allclose(x, torch.from_numpy(before).float() / 255, rtol=1.2e-7, atol=0)
    assert float(x.max()) <= 1.0 and float(x.min()) >= 0.0
    np.testing.assert_array_equal(batch, before)  # input untouched
    xh = to_model_input(torch.from_numpy(batch), torch.device("cpu"), half=True)
    assert xh.dtype == torch.float16
    assert torch.equal(xh, torch.from_numpy(before).half() / 255)


def test_preprocess_module_does_not_import_torch() -> None:
    code = "import sys, streamdet.pipeline.preprocess.letterbox; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- The Preprocessor seam: one parity suite over every implementation --------------------------

IMPLEMENTATIONS = PREPROCESSORS.names()  # every registered preprocessor (a CUDA one joins with the GPU path)

# (source (h, w), model input (H, W)): downscales, exact 2x, no resize, upscales, odd letterbox
# borders, and the rounding corner case of _batch_geometry (frame keeps its own ratio) in 4:2:0 sizes.
GEOMETRIES = [
    ((1080, 1920), (384, 640)),
    ((720, 1280), (384, 640)),  # exact 2x: cv2 switches to INTER_AREA
    ((720, 1280), (256, 416)),
    ((576, 704), (544, 640)),
    ((1080, 1440), (480, 640)),
    ((360, 640), (384, 640)),  # no resize, only borders
    ((240, 320), (480, 640)),  # 2x upscale
    ((96, 130), (416, 416)),  # odd upscale, odd borders
    ((376, 500), (512, 640)),  # odd half-pads (dh = 6.5 etc.)
    ((2, 2), (64, 64)),
    ((1828, 1280), (640, 448)),  # corner case at 640: own ratio 0.350109 > min(640/1828, 448/1280)
    ((1036, 1920), (224, 416)),  # corner case at 416
    ((1084, 1280), (352, 416)),  # corner case at 416
    ((1058, 1920), (384, 640)),  # height 2 mod 4
]
_YUV2BGR = {"yuv420p": cv2.COLOR_YUV2BGR_I420, "nv12": cv2.COLOR_YUV2BGR_NV12}


def _make(name: str) -> Preprocessor:
    if not PREPROCESSORS.available(name):
        pytest.skip(f"{name} preprocessor not available here")
    pre = PREPROCESSORS.resolve(name)()
    assert pre.name == name
    return pre


def _run(pre: Preprocessor, images: list[Image], hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    got = pre(images, hw, out)
    got = got.cpu().numpy() if hasattr(got, "cpu") else got  # a device tensor from a GPU implementation
    assert got.dtype == np.uint8 and got.flags.c_contiguous and got.shape == (len(images), 3, *hw)
    return got


@pytest.fixture(params=IMPLEMENTATIONS)
def pre(request: pytest.FixtureRequest) -> Preprocessor:
    return _make(request.param)


def test_geometries_cover_the_corner_case() -> None:
    for (h, w), hw in GEOMETRIES[-4:-1]:
        assert batch_input_shape([(h, w)], max(hw), 32) == hw
        r, _ = letterbox_params((h, w), hw)
        assert r > min(hw[0] / h, hw[1] / w)  # the naive auto=False ratio would differ


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "nv12"])
@pytest.mark.parametrize("src_hw,hw", GEOMETRIES)
def test_yuv_bt601_limited_equals_todays_bgr_path(pre: Preprocessor, src_hw, hw, pix_fmt: str) -> None:
    data = random_yuv(*src_hw, seed=src_hw[0] + src_hw[1])
    expected = preprocess_batch([cv2.cvtColor(data, _YUV2BGR[pix_fmt])], hw)
    got = _run(pre, [yuv_image(data, pix_fmt)], hw)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", IMAGES)
def test_bgr_images_equal_preprocess_batch(pre: Preprocessor, images: dict[str, np.ndarray], name: str) -> None:
    img = images[name]
    for hw in (batch_input_shape([img.shape[:2]], 640, 32), (640, 640), (256, 416)):
        np.testing.assert_array_equal(_run(pre, [Image.bgr(img)], hw), preprocess_batch([img], hw))
    assert _sha(_to_hwc_bgr(_run(pre, [Image.bgr(img)], batch_input_shape([img.shape[:2]], 640, 32))[0])) == _sha(
        letterbox(img, 640, auto=True)[0]
    )


@pytest.mark.parametrize("matrix,range_", [("bt709", "limited"), ("bt601", "full"), ("bt709", "full")])
@pytest.mark.parametrize("src_hw,hw", GEOMETRIES[:4] + GEOMETRIES[6:8] + GEOMETRIES[-2:])
def test_other_colours_equal_the_reference(pre: Preprocessor, src_hw, hw, matrix: str, range_: str) -> None:
    for pix_fmt in ("yuv420p", "nv12"):
        image = yuv_image(random_yuv(*src_hw, seed=src_hw[1]), pix_fmt, matrix, range_)
        np.testing.assert_array_equal(_run(pre, [image], hw)[0], letterbox_yuv420_reference(image, hw))


def test_mixed_batch_into_reused_buffer(pre: Preprocessor, images: dict[str, np.ndarray]) -> None:
    batch = [
        Image.bgr(images["img3_500x377"]),
        yuv_image(random_yuv(720, 1280, 1), "yuv420p"),
        yuv_image(random_yuv(1080, 1920, 2), "nv12", "bt709", "limited"),
        yuv_image(random_yuv(480, 640, 3), "yuv420p", "bt601", "full"),
    ]
    hw = batch_input_shape([im.hw for im in batch], 640, 32)
    out = np.full((6, 3, *hw), 9, np.uint8)
    got = pre(batch, hw, out)
    if isinstance(got, np.ndarray):  # CPU implementations write into the caller's buffer
        assert np.shares_memory(got, out) and got.shape == (4, 3, *hw)
        assert (out[4:] == 9).all()
    got = got.cpu().numpy() if hasattr(got, "cpu") else got
    for i, image in enumerate(batch):
        np.testing.assert_array_equal(got[i], letterbox_yuv420_reference(image, hw))
        np.testing.assert_array_equal(got[i], _run(pre, [image], hw)[0])
    assert _run(pre, [], hw).shape == (0, 3, *hw)


def test_bad_out_buffers_are_rejected(pre: Preprocessor) -> None:
    image = [yuv_image(random_yuv(64, 64), "yuv420p")]
    for bad in (
        np.empty((1, 3, 64, 64), np.float32),
        np.empty((1, 3, 64, 63), np.uint8),
        np.empty((0, 3, 64, 64), np.uint8),
        np.empty((1, 64, 64, 3), np.uint8),
        np.empty((1, 3, 64, 128), np.uint8)[..., ::2],
    ):
        with pytest.raises(ValueError):
            pre(image, (64, 64), bad)
    with pytest.raises(ValueError):
        pre(image, (0, 64))


# --- The integer reference of the fused operation, and its tables ----------------------------------


def test_reference_matches_cpu_on_random_geometries() -> None:
    rng = np.random.default_rng(7)
    cpu = CpuPreprocessor()
    for k in range(40):
        h, w = (int(v) * 2 for v in rng.integers(1, 500, 2))
        hw = (int(rng.integers(8, 400)), int(rng.integers(8, 400))) if k % 2 else batch_input_shape([(h, w)], 320, 32)
        matrix, range_ = [("bt601", "limited"), ("bt709", "full")][k % 4 == 3]
        image = yuv_image(random_yuv(h, w, seed=k), ("yuv420p", "nv12")[k % 3 == 0], matrix, range_)
        np.testing.assert_array_equal(letterbox_yuv420_reference(image, hw), cpu([image], hw)[0], err_msg=f"{(h, w)}")


def test_reference_on_bgr_corner_case_1920x1057() -> None:
    img = np.random.default_rng(2).integers(0, 256, (1057, 1920, 3), dtype=np.uint8)
    hw = batch_input_shape([img.shape[:2]], 640, 32)
    ref = letterbox_yuv420_reference(Image.bgr(img), hw)
    np.testing.assert_array_equal(ref, preprocess_batch([img], hw)[0])
    assert _sha(_to_hwc_bgr(ref)) == _sha(letterbox(img, 640, auto=True)[0])


@pytest.mark.parametrize("src,dst", [(1280, 640), (1920, 640), (640, 416), (320, 640), (7, 500), (640, 640), (1, 9)])
def test_axis_tables(src: int, dst: int) -> None:
    for columns in (True, False):
        t = linear_axis_table(src, dst, columns)
        assert t.idx.shape == t.w.shape == (dst, 2) and t.idx.dtype == np.int32 and t.w.dtype == np.int16
        assert t.idx.min() >= 0 and t.idx.max() <= src - 1
        assert (t.w >= 0).all() and (t.w.sum(axis=1) == 2048).all()
        assert (np.diff(t.idx[:, 0]) >= 0).all()
        # centre of output i sits at source (i + 0.5) * src / dst - 0.5, within one Q11 step
        centre = (t.idx[:, 0] * t.w[:, 0] + t.idx[:, 1] * t.w[:, 1]) / 2048
        expect = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        assert np.abs(centre - expect).max() <= 1 / 1024 + 1e-9
    if src == dst:
        t = linear_axis_table(src, dst, True)
        assert (t.idx[:, 0] == np.arange(dst)).all() and (t.w[:, 0] == 2048).all()


def test_axis_tables_edges_differ_between_rows_and_columns() -> None:
    # 2x upscale: output 0 sits at source -0.25; columns snap to (0, weight 2048),
    # rows keep weights (512, 1536) on two clamped taps, as OpenCV does.
    cols, rows = linear_axis_table(4, 8, True), linear_axis_table(4, 8, False)
    assert cols.idx[0].tolist() == [0, 1] and cols.w[0].tolist() == [2048, 0]
    assert rows.idx[0].tolist() == [0, 0] and rows.w[0].tolist() == [512, 1536]
    assert cols.w[-1].tolist() == [2048, 0] and rows.idx[-1].tolist() == [3, 3] and rows.w[-1].tolist() == [1536, 512]


def test_extreme_aspect_gives_only_borders() -> None:
    img = np.full((2000, 2, 3), 50, np.uint8)  # 2 px wide: resized width rounds to 0 in a 64x64 input
    ref = letterbox_yuv420_reference(Image.bgr(img), (64, 64))
    got = CpuPreprocessor()([Image.bgr(img)], (64, 64))[0]
    np.testing.assert_array_equal(ref, got)
    assert (got == 114).all()
