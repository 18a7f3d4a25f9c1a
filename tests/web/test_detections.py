"""Detections for the live view from the publish proxy's inproc endpoint: watched cameras only,
with CurveZMQ on the public endpoint, across a proxy restart."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamdet import wire
from streamdet.pipeline.worker.publish import Publisher
from streamdet.transport.keys import load_server_keys
from streamdet.transport.proxy import PublishProxy
from streamdet.web.detections import DetectionFeed
from tests.helpers.curve import make_keys
from tests.helpers.daemon import wait_for


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="sdw-") as d:
        yield Path(d)


def det(camera: str, seq: int) -> dict[str, Any]:
    return wire.detection_message(camera=camera, seq=seq, frame=seq, pts=0.0, ts_capture=1.0, width=8, height=8,
                                  detections=[])


class Pump:
    """A worker publishing detections of cameras a and b every 10 ms."""

    def __init__(self, internal: str) -> None:
        self.pub = Publisher(internal)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        seq = 0
        while not self.stop.is_set():
            for cam in ("a", "b"):
                self.pub.send(det(cam, seq))
            seq += 1
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pub.close()


def test_only_watched_cameras_arrive_even_with_curve(ipc_dir: Path, tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    internal = f"ipc://{ipc_dir}/internal.sock"
    server = load_server_keys(keys.server_secret, keys.authorized_dir)
    got: list[dict[str, Any]] = []
    watched = {"a"}
    with PublishProxy(internal, "tcp://127.0.0.1:*", curve=server) as proxy:
        pump = Pump(internal)
        feed = DetectionFeed(lambda: proxy, lambda: set(watched), got.append)
        feed.start()
        try:
            assert wait_for(lambda: len(got) >= 10, 10)
            assert {m["camera"] for m in got} == {"a"}
            assert proxy.rejected_handshakes == 0  # inproc has no handshake
            watched.clear()  # nobody watches: the subscription goes away
            time.sleep(0.3)
            count = len(got)
            time.sleep(0.3)
            assert len(got) == count
        finally:
            feed.stop()
            pump.close()


def test_a_restarted_proxy_is_followed_and_its_stop_never_hangs(ipc_dir: Path) -> None:
    internal = f"ipc://{ipc_dir}/internal.sock"
    got: list[dict[str, Any]] = []
    current: list[PublishProxy | None] = [PublishProxy(internal, "tcp://127.0.0.1:*").start()]
    pump = Pump(internal)
    feed = DetectionFeed(lambda: current[0], lambda: {"b"}, got.append)
    feed.start()
    try:
        assert wait_for(lambda: len(got) >= 5, 10)
        old = current[0]
        assert old is not None
        t0 = time.monotonic()
        old.stop()  # terminates the context our SUB lives in
        assert time.monotonic() - t0 < 5
        current[0] = None
        n = len(got)
        current[0] = PublishProxy(internal, "tcp://127.0.0.1:*").start()
        assert wait_for(lambda: len(got) >= n + 5, 15)
        assert {m["camera"] for m in got} == {"b"}
    finally:
        feed.stop()
        pump.close()
        if current[0] is not None:
            current[0].stop()
