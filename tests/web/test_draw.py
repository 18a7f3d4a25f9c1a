"""Pictures: colour conversion, boxes in the right place at any scale, labels, JPEG sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from streamdet.pipeline.types import Frame
from streamdet.web.draw import class_colour, draw_detections, label_text, render_jpeg, scaled_size, to_bgr
from tests.helpers.web import decode_jpeg, solid_bgr


def frame_of(img: np.ndarray, pix_fmt: str = "bgr24", src: tuple[int, int] | None = None) -> Frame:
    h = img.shape[0] if pix_fmt == "bgr24" else img.shape[0] * 2 // 3
    w = img.shape[1]
    sw, sh = src or (w, h)
    return Frame(camera="c", seq=1, frame_index=0, pts=0.0, ts_capture=1.0, width=w, height=h, src_width=sw,
                 src_height=sh, pix_fmt=pix_fmt, image=img, dropped=0)


def test_yuv420p_and_nv12_become_the_same_bgr() -> None:
    bgr = solid_bgr(32, 16, (30, 160, 220))
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    y, u, v = i420[:16], i420[16:20].reshape(8, 16), i420[20:].reshape(8, 16)
    nv12 = np.vstack([y, np.stack([u, v], axis=-1).reshape(8, 32)])
    a, b = to_bgr(frame_of(i420, "yuv420p")), to_bgr(frame_of(nv12, "nv12"))
    assert a.shape == b.shape == (16, 32, 3)
    assert np.abs(a.astype(int) - (30, 160, 220)).max() <= 4
    assert np.array_equal(a, b)


def test_box_is_drawn_where_it_belongs_after_scaling() -> None:
    img = solid_bgr(200, 100, (0, 0, 0))
    # the source was 400x200 (the decoder halved it): the box [100, 50, 300, 150] is [50, 25, 150, 75] here
    draw_detections(img, [{"box": [100, 50, 300, 150], "score": 0.9, "class_id": 3, "label": "car"}], 400, 200)
    colour = np.array(class_colour(3))
    assert (img[60, 50] == colour).all() and (img[60, 150] == colour).all()  # left and right edges
    assert (img[75, 100] == colour).all()  # bottom edge
    assert not img[50, 100].any()  # inside the box: untouched
    assert not img[90, 10].any()  # outside


def test_malformed_records_are_skipped() -> None:
    img = solid_bgr(50, 50, (0, 0, 0))
    draw_detections(img, [{"box": [1, 2]}, {"score": 1}, {"box": ["x", 0, 1, 1], "class_id": 0}], 50, 50)
    assert not img.any()


@pytest.mark.parametrize(("det", "text"), [
    ({"label": "person", "score": 0.871}, "person 0.87"),
    ({"label": "person", "score": 0.5, "track_id": 12}, "person 0.50 #12"),
    ({"label": "person", "score": 0.5, "track_id": None}, "person 0.50"),
])
def test_label_text(det: dict, text: str) -> None:
    assert label_text(det) == text


def test_scaled_size_keeps_the_aspect_and_never_enlarges() -> None:
    assert scaled_size(1280, 720, None) == (1280, 720)
    assert scaled_size(1280, 720, 640) == (640, 360)
    assert scaled_size(1280, 720, 4000) == (1280, 720)
    assert scaled_size(1280, 720, 1) == (16, 9)


def test_render_jpeg_with_and_without_boxes() -> None:
    frame = frame_of(solid_bgr(160, 120, (40, 40, 40)))
    det = [{"box": [20, 20, 140, 100], "score": 0.9, "class_id": 0, "label": "x"}]
    plain = decode_jpeg(render_jpeg(frame, None))
    boxed = decode_jpeg(render_jpeg(frame, det))
    small = decode_jpeg(render_jpeg(frame, det, width=80))
    assert plain.shape == boxed.shape == (120, 160, 3) and small.shape == (60, 80, 3)
    assert np.abs(plain.astype(int) - 40).max() <= 3
    # the left edge (x = 20, or 10 at half width) is coloured; through JPEG, far from the grey it was
    assert np.abs(boxed[60, 20].astype(int) - plain[60, 20]).max() > 60
    assert np.abs(small[30, 10].astype(int) - 40).max() > 60
    assert np.abs(boxed[60, 80].astype(int) - plain[60, 80]).max() <= 3  # inside: untouched
