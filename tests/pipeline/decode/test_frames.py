"""frames: decoded PyAV frames as ring pixels (sizes, plane views, colour tags) and
``frame_to_image``, which must give byte for byte what the decoder writes into a ring."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from streamdet.pipeline.decode.frames import frame_to_image, plane_views, scaled_size, to_ring_format
from streamdet.pipeline.decode.reader import CameraReader, CameraSource
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.layout import slot_bytes_for
from streamdet.pipeline.types import Frame
from tests.helpers.ring_reader import RingCollector
from tests.helpers.yuv_clips import decoded_frames, make_yuv_clip

# -- pure helpers ---------------------------------------------------------------------------------


def test_scaled_size() -> None:
    assert scaled_size(640, 480, 1920, 1080) == (640, 480)
    assert scaled_size(3840, 2160, 1920, 1080) == (1920, 1080)
    assert scaled_size(1000, 1000, 1920, 500) == (500, 500)
    assert scaled_size(320, 240, 100, 100) == (100, 74)  # YUV 4:2:0: even sizes
    assert scaled_size(161, 121, 1920, 1080) == (160, 120)
    assert scaled_size(161, 121, 1920, 1080, pix_fmt="bgr24") == (161, 121)
    w, h = scaled_size(640, 480, 1920, 1080, max_bytes=320 * 240 * 3 // 2)
    assert w * h * 3 // 2 <= 320 * 240 * 3 // 2 and abs(w / h - 4 / 3) < 0.02 and w % 2 == h % 2 == 0
    assert w >= 316  # 1.5 bytes per pixel: no needless shrinking
    w, h = scaled_size(640, 480, 1920, 1080, max_bytes=320 * 240 * 3, pix_fmt="bgr24")
    assert w * h * 3 <= 320 * 240 * 3 and abs(w / h - 4 / 3) < 0.02


def _random_frame(width: int, height: int, pix_fmt: str, seed: int = 0) -> av.VideoFrame:
    """A frame whose planes (line padding included) hold random bytes."""
    frame = av.VideoFrame(width, height, pix_fmt)
    rng = np.random.default_rng(seed)
    for plane in frame.planes:
        buf = np.frombuffer(plane, np.uint8)
        buf[:] = rng.integers(0, 256, buf.size, dtype=np.uint8)
    return frame


def test_plane_views_nv12_and_i420_without_padding() -> None:
    for pix_fmt in ("nv12", "yuv420p"):
        frame = _random_frame(66, 50, pix_fmt)  # padded lines
        views = plane_views(frame, pix_fmt)
        assert np.array_equal(np.concatenate([v.reshape(-1) for v in views]), frame.to_ndarray().reshape(-1))


def test_native_formats_used_as_they_are() -> None:
    for pix_fmt, ring_fmt in (("yuv420p", "yuv420p"), ("yuvj420p", "yuv420p"), ("nv12", "nv12")):
        frame = _random_frame(64, 48, pix_fmt)
        rf = to_ring_format(frame, 1920, 1080)
        assert rf.frame is frame and not rf.converted
        assert (rf.pix_fmt, rf.color_range) == (ring_fmt, "full" if pix_fmt == "yuvj420p" else "limited")


def test_frame_to_image_packs_an_owned_copy() -> None:
    frame = _random_frame(66, 50, "nv12", seed=3)
    img, converted = frame_to_image(frame)
    assert not converted and (img.pix_fmt, img.width, img.height) == ("nv12", 66, 50)
    assert img.data.shape == (75, 66) and img.data.flags.c_contiguous
    assert np.array_equal(img.data, frame.to_ndarray())  # Y rows then interleaved UV rows, padding dropped
    assert not any(np.shares_memory(img.data, np.frombuffer(p, np.uint8)) for p in frame.planes)


def test_frame_to_image_converts_rgb_odd_and_oversize() -> None:
    rgb = av.VideoFrame.from_ndarray(np.full((49, 65, 3), 200, np.uint8), format="rgb24")
    img, converted = frame_to_image(rgb)
    assert converted and (img.pix_fmt, img.color_matrix, img.color_range) == ("yuv420p", "bt601", "limited")
    assert (img.width, img.height) == (64, 48)  # odd size: largest even size
    big = _random_frame(640, 480, "yuv420p")
    img, converted = frame_to_image(big, max_width=320, max_height=320)
    assert converted and (img.width, img.height, img.pix_fmt) == (320, 240, "yuv420p")
    img, converted = frame_to_image(big, max_width=640, max_height=480)
    assert not converted and np.array_equal(img.data, big.to_ndarray())


# -- the same bytes as the decoder writes into a ring -----------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("frames")
    return {
        "yuv420p": make_yuv_clip(d / "i420.mp4", frames=5),
        "yuvj420p": make_yuv_clip(d / "j420.mp4", frames=5, pix_fmt="yuvj420p"),
        "yuv444p": make_yuv_clip(d / "444.mp4", frames=5, pix_fmt="yuv444p"),
    }


def _ring_frames(path: Path, max_width: int, max_height: int) -> tuple[list[Frame], int]:
    """Every frame the decoder writes for ``path`` into a ring sized as the supervisor sizes it,
    and its ``frames_converted`` counter."""
    ring = FrameRing.create(f"sdtest_{os.getpid()}_{uuid.uuid4().hex[:8]}", "cam", 3,
                            slot_bytes_for(max_width, max_height, "yuv420p"))
    try:
        with RingCollector(ring) as reader:
            source = CameraSource.of("cam", str(path), realtime=False, max_width=max_width, max_height=max_height)
            CameraReader(source, ring, threading.Event()).run()  # lossless, no loop: returns at EOF
            assert ring.status().state == "ended"
            deadline = time.monotonic() + 10
            while len(reader.frames) < ring.latest_seq and time.monotonic() < deadline:
                time.sleep(0.01)
            frames = list(reader.frames)
        return frames, ring.status().frames_converted
    finally:
        ring.close()
        ring.unlink()


@pytest.mark.parametrize(("clip", "max_size", "expected"), [
    ("yuv420p", (1920, 1080), ("yuv420p", "bt601", "limited", 160, 120, False)),
    ("yuvj420p", (1920, 1080), ("yuv420p", "bt601", "full", 160, 120, False)),
    ("yuv444p", (1920, 1080), ("yuv420p", "bt601", "limited", 160, 120, True)),
    ("yuv420p", (100, 100), ("yuv420p", "bt601", "limited", 100, 74, True)),  # oversize: downscaled
])
def test_frame_to_image_matches_the_ring_bytes(clips, clip, max_size, expected) -> None:
    ring_frames, ring_converted = _ring_frames(clips[clip], *max_size)
    decoded = decoded_frames(clips[clip])
    assert len(ring_frames) == len(decoded) == 5
    for f, frame in zip(ring_frames, decoded, strict=True):
        img, converted = frame_to_image(frame, *max_size)
        assert (img.pix_fmt, img.color_matrix, img.color_range, img.width, img.height, converted) == expected
        assert (f.pix_fmt, f.color_matrix, f.color_range, f.width, f.height) == expected[:5]
        assert img.data.shape == f.image.shape and img.data.tobytes() == f.image.tobytes()
    assert ring_converted == (5 if expected[5] else 0)
