"""The shapes generator follows shared/specs/shapes-v1.md; clips and still images round-trip."""

from __future__ import annotations

import colorsys
import importlib.util
import math
import statistics
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamdet.datasets import shapes
from streamdet.datasets.groundtruth import groundtruth_path, read_groundtruth
from streamdet.datasets.shapes_look import VARIATIONS
from streamdet.datasets.yolo import read_yolo_dir

W, H = 160, 120  # small frames keep the tests fast; the spec is resolution-independent


def _frames_under_test() -> list[shapes.RenderedFrame]:
    """A varied sample: still images of several seeds and sizes, and frames of a few clips."""
    out = [shapes.render_image(11, i, [(W, H), (96, 128), (200, 100)]) for i in range(40)]
    for seed in range(4):
        clip = shapes.ShapesClip(W, H, seed, num_frames=200)
        out.extend(clip.render(i) for i in range(0, 200, 20))
    # the look variation changes pixels only: objects, boxes and visibility follow the spec alike
    for look in VARIATIONS.values():
        out.extend(shapes.render_image(13, i, [(W, H), (96, 128), (200, 100)], look) for i in range(12))
        clip = shapes.ShapesClip(W, H, 7, num_frames=100, variation=look)
        out.extend(clip.render(i) for i in range(0, 100, 25))
    return out


@pytest.fixture(scope="module")
def sample() -> list[shapes.RenderedFrame]:
    return _frames_under_test()


def _mask(shape: shapes.Shape, width: int, height: int) -> np.ndarray:
    x0, y0, alpha = shapes.shape_alpha(shape, width, height)
    full = np.zeros((height, width), bool)
    full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha > 0.5
    return full


def _inside_distance(shape: shapes.Shape, width: int, height: int) -> np.ndarray:
    """Independent geometry: signed 'inside-ness' of each pixel centre (> 0 inside), from the vertices."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    r = shape.diameter / 2
    if shape.cls == shapes.CIRCLE:
        return r - np.hypot(xs - shape.cx, ys - shape.cy)
    n, first = (4, 45.0) if shape.cls == shapes.SQUARE else (3, 90.0)
    ang = [math.radians(shape.angle + first + 360.0 * k / n) for k in range(n)]
    verts = [(shape.cx + r * math.cos(a), shape.cy - r * math.sin(a)) for a in ang]
    inside = np.full(xs.shape, np.inf)
    for (ax, ay), (bx, by) in zip(verts, verts[1:] + verts[:1], strict=True):
        # counter-clockwise on screen = clockwise in image coordinates: interior on the right side
        ex, ey = bx - ax, by - ay
        cross = (ex * (ys - ay) - ey * (xs - ax)) / math.hypot(ex, ey)
        inside = np.minimum(inside, -cross)
    return inside


def test_same_seed_same_frames_different_seed_different() -> None:
    a, b = shapes.ShapesClip(W, H, 5, num_frames=3), shapes.ShapesClip(W, H, 5, num_frames=3)
    for (ia, ba), (ib, bb) in zip(a.frames(), b.frames(), strict=True):
        assert np.array_equal(ia, ib) and np.array_equal(ba, bb)
    c = shapes.ShapesClip(W, H, 6, num_frames=3)
    assert not np.array_equal(a.frame(0)[0], c.frame(0)[0])
    # still images: index-addressable and seed-dependent
    assert np.array_equal(shapes.render_image(1, 7, [(W, H)]).image, shapes.render_image(1, 7, [(W, H)]).image)
    assert not np.array_equal(shapes.render_image(1, 7, [(W, H)]).image, shapes.render_image(2, 7, [(W, H)]).image)
    assert not np.array_equal(shapes.render_image(1, 7, [(W, H)]).image, shapes.render_image(1, 8, [(W, H)]).image)


def test_objects_follow_the_spec(sample: list[shapes.RenderedFrame]) -> None:
    counts = []
    for r in sample:
        height, width = r.image.shape[:2]
        assert r.image.dtype == np.uint8 and r.image.shape[2] == 3
        assert 1 <= len(r.shapes) <= shapes.MAX_OBJECTS
        counts.append(len(r.shapes))
        assert len(r.boxes) >= 1  # the last object drawn is always fully visible
        for s, box in zip(r.shapes, r.all_boxes, strict=True):
            assert s.cls in (0, 1, 2) and box[4] == s.cls
            assert 0.04 * height <= s.diameter <= 0.30 * height
            rad = s.diameter / 2
            assert rad <= s.cx <= width - rad and rad <= s.cy <= height - rad  # fully inside, any rotation
            assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height
            _, sat, val = colorsys.rgb_to_hsv(s.color[2] / 255, s.color[1] / 255, s.color[0] / 255)
            assert 0.5 - 1e-9 <= sat <= 1 + 1e-9 and 0.5 - 1e-9 <= val <= 1 + 1e-9
            # the box of a shape of circumscribed diameter d is at most d (+1 px of rounding) wide
            assert box[2] - box[0] <= s.diameter + 1 and box[3] - box[1] <= s.diameter + 1
    assert min(counts) == 1 and max(counts) == shapes.MAX_OBJECTS


def test_masks_boxes_and_visibility(sample: list[shapes.RenderedFrame]) -> None:
    for r in sample:
        height, width = r.image.shape[:2]
        masks = [_mask(s, width, height) for s in r.shapes]
        for s, m, box in zip(r.shapes, masks, r.all_boxes, strict=True):
            # mask = pixel centres inside the geometric shape (except float32 ties at the outline)
            inside = _inside_distance(s, width, height)
            sure = np.abs(inside) > 1e-3
            assert np.array_equal(m[sure], inside[sure] > 0)
            # tight box: every edge row/column of the box touches the mask, nothing outside it
            x1, y1, x2, y2 = (int(v) for v in box[:4])
            assert m[y1:y2, x1:x2].sum() == m.sum()
            assert m[y1, x1:x2].any() and m[y2 - 1, x1:x2].any()
            assert m[y1:y2, x1].any() and m[y1:y2, x2 - 1].any()
        for i, m in enumerate(masks):
            covered_later = np.zeros_like(m)
            for later in masks[i + 1 :]:
                covered_later |= later
            frac = (m & ~covered_later).sum() / m.sum()
            assert r.visible[i] == pytest.approx(frac)
            assert r.in_gt[i] == (frac >= 0.6)
        assert np.array_equal(r.boxes, r.all_boxes[r.in_gt])


def test_box_is_of_the_whole_mask_even_when_covered() -> None:
    bg = np.full((H, W, 3), 100.0, np.float32)
    under = shapes.Shape(cls=1, cx=60.0, cy=60.0, diameter=30.0, angle=10.0, color=(0.0, 0.0, 255.0))
    over = shapes.Shape(cls=0, cx=70.0, cy=60.0, diameter=30.0, angle=0.0, color=(255.0, 0.0, 0.0))
    alone = shapes.render_frame(bg, [under])
    both = shapes.render_frame(bg, [under, over])
    assert np.array_equal(both.all_boxes[0], alone.all_boxes[0])
    assert both.visible[0] < 0.6 and not both.in_gt[0]
    assert both.boxes.tolist() == [both.all_boxes[1].tolist()]
    # the tracking id of a box is its object's place in the drawing order, hidden objects skipped
    third = shapes.Shape(cls=2, cx=20.0, cy=20.0, diameter=20.0, angle=0.0, color=(0.0, 255.0, 0.0))
    three = shapes.render_frame(bg, [under, over, third])
    assert three.ids.tolist() == [1, 2] and alone.ids.tolist() == [0]
    assert three.boxes.tolist() == [three.all_boxes[1].tolist(), three.all_boxes[2].tolist()]


def test_pixels_are_the_object_colour_inside_and_background_outside() -> None:
    bg = np.full((H, W, 3), (30.0, 60.0, 90.0), np.float32)
    s = shapes.Shape(cls=2, cx=80.3, cy=55.7, diameter=33.3, angle=17.0, color=(200.4, 10.2, 120.6))
    r = shapes.render_frame(bg, [s])
    x0, y0, alpha = shapes.shape_alpha(s, W, H)
    full = np.zeros((H, W), np.float32)
    full[y0 : y0 + alpha.shape[0], x0 : x0 + alpha.shape[1]] = alpha
    assert np.array_equal(r.image[full == 1], np.broadcast_to([200, 10, 121], (int((full == 1).sum()), 3)))
    assert (r.image[full == 0] == [30, 60, 90]).all()
    edge = (full > 0) & (full < 1)
    assert edge.any()  # anti-aliased outline
    expected = np.asarray(bg[0, 0]) + full[edge][:, None] * (np.asarray(s.color) - bg[0, 0])
    assert np.abs(r.image[edge] - expected).max() <= 0.51


def test_background_and_noise() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        bg = shapes.make_background(W, H, rng)
        assert 60 - 1e-3 <= bg.mean() <= 200 + 1e-3
        assert bg.min() > -0.01 and bg.max() < 255.01
        assert bg.std() > 0  # a texture, not a flat colour
    table = shapes.gaussian_table()
    nd = statistics.NormalDist()
    for k in (0, 1, 1000, 1589, 1590, 30000, 32767, 40000, 65535):
        assert table[k] == pytest.approx(nd.inv_cdf((k + 0.5) / 65536), rel=1e-6, abs=1e-6)
    flat = np.full((H, W, 3), 128.0, np.float32)
    noisy = shapes.render_frame(flat, [], noise_sigma=5.0, rng=np.random.default_rng(1)).image
    assert noisy.astype(np.float64).std() == pytest.approx(5.0, rel=0.05)
    assert abs(noisy.astype(np.float64).mean() - 128) < 0.1
    clip = shapes.ShapesClip(W, H, 3)
    assert 0 <= clip.noise_sigma <= 6


def test_clip_motion_is_bounded_and_bounces() -> None:
    clip = shapes.ShapesClip(W, H, 2, num_frames=400)
    prev = clip.shapes_at(0)
    assert prev == list(clip.shapes)
    last_dx = [0.0] * len(prev)
    bounces = 0
    for i in range(1, 400):
        cur = clip.shapes_at(i)
        for k, (a, b) in enumerate(zip(prev, cur, strict=True)):
            assert math.hypot(b.cx - a.cx, b.cy - a.cy) <= 0.01 * W + 1e-9
            bounces += (b.cx - a.cx) * last_dx[k] < 0
            last_dx[k] = b.cx - a.cx
            turn = (b.angle - a.angle) % 360
            assert min(turn, 360 - turn) <= 3 + 1e-9
            rad = b.diameter / 2
            assert rad < b.cx < W - rad and rad < b.cy < H - rad
            assert (a.cls, a.diameter, a.color) == (b.cls, b.diameter, b.color)
        prev = cur
    assert bounces > 0
    assert shapes._fold(105.0, 0.0, 100.0) == 95.0 and shapes._fold(-3.0, 0.0, 100.0) == 3.0


def test_write_clip_round_trip(tmp_path: Path) -> None:
    fps, n = 5, 30  # 6 s at 5 fps: the keyframe interval is tested over several GOPs
    path = shapes.write_clip(tmp_path / "c.mp4", width=W, height=H, frames=n, fps=fps, seed=9, crf=23)
    gt = read_groundtruth(groundtruth_path(path))
    assert path == tmp_path / "c.mp4" and groundtruth_path(path) == tmp_path / "c.jsonl"
    assert [g.frame for g in gt] == list(range(n))
    clip = shapes.ShapesClip(W, H, 9, num_frames=n)
    keyframes, decoded = [], 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.codec_context.width, stream.codec_context.height) == (W, H)
        assert stream.average_rate == Fraction(fps)
        for i, frame in enumerate(container.decode(stream)):
            assert frame.time == pytest.approx(gt[i].pts, abs=1e-6)
            assert gt[i].pts == pytest.approx(i / fps, abs=1e-9)
            rendered = clip.render(i)
            image, boxes = rendered.image, rendered.boxes
            assert np.array_equal(gt[i].boxes, boxes.astype(np.float64))
            # tracking ground truth: each box names its object by drawing order
            assert gt[i].ids is not None and gt[i].ids.tolist() == np.flatnonzero(rendered.in_gt).tolist()
            assert np.array_equal(rendered.all_boxes[gt[i].ids], boxes)
            got = frame.to_ndarray(format="bgr24")
            assert np.abs(got.astype(np.int16) - image).mean() < 6  # same picture, up to compression
            if frame.key_frame:
                keyframes.append(frame.time)
            decoded += 1
    assert decoded == n
    assert keyframes[0] == 0.0
    gaps = np.diff(keyframes + [n / fps])
    assert gaps.max() <= 2.0 + 1e-9


def test_write_clip_default_fps_pts(tmp_path: Path) -> None:
    path = shapes.write_clip(tmp_path / "d.mp4", width=W, height=H, frames=4, seed=1)
    with av.open(str(path)) as container:
        times = [f.time for f in container.decode(video=0)]
    assert times == pytest.approx([g.pts for g in read_groundtruth(tmp_path / "d.jsonl")], abs=1e-6)
    assert times == pytest.approx([0.0, 0.04, 0.08, 0.12], abs=1e-9)


def test_write_clip_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="crf"):
        shapes.write_clip(tmp_path / "x.mp4", width=W, height=H, frames=1, seed=0, crf=30)
    with pytest.raises(ValueError, match="even"):
        shapes.write_clip(tmp_path / "x.mp4", width=161, height=H, frames=1, seed=0)
    with pytest.raises(ValueError, match="too small"):
        shapes.ShapesClip(16, 16, 0)


def test_write_images_yolo_round_trip_and_split_invariance(tmp_path: Path) -> None:
    sizes = [(W, H), (128, 96)]
    paths = shapes.write_images(tmp_path / "all", 4, seed=3, sizes=sizes)
    assert [p.name for p in paths] == ["000000.png", "000001.png", "000002.png", "000003.png"]
    shapes.write_images(tmp_path / "split", 3, seed=3, sizes=sizes)
    shapes.write_images(tmp_path / "split", 1, seed=3, sizes=sizes, start=3)
    for name in ("images/000001.png", "labels/000001.txt", "images/000003.png", "labels/000003.txt"):
        assert (tmp_path / "all" / name).read_bytes() == (tmp_path / "split" / name).read_bytes()
    samples = read_yolo_dir(tmp_path / "all")
    assert len(samples) == 4
    for i, s in enumerate(samples):
        r = shapes.render_image(3, i, sizes)
        assert (s.width, s.height) == (r.image.shape[1], r.image.shape[0]) and (s.width, s.height) in sizes
        np.testing.assert_allclose(s.boxes, r.boxes[:, :4], atol=0.01)
        assert s.classes.tolist() == r.boxes[:, 4].tolist()
    # a single size may be given as one (width, height) pair
    one = shapes.write_images(tmp_path / "one", 1, seed=0, sizes=(128, 96))
    assert read_yolo_dir(tmp_path / "one")[0].width == 128 and len(one) == 1


def _load_tool():
    path = Path(__file__).resolve().parents[2] / "tools" / "make_shapes.py"
    spec = importlib.util.spec_from_file_location("make_shapes_tool", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_shapes_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _load_tool()
    monkeypatch.setitem(sys.modules, "make_shapes_tool", tool)  # pool workers pickle functions by module name
    assert tool.main(["images", str(tmp_path / "a"), "--count", "3", "--size", "128x96", "--seed", "4"]) == 0
    assert "images" in capsys.readouterr().err  # progress bar on stderr
    assert tool.main(["images", str(tmp_path / "b"), "--count", "3", "--size", "128x96", "--seed", "4",
                      "--workers", "2", "--quiet"]) == 0  # fmt: skip
    for i in range(3):
        for name in (f"images/{i:06d}.png", f"labels/{i:06d}.txt"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    out = tmp_path / "c.mp4"
    assert tool.main(["clip", str(out), "--width", "128", "--height", "96", "--frames", "3", "--quiet"]) == 0
    assert len(read_groundtruth(tmp_path / "c.jsonl")) == 3
    assert tool.main(["clip", str(out), "--width", "128", "--height", "96", "--frames", "3", "--crf", "40"]) == 2
    with pytest.raises(SystemExit):
        tool.main(["images", str(tmp_path / "d"), "--count", "1", "--size", "big"])
