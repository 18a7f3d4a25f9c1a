"""Broken and unusual media for decoder fault tests: truncated MP4s, empty and non-video files,
audio-only files, and a stream whose resolution changes midway.

Frames carry their number (:func:`tests.helpers.media.make_test_frame`), so a test can check
which frames a reader delivered; :func:`readable_frames` is the reference: the numbers PyAV
itself can decode from a file, errors skipped.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.helpers.media import make_test_frame, read_frame_number


def write_clip(path: str | Path, width: int = 160, height: int = 120, frames: int = 30, *, first: int = 0,
               fps: int = 25, container_format: str | None = None, faststart: bool = False, gop: int = 10) -> Path:
    """H.264 (libx264, yuv420p, no B-frames, keyframe every ``gop``) frames numbered ``first``..,
    in an MP4 (``faststart``: index at the front, as a truncated file needs to stay readable) or
    in ``container_format`` (e.g. ``mpegts``)."""
    path = Path(path)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), mode="w", format=container_format, options=options) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "g": str(gop), "keyint_min": str(gop), "bf": "0", "threads": "1"}
        for i in range(first, first + frames):
            frame = av.VideoFrame.from_ndarray(make_test_frame(i, width, height), format="bgr24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def truncated_clip(path: str | Path, width: int = 160, height: int = 120, frames: int = 30,
                   keep: float = 0.6) -> Path:
    """A faststart MP4 cut after ``keep`` of its bytes: the index promises ``frames`` frames, the
    data ends in the middle of one."""
    path = Path(path)
    write_clip(path, width, height, frames, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def unindexed_truncated_clip(path: str | Path, frames: int = 30, keep: float = 0.6) -> Path:
    """A plain MP4 (index written last) cut short: the index is gone, nothing is readable."""
    path = Path(path)
    write_clip(path, frames=frames)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def two_resolution_clip(path: str | Path, parts: tuple[tuple[int, int, int], ...] = ((160, 120, 10), (320, 240, 10)),
                        ) -> Path:
    """An MPEG-TS whose resolution changes midway: each (width, height, frames) part encoded on
    its own, the parts' bytes concatenated (as ``cat a.ts b.ts``); frame numbers keep counting."""
    path = Path(path)
    data, first = b"", 0
    for k, (w, h, n) in enumerate(parts):
        part = write_clip(path.with_name(f"{path.stem}.part{k}.ts"), w, h, n, first=first, container_format="mpegts")
        data += part.read_bytes()
        part.unlink()
        first += n
    path.write_bytes(data)
    return path


def audio_only_file(path: str | Path, seconds: float = 0.5) -> Path:
    """A WAV file (silence), whatever its name says: a container without a video stream."""
    path = Path(path)
    rate = 8000
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        samples = np.zeros((1, int(rate * seconds)), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def readable_frames(path: str | Path) -> list[int]:
    """Numbers of the frames PyAV decodes from ``path``, in order, skipping undecodable packets
    and stopping at the first demux error: what a reader of the file can deliver."""
    numbers: list[int] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
            except av.error.FFmpegError:
                with contextlib.suppress(av.error.FFmpegError):
                    numbers += [read_frame_number(f.to_ndarray(format="bgr24")) for f in stream.decode(None)]
                break
            if packet is None:
                break
            with contextlib.suppress(av.error.FFmpegError):
                numbers += [read_frame_number(f.to_ndarray(format="bgr24")) for f in packet.decode()]
    return numbers
