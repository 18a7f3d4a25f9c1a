"""The live view of a real daemon: its numbers, pictures whose boxes are the published ones, streams,
reload and stop."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from streamdet.web.draw import class_colour
from tests.helpers.daemon import Daemon, MessageLog, wait_for
from tests.helpers.web import decode_jpeg, get, read_parts
from tests.web.conftest import LiveDaemon, web_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def rows(port: int) -> dict[str, dict]:
    return {r["id"]: r for r in json.loads(get(port, "/api/cameras").body)["cameras"]}


def test_api_shows_every_camera_streaming(live_daemon: LiveDaemon) -> None:
    port = live_daemon.port
    assert wait_for(lambda: all((r["fps"] or 0) > 0 for r in rows(port).values()), 30), rows(port)
    # the size is known before anybody watches (read from the ring's newest slot header)
    assert all((r["width"], r["height"]) == (480, 270) for r in rows(port).values()), rows(port)
    for cam in live_daemon.cameras:
        get(port, f"/cameras/{cam}/latest.jpg")  # a viewer: the size becomes known
    got = rows(port)
    assert set(got) == set(live_daemon.cameras)
    for row in got.values():
        assert row["state"] == "streaming" and row["latency_ms"]["p50"] is not None
        assert (row["width"], row["height"]) == (480, 270)
        assert isinstance(row["drops"], dict) and row["dropped"] is not None


def test_drawn_boxes_are_the_published_detections_of_that_frame(live_daemon: LiveDaemon) -> None:
    port, daemon = live_daemon.port, live_daemon.daemon
    messages = MessageLog(daemon.endpoint)
    try:
        found = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = get(port, "/cameras/left/latest.jpg")
            assert r.status == 200
            if r.headers["x-boxes"] in ("none", "0"):
                time.sleep(0.1)
                continue
            frame, ts = int(r.headers["x-frame"]), float(r.headers["x-capture-ts"])
            if wait_for(lambda: any(m.msg["frame"] == frame and m.msg["ts_capture"] == ts  # noqa: B023
                                    for m in messages.dets("left")), 3):
                found = (r, next(m.msg for m in messages.dets("left")
                                 if m.msg["frame"] == frame and m.msg["ts_capture"] == ts))
                break
        assert found is not None, "no picture with boxes matched a published message"
        reply, msg = found
        assert int(reply.headers["x-boxes"]) == len(msg["detections"])
        img = decode_jpeg(reply.body)
        for det in msg["detections"]:
            x1, y1, x2, y2 = (int(round(v)) for v in det["box"])
            edge = img[y1 + 4 : max(y1 + 5, y2 - 4), max(0, x1) : x1 + 2].reshape(-1, 3).mean(axis=0)
            colour = np.array(class_colour(det["class_id"]))
            assert np.abs(edge - colour).max() < 70, (det, edge, colour)
    finally:
        messages.close()


def test_mjpeg_stream_of_every_camera(live_daemon: LiveDaemon) -> None:
    for cam in live_daemon.cameras:
        conn = http.client.HTTPConnection("127.0.0.1", live_daemon.port, timeout=15)
        try:
            conn.request("GET", f"/cameras/{cam}/stream.mjpeg?width=240")
            resp = conn.getresponse()
            assert resp.status == 200
            images = [decode_jpeg(p) for p in read_parts(resp, 4)]
            assert all(img.shape == (135, 240, 3) for img in images)
            assert any(not np.array_equal(images[0], img) for img in images[1:])
        finally:
            conn.close()


def test_unknown_camera_and_route(live_daemon: LiveDaemon) -> None:
    assert get(live_daemon.port, "/cameras/nope/latest.jpg").status == 404
    assert get(live_daemon.port, "/etc/passwd").status == 404


def test_reload_follows_cameras_and_moves_the_view_then_stop_closes_it(live_daemon: LiveDaemon,
                                                                        tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, live_daemon.config("{port: 0}"), name="reload").start()
    try:
        daemon.wait_ready()
        first = web_port(daemon)
        assert get(first, "/cameras/right/latest.jpg").status == 200
        reload_and_stop(daemon, live_daemon)
    finally:
        daemon.stop()


def reload_and_stop(daemon: Daemon, live_daemon: LiveDaemon) -> None:
    mark = daemon.mark()
    daemon.write_config(live_daemon.config("{port: 0, max_fps: 2}", cameras=("left",)))
    daemon.signal(1)  # SIGHUP
    line = daemon.wait_log(r"streamdet.supervisor: (reloaded|reload rejected)", mark, 60)
    assert line is not None and "reloaded" in line and "live view restarted" in line, daemon.log_since(mark)
    port = web_port(daemon, mark)
    assert list(rows(port)) == ["left"]
    assert get(port, "/cameras/right/latest.jpg").status == 404
    assert get(port, "/cameras/left/latest.jpg").status == 200
    assert daemon.stop() == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
