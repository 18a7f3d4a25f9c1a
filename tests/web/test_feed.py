"""One camera's pictures: detections matched to their frame, JPEG encoded once for every viewer."""

from __future__ import annotations

import threading

import numpy as np

from streamdet.pipeline.types import Frame
from streamdet.web.feed import FRESH_S, CameraFeed
from tests.helpers.web import decode_jpeg, solid_bgr


def frame(index: int, colour: tuple[int, int, int] = (50, 50, 50), w: int = 64, h: int = 48) -> Frame:
    return Frame(camera="c", seq=index + 1, frame_index=index, pts=index / 25, ts_capture=1000.0 + index, width=w,
                 height=h, src_width=w, src_height=h, pix_fmt="bgr24", image=solid_bgr(w, h, colour), dropped=0)


def det_msg(index: int, box: list[float] | None = None) -> dict:
    dets = [] if box is None else [{"box": box, "score": 0.9, "class_id": 0, "label": "x"}]
    return {"camera": "c", "frame": index, "ts_capture": 1000.0 + index, "detections": dets}


def test_detections_go_to_their_own_frame() -> None:
    feed = CameraFeed("c")
    feed.add_frame(frame(1, (10, 10, 10)), now=0.0)
    feed.add_frame(frame(2, (200, 200, 200)), now=0.1)
    assert feed.add_detections(det_msg(1, [0, 0, 10, 10]), now=0.2)
    pic = feed.picture(True, now=0.2)
    assert pic is not None and pic.frame.frame_index == 1 and pic.detections is not None
    assert feed.picture(False, now=0.2).frame.frame_index == 2  # without boxes: the newest frame
    assert feed.pending_keys() == [(2, 1002.0)]  # frame 1 matched; older ones would be gone too


def test_a_message_for_another_frame_draws_nothing() -> None:
    feed = CameraFeed("c")
    feed.add_frame(frame(1), now=0.0)
    other = det_msg(1, [0, 0, 10, 10])
    other["ts_capture"] = 5.0  # same index, another capture (a looping file): not this frame
    assert not feed.add_detections(other, now=0.1)
    assert feed.picture(True, now=0.1).detections is None


def test_detections_that_arrive_before_their_frame_still_match() -> None:
    feed = CameraFeed("c")
    assert not feed.add_detections(det_msg(7, [1, 1, 5, 5]), now=0.0)
    feed.add_frame(frame(7), now=0.05)
    pic = feed.picture(True, now=0.05)
    assert pic.frame.frame_index == 7 and pic.detections
    rendered = feed.jpeg(True, None, now=0.05)
    assert rendered is not None and rendered.boxes == 1
    plain = feed.jpeg(False, None, now=0.05)
    assert plain is not None and plain.boxes is None


def test_stale_boxes_give_way_to_the_newest_frame() -> None:
    feed = CameraFeed("c")
    feed.add_frame(frame(1), now=0.0)
    feed.add_detections(det_msg(1, [0, 0, 4, 4]), now=0.0)
    feed.add_frame(frame(2), now=0.5)
    assert feed.picture(True, now=1.0).frame.frame_index == 1
    later = feed.picture(True, now=FRESH_S + 0.5)  # no detections for a while (worker down)
    assert later.frame.frame_index == 2 and later.detections is None


def test_one_encoding_per_picture_and_size_for_any_number_of_viewers() -> None:
    feed = CameraFeed("c")
    feed.add_frame(frame(1), now=0.0)
    results = []

    def viewer() -> None:
        for _ in range(5):
            results.append(feed.jpeg(True, None, now=0.0))

    threads = [threading.Thread(target=viewer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and len({r.data for r in results}) == 1
    assert feed.encodes == 1
    feed.jpeg(True, 32, now=0.0)
    feed.jpeg(True, 32, now=0.0)
    assert feed.encodes == 2
    feed.add_frame(frame(2), now=0.1)
    feed.jpeg(True, None, now=0.1)
    assert feed.encodes == 3


def test_jpeg_waits_for_a_new_picture_and_reports_size() -> None:
    feed = CameraFeed("c")
    assert feed.jpeg(True, None, now=0.0) is None  # nothing yet
    feed.add_frame(frame(1, w=64, h=48), now=0.0)
    first = feed.jpeg(True, 32, now=0.0)
    assert first is not None and first.size == (32, 24) and decode_jpeg(first.data).shape == (24, 32, 3)
    assert (first.frame_index, first.ts_capture, first.boxes) == (1, 1001.0, None)
    token = first.token
    assert feed.jpeg(True, None, now=0.0, after=token, timeout=0.05) is None  # no newer one
    threading.Timer(0.05, feed.add_frame, (frame(2, (255, 255, 255)), 0.1)).start()
    got = feed.jpeg(False, None, now=0.1, after=token, timeout=5.0)
    assert got is not None and got.token != token
    assert np.abs(decode_jpeg(got.data).astype(int) - 255).max() <= 3


def test_close_wakes_a_waiting_viewer() -> None:
    feed = CameraFeed("c")
    threading.Timer(0.05, feed.close).start()
    assert feed.jpeg(True, None, now=0.0, timeout=10.0) is None
    assert feed.closed
