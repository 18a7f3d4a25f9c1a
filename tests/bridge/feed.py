"""A fake daemon for bridge tests: a PUB socket that publishes v1 detections and stats until stopped."""

from __future__ import annotations

import threading
import time
from typing import Any

import zmq

from streamdet_client import wire

CAMERAS = ("cam1", "cam2")


def detections(camera: str, seq: int) -> dict[str, Any]:
    return wire.detection_message(camera=camera, seq=seq, frame=seq, pts=seq / 25, ts_capture=time.time(),
                                  width=640, height=480,
                                  detections=[{"box": [1, 2, 30, 40], "score": 0.9, "class_id": 0,
                                               "label": "person"}])


def stats(state: str = "streaming") -> dict[str, Any]:
    cam = {"fps": 25.0, "published": 10, "dropped": 0, "latency_ms": {"p50": 30.0, "p95": 40.0, "max": 50.0},
           "state": state, "reconnects": 0}
    return wire.stats_message(source="worker-0 cpu", interval_s=0.5, cameras=dict.fromkeys(CAMERAS, cam))


class Feed:
    """Publishes one detections message per camera every ``period_s`` and stats every 0.5 s."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.period_s = period_s
        self.sent: dict[str, int] = dict.fromkeys(CAMERAS, 0)  # camera -> next seq
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind("tcp://127.0.0.1:*")
        self.endpoint = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_stats = 0.0
        while not self._stop.is_set():
            for cam in CAMERAS:
                self._sock.send_multipart(wire.encode(detections(cam, self.sent[cam])))
                self.sent[cam] += 1
            if time.monotonic() >= next_stats:
                self._sock.send_multipart(wire.encode(stats()))
                next_stats = time.monotonic() + 0.5
            self._stop.wait(self.period_s)
        self._sock.close(linger=0)

    def __enter__(self) -> Feed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._ctx.term()
