"""Helpers for live-view tests: a ring with known frames, HTTP requests, MJPEG parts."""

from __future__ import annotations

import base64
import http.client
import os
import uuid
from dataclasses import dataclass

import cv2
import numpy as np

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import slot_bytes_for


def ring_name() -> str:
    return f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def make_ring(camera: str, width: int = 64, height: int = 48, slots: int = 3) -> FrameRing:
    """A ring owned by the test (close and unlink it)."""
    return FrameRing.create(ring_name(), camera, slots, slot_bytes_for(width, height))


def solid_bgr(width: int, height: int, colour: tuple[int, int, int]) -> np.ndarray:
    img = np.empty((height, width, 3), np.uint8)
    img[:] = colour
    return img


def write_frame(ring: FrameRing, colour: tuple[int, int, int], index: int, width: int = 64,
                height: int = 48, src_size: tuple[int, int] | None = None) -> int:
    """Write a solid BGR frame; ts_capture is derived from ``index`` so tests can name it."""
    return ring.write(solid_bgr(width, height, colour), frame_index=index, pts=index / 25, ts_capture=1000.0 + index,
                      src_size=src_size)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def get(port: int, path: str, headers: dict[str, str] | None = None, method: str = "GET",
        timeout: float = 10.0) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
    finally:
        conn.close()


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "not a JPEG"
    return img


def read_parts(resp: http.client.HTTPResponse, count: int, boundary: str = "streamdet-frame") -> list[bytes]:
    """The JPEG payloads of the next ``count`` parts of a multipart/x-mixed-replace response."""
    parts = []
    while len(parts) < count:
        line = resp.readline()
        if not line:
            raise AssertionError(f"stream ended after {len(parts)} parts")
        if line.strip() != f"--{boundary}".encode():
            continue
        length = None
        while True:
            header = resp.readline().strip()
            if not header:
                break
            name, _, value = header.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        assert length is not None, "part without Content-Length"
        parts.append(resp.read(length))
    return parts
