"""The live view over real HTTP: routes, auth, pictures, streams, and bad clients."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from streamdet.config.web import WebConfig
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.web.service import WebService
from tests.helpers.daemon import wait_for
from tests.helpers.web import basic, decode_jpeg, get, make_ring, read_parts, write_frame

W, H = 160, 120


@dataclass
class Served:
    service: WebService
    ring: FrameRing
    writer: threading.Thread
    stop: threading.Event

    @property
    def port(self) -> int:
        return self.service.port


def serve(cfg: WebConfig) -> Iterator[Served]:
    ring = make_ring("a", W, H)
    stop = threading.Event()

    def write() -> None:  # a 20 fps camera whose colour changes every frame
        i = 0
        while not stop.is_set():
            write_frame(ring, (i % 256, 80, 160), i, W, H)
            i += 1
            time.sleep(0.05)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    service = WebService(cfg, cameras=lambda: ["a", "b"], ring_names=lambda: {"a": ring.name},
                         statuses=lambda: {"a": ring.status()}).start()
    try:
        yield Served(service, ring, writer, stop)
    finally:
        service.stop()
        stop.set()
        writer.join(5)
        ring.close()
        ring.unlink()


@pytest.fixture
def web() -> Iterator[Served]:
    yield from serve(WebConfig(port=0, max_streams=2, threads=8))


@pytest.fixture
def web_auth() -> Iterator[Served]:
    yield from serve(WebConfig(port=0, host="127.0.0.1", auth={"username": "ops", "password": "pw"}))


def test_page_is_self_contained(web: Served) -> None:
    r = get(web.port, "/")
    assert r.status == 200 and r.headers["content-type"].startswith("text/html")
    page = r.body.decode()
    assert "api/cameras" in page and "stream.mjpeg" in page
    assert "http://" not in page and "https://" not in page  # no CDN, works offline


def test_api_lists_every_camera(web: Served) -> None:
    r = get(web.port, "/api/cameras")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    rows = json.loads(r.body)["cameras"]
    assert [row["id"] for row in rows] == ["a", "b"]
    assert {"width", "height", "fps", "latency_ms", "dropped", "drops", "state", "last_error"} <= set(rows[0])


def test_latest_jpg_full_size_and_scaled(web: Served) -> None:
    r = get(web.port, "/cameras/a/latest.jpg")
    assert r.status == 200 and r.headers["content-type"] == "image/jpeg"
    assert decode_jpeg(r.body).shape == (H, W, 3)
    small = get(web.port, "/cameras/a/latest.jpg?width=80&boxes=0")
    assert small.status == 200 and decode_jpeg(small.body).shape == (60, 80, 3)
    head = get(web.port, "/cameras/a/latest.jpg", method="HEAD")
    assert head.status == 200 and head.body == b""


def test_a_camera_without_frames_is_503_and_an_unknown_one_404(web: Served) -> None:
    r = get(web.port, "/cameras/b/latest.jpg")
    assert r.status == 503 and r.headers.get("retry-after")
    assert get(web.port, "/cameras/nope/latest.jpg").status == 404
    assert get(web.port, "/cameras/nope/stream.mjpeg").status == 404


@pytest.mark.parametrize("path", [
    "/index.html", "/static/index.html", "/../../etc/passwd", "/cameras/a/../../../etc/passwd",
    "/cameras/a/latest.png", "/cameras/a%2F..%2F/latest.jpg", "/api/cameras/", "/cameras/a", "/metrics",
    "/%2e%2e/%2e%2e/etc/passwd", "/cameras/" + "x" * 70 + "/latest.jpg",
])
def test_nothing_outside_the_routes_is_served(web: Served, path: str) -> None:
    assert get(web.port, path).status == 404


@pytest.mark.parametrize("query", ["width=abc", "width=5", "width=-3", "boxes=yes", "width=99999"])
def test_bad_queries_are_400(web: Served, query: str) -> None:
    r = get(web.port, f"/cameras/a/latest.jpg?{query}")
    assert r.status == 400 and r.body


def test_other_methods_are_405(web: Served) -> None:
    assert get(web.port, "/", method="POST").status == 405
    assert get(web.port, "/api/cameras", method="DELETE").status == 405


def test_mjpeg_stream_sends_changing_pictures(web: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    try:
        conn.request("GET", "/cameras/a/stream.mjpeg?width=80")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type") == "multipart/x-mixed-replace; boundary=streamdet-frame"
        parts = read_parts(resp, 3)
        images = [decode_jpeg(p) for p in parts]
        assert all(img.shape == (60, 80, 3) for img in images)
        assert len({int(img[..., 0].mean()) for img in images}) == 3  # three different frames
    finally:
        conn.close()


def test_streams_beyond_the_cap_are_refused_and_slots_come_back(web: Served) -> None:
    viewers = []
    for _ in range(2):
        c = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
        c.request("GET", "/cameras/a/stream.mjpeg")
        resp = c.getresponse()
        assert resp.status == 200
        read_parts(resp, 1)
        viewers.append((c, resp))
    assert get(web.port, "/cameras/a/stream.mjpeg").status == 503
    for c, resp in viewers:  # the viewers vanish without a word
        resp.close()
        c.close()

    def reopened() -> bool:
        c = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
        try:
            c.request("GET", "/cameras/a/stream.mjpeg")
            return c.getresponse().status == 200
        finally:
            c.close()

    assert wait_for(reopened, 15, 0.3)  # a vanished client's slot is freed at its next write


def test_auth_is_required_on_every_route(web_auth: Served) -> None:
    for path in ("/", "/api/cameras", "/cameras/a/latest.jpg", "/cameras/a/stream.mjpeg", "/nope"):
        r = get(web_auth.port, path)
        assert r.status == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert get(web_auth.port, "/", basic("ops", "wrong")).status == 401
    assert get(web_auth.port, "/", basic("ops", "pw")).status == 200
    assert get(web_auth.port, "/cameras/a/latest.jpg", basic("ops", "pw")).status == 200


def test_huge_headers_are_refused(web: Served) -> None:
    big = get(web.port, "/", {"X-Big": "x" * 70000})
    assert big.status in (400, 431)
    many = get(web.port, "/", {f"X-H{i}": "v" for i in range(150)})
    assert many.status == 431
    assert get(web.port, "/" + "a" * 9000).status == 414
    assert get(web.port, "/api/cameras").status == 200


def test_slow_and_silent_clients_do_not_block_others(web: Served) -> None:
    silent = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(3)]
    trickle = socket.create_connection(("127.0.0.1", web.port))
    trickle.sendall(b"GET / HTTP/1.1\r\n")
    try:
        for _ in range(3):
            assert get(web.port, "/api/cameras", timeout=5).status == 200
    finally:
        for s in [*silent, trickle]:
            s.close()


def test_a_flood_of_connections_is_bounded_and_the_server_recovers(web: Served) -> None:
    socks = [socket.create_connection(("127.0.0.1", web.port)) for _ in range(30)]  # threads: 8
    try:
        closed = 0
        for s in socks:
            s.settimeout(2)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except TimeoutError:
                pass
        assert closed >= 30 - 8  # beyond the thread limit, closed at once
    finally:
        for s in socks:
            s.close()
    assert wait_for(lambda: get(web.port, "/api/cameras").status == 200, 15, 0.3)


def test_stop_ends_streams_and_frees_the_port(web: Served) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    conn.request("GET", "/cameras/a/stream.mjpeg")
    resp = conn.getresponse()
    read_parts(resp, 1)
    port = web.port
    t0 = time.monotonic()
    web.service.stop()
    with pytest.raises((AssertionError, OSError, http.client.HTTPException)):
        read_parts(resp, 100)
    assert time.monotonic() - t0 < 15
    conn.close()
    with socket.socket() as s:  # the listening socket is closed: a restart can listen there again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_picture_changes_with_the_camera(web: Served) -> None:
    a = decode_jpeg(get(web.port, "/cameras/a/latest.jpg").body)
    assert wait_for(lambda: not np.array_equal(decode_jpeg(get(web.port, "/cameras/a/latest.jpg").body), a), 5, 0.1)


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8080", 200), ("localhost:8080", 200), ("[::1]:8080", 200), ("10.1.2.3", 200),
    ("evil.example.com", 403), ("evil.example.com:8080", 403), ("127.0.0.1.nip.io", 403),
])
def test_without_auth_only_addresses_are_accepted_as_host(web: Served, host: str, status: int) -> None:
    assert get(web.port, "/api/cameras", {"Host": host}).status == status


def test_with_auth_any_host_name_is_fine(web_auth: Served) -> None:
    assert get(web_auth.port, "/", {"Host": "gateway.example.com", **basic("ops", "pw")}).status == 200
