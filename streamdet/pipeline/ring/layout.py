"""Shared-memory layout of a frame ring (VERSION 2): dtypes, sizes, shapes, header decoding.

One POSIX shared-memory segment per camera, little-endian, all offsets fixed::

    [0, 4096)            ring header (HEADER_DTYPE): magic/version, camera id, geometry, latest_seq,
                         message seq counter, lossless flag, decoder state/heartbeat/counters/
                         error; consumed_seq (written by the reader) on its own cache line
    4096 + k * stride    slot k: 128-byte slot header (SLOT_DTYPE: seq, frame index, pts, sizes,
                         pix_fmt, colour matrix and range) then ``slot_bytes`` of pixels in the
                         packed layout of :mod:`streamdet.pipeline.types`; stride = 128 + slot_bytes

This module only describes bytes (dtypes, sizes, shapes, header decoding); the concurrency
protocol that reads and writes them lives in :mod:`streamdet.pipeline.ring.buffer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ALIGN", "CAMERA_ID_BYTES", "DECODER_STATES", "DECODE_MODES", "ERROR_BYTES", "HEADER_BYTES",
           "HEADER_DTYPE", "MAGIC", "SLOT_DTYPE", "SLOT_HEADER_BYTES", "VERSION", "RingStatus", "check_planes",
           "encode_text", "frame_nbytes", "image_shape", "packed_size", "ring_status", "round_up", "segment_bytes",
           "slot_bytes_for"]

MAGIC = int.from_bytes(b"SDETRING", "little")
VERSION = 2
HEADER_BYTES = 4096
SLOT_HEADER_BYTES = 128
ALIGN = 64
CAMERA_ID_BYTES = 64
ERROR_BYTES = 256

#: Decoder states, by code (the code is what shared memory holds; 0 = fresh ring).
DECODER_STATES: tuple[str, ...] = ("starting", "connecting", "streaming", "backoff", "ended", "failed",
                                   "stopped")

#: How the decoder decodes the camera now, by code (0 = CPU, also before the first open).
DECODE_MODES: tuple[str, ...] = ("cpu", "nvdec")

#: The ring header at offset 0 (``consumed_seq`` alone on its cache line: the reader writes it).
#: ``hw_fallbacks`` and ``decode_mode`` sit in bytes that older rings left zero (no version change).
HEADER_DTYPE = np.dtype({
    "names": ["magic", "version", "header_bytes", "slots", "slot_bytes", "slot_stride", "created",
              "latest_seq", "message_seq", "heartbeat", "state", "decoder_pid", "state_since",
              "reconnects", "frames_decoded", "frames_skipped", "error_time", "lossless", "frames_behind",
              "frames_converted", "decode_ns", "hw_fallbacks", "decode_mode", "camera_id", "last_error",
              "consumed_seq"],
    "formats": ["<u8", "<u4", "<u4", "<u4", "<u8", "<u8", "<f8",
                "<i8", "<i8", "<f8", "<u4", "<u4", "<f8",
                "<u8", "<u8", "<u8", "<f8", "<u4", "<u8",
                "<u8", "<u8", "<u8", "<u4", f"S{CAMERA_ID_BYTES}", f"S{ERROR_BYTES}", "<i8"],
    "offsets": [0, 8, 12, 16, 24, 32, 40,
                64, 72, 80, 88, 92, 96,
                104, 112, 120, 128, 136, 144,
                152, 160, 168, 176, 192, 256, 512],
    "itemsize": 576,
})

#: The header at the start of each slot (``lock`` is the slot's seqlock word).
SLOT_DTYPE = np.dtype({
    "names": ["lock", "seq", "frame_index", "pts", "ts_capture", "width", "height", "src_width",
              "src_height", "pix_fmt", "nbytes", "color_matrix", "color_range", "not_written"],
    "formats": ["<u8", "<i8", "<i8", "<f8", "<f8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4", "<u8"],
    "offsets": [0, 8, 16, 24, 32, 40, 44, 48, 52, 56, 60, 64, 68, 72],
    "itemsize": SLOT_HEADER_BYTES,
})


def round_up(n: int, align: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return (n + align - 1) // align * align


def frame_nbytes(width: int, height: int, pix_fmt: str = "bgr24") -> int:
    """Bytes of one frame of this size and pixel format (1.5 bytes per pixel for YUV 4:2:0)."""
    if pix_fmt == "bgr24":
        return width * height * 3
    if pix_fmt in ("nv12", "yuv420p"):
        return width * (height * 3 // 2)
    raise ValueError(f"unknown pixel format {pix_fmt!r}")


def slot_bytes_for(width: int, height: int, pix_fmt: str = "bgr24") -> int:
    """Slot size that holds any frame up to ``width`` x ``height`` (rounded up to 64 bytes)."""
    return round_up(frame_nbytes(width, height, pix_fmt))


def segment_bytes(slots: int, slot_bytes: int) -> int:
    """Total size of a ring segment."""
    return HEADER_BYTES + slots * (SLOT_HEADER_BYTES + round_up(slot_bytes))


def image_shape(width: int, height: int, pix_fmt: str) -> tuple[int, ...]:
    """Array shape of a packed frame (see :mod:`streamdet.pipeline.types`)."""
    return (height, width, 3) if pix_fmt == "bgr24" else (height * 3 // 2, width)


def packed_size(image: np.ndarray, pix_fmt: str) -> tuple[int, int]:
    """(width, height) of a packed frame array; ValueError if it is not a valid ``pix_fmt`` frame."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"frame must be a uint8 array, got {getattr(image, 'dtype', type(image))}")
    if pix_fmt == "bgr24":
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"bgr24 frame must be (H, W, 3), got {image.shape}")
        height, width = image.shape[:2]
    elif pix_fmt in ("nv12", "yuv420p"):
        if image.ndim != 2 or image.shape[0] % 3 or (image.shape[0] // 3) % 2 or image.shape[1] % 2:
            raise ValueError(f"{pix_fmt} frame must be (H * 3 // 2, W) with H and W even, got {image.shape}")
        height, width = image.shape[0] * 2 // 3, image.shape[1]
    else:
        raise ValueError(f"unknown pixel format {pix_fmt!r}")
    return width, height


def _plane_shapes(width: int, height: int, pix_fmt: str) -> list[list[tuple[int, ...]]]:
    """Accepted shapes of each plane given to ``write_planes``, in packed order."""
    y: list[tuple[int, ...]] = [(height, width)]
    if pix_fmt == "yuv420p":
        return [y, [(height // 2, width // 2)], [(height // 2, width // 2)]]
    if pix_fmt == "nv12":
        return [y, [(height // 2, width), (height // 2, width // 2, 2)]]
    raise ValueError(f"write_planes takes yuv420p or nv12, not {pix_fmt!r}")


def check_planes(planes: Sequence[np.ndarray], width: int, height: int, pix_fmt: str) -> None:
    """ValueError unless ``planes`` are the uint8 YUV 4:2:0 planes of an even ``width`` x ``height``
    frame: yuv420p = Y (H, W), U, V (H/2, W/2); nv12 = Y (H, W), UV (H/2, W) or (H/2, W/2, 2)."""
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError(f"{pix_fmt} needs an even, positive size, got {width}x{height}")
    shapes = _plane_shapes(width, height, pix_fmt)
    if len(planes) != len(shapes):
        raise ValueError(f"{pix_fmt} takes {len(shapes)} planes, got {len(planes)}")
    for k, (plane, ok) in enumerate(zip(planes, shapes, strict=True)):
        if not isinstance(plane, np.ndarray) or plane.dtype != np.uint8 or plane.shape not in ok:
            raise ValueError(f"{pix_fmt} plane {k} of a {width}x{height} frame must be uint8 of shape "
                             f"{' or '.join(map(str, ok))}, got {getattr(plane, 'shape', type(plane))}")


def encode_text(text: str, size: int) -> bytes:
    """UTF-8 bytes of ``text`` cut to ``size`` bytes on a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore").encode("utf-8")


@dataclass
class RingStatus:
    """Snapshot of a ring header: geometry, flow control, decoder status and counters."""

    camera: str
    slots: int
    slot_bytes: int
    latest_seq: int
    message_seq: int
    heartbeat: float
    state: str
    state_since: float
    decoder_pid: int
    reconnects: int
    frames_decoded: int
    frames_skipped: int
    last_error: str
    error_time: float
    created: float
    consumed_seq: int = 0
    lossless: bool = False
    frames_behind: int = 0
    frames_converted: int = 0
    decode_ns: int = 0
    hw_fallbacks: int = 0  # times the decoder gave up NVDEC for this camera and decoded on the CPU
    decode_mode: str = "cpu"  # how the decoder decodes the camera now: "cpu" or "nvdec"


def ring_status(h: np.ndarray, camera: str, slots: int, slot_bytes: int) -> RingStatus:
    """Decode a copy ``h`` of a ring header (HEADER_DTYPE) into a :class:`RingStatus`."""
    code = int(h["state"])
    mode = int(h["decode_mode"])
    return RingStatus(
        camera=camera, slots=slots, slot_bytes=slot_bytes,
        latest_seq=int(h["latest_seq"]), message_seq=int(h["message_seq"]),
        heartbeat=float(h["heartbeat"]),
        state=DECODER_STATES[code] if code < len(DECODER_STATES) else f"unknown({code})",
        state_since=float(h["state_since"]), decoder_pid=int(h["decoder_pid"]),
        reconnects=int(h["reconnects"]), frames_decoded=int(h["frames_decoded"]),
        frames_skipped=int(h["frames_skipped"]),
        last_error=h["last_error"].item().decode("utf-8", "replace"),
        error_time=float(h["error_time"]), created=float(h["created"]),
        consumed_seq=int(h["consumed_seq"]), lossless=bool(h["lossless"]),
        frames_behind=int(h["frames_behind"]), frames_converted=int(h["frames_converted"]),
        decode_ns=int(h["decode_ns"]), hw_fallbacks=int(h["hw_fallbacks"]),
        decode_mode=DECODE_MODES[mode] if mode < len(DECODE_MODES) else f"unknown({mode})",
    )
