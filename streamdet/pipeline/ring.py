"""Stage 2: per-camera shared-memory frame ring (latest wins).

Consumes: decoded frames from the camera's decoder thread (decoder process, ``write``).
Produces: the newest unread frame, copied out, for the worker process (``read_latest``), plus
the decoder's status (state, heartbeat, counters) for the supervisor and the worker's stats.
Processes: the supervisor creates and unlinks the segment (``FrameRing.create``/``unlink``);
decoder and worker processes ``attach`` to it, without resource tracking.

Layout (one POSIX shared-memory segment, little-endian, all offsets fixed)::

    [0, 4096)            ring header (_HEADER): magic/version, camera id, geometry,
                         latest_seq, message seq counter, decoder state/heartbeat/counters/error
    4096 + k * stride    slot k: 64-byte slot header (_SLOT) then ``slot_bytes`` of pixels;
                         stride = 64 + slot_bytes rounded up to 64

Frame ``seq`` numbers start at 1 (0 = nothing written yet); frame ``seq`` goes to slot
``seq % slots``.

Protocol (one writer, any number of readers, no locks, the writer never waits):

- writer: ``lock += 1`` (odd: slot being written), store the slot header and pixels,
  ``lock += 1`` (even: stable), then ``latest_seq = seq``.
- reader: read ``latest_seq``; for the newest candidate slots, read ``lock`` (skip if odd), copy
  header and pixels, re-read ``lock``; the copy is consistent if both reads are equal. If the
  slot's ``seq`` is newer than expected the writer lapped it: that newer frame is taken. A
  reader that races with the writer retries; it never blocks the writer.

Memory ordering: every store/load is a plain numpy store/load executed in program order by
CPython; on x86-64 (TSO) stores are seen by other cores in program order and loads are not
reordered with other loads, which is all the seqlock needs. Weakly ordered CPUs (ARM) would
need explicit fences, which numpy cannot express: this module targets x86-64.

The message sequence counter (``next_message_seq``) and the decoder status fields are plain
read-modify-write stores: each has a single writer at a time (one worker owns a camera; one
decoder thread writes a camera's status), so no atomic instruction is needed. ``last_error``
is not seqlocked: a reader racing an update may see mixed text, which is harmless.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import math
import mmap
import os
import time
from dataclasses import dataclass
from multiprocessing import resource_tracker, shared_memory

import numpy as np

MAGIC = int.from_bytes(b"SDETRING", "little")
VERSION = 1
HEADER_BYTES = 4096
SLOT_HEADER_BYTES = 64
ALIGN = 64
CAMERA_ID_BYTES = 64
ERROR_BYTES = 256

#: Decoder states, by code (the code is what shared memory holds; 0 = fresh ring).
DECODER_STATES: tuple[str, ...] = ("starting", "connecting", "streaming", "backoff", "ended", "failed",
                                   "stopped")
#: Pixel formats, by code. bgr24 is (H, W, 3); nv12 and yuv420p are (H * 3 // 2, W) planes.
PIX_FMTS: tuple[str, ...] = ("none", "bgr24", "nv12", "yuv420p")

_HEADER = np.dtype({
    "names": ["magic", "version", "header_bytes", "slots", "slot_bytes", "slot_stride", "created",
              "latest_seq", "message_seq", "heartbeat", "state", "decoder_pid", "state_since",
              "reconnects", "frames_decoded", "frames_skipped", "error_time", "camera_id",
              "last_error"],
    "formats": ["<u8", "<u4", "<u4", "<u4", "<u8", "<u8", "<f8",
                "<i8", "<i8", "<f8", "<u4", "<u4", "<f8",
                "<u8", "<u8", "<u8", "<f8", f"S{CAMERA_ID_BYTES}", f"S{ERROR_BYTES}"],
    "offsets": [0, 8, 12, 16, 24, 32, 40,
                64, 72, 80, 88, 92, 96,
                104, 112, 120, 128, 192, 256],
    "itemsize": 512,
})

_SLOT = np.dtype({
    "names": ["lock", "seq", "frame_index", "pts", "ts_capture", "width", "height", "src_width",
              "src_height", "pix_fmt", "nbytes"],
    "formats": ["<u8", "<i8", "<i8", "<f8", "<f8", "<u4", "<u4", "<u4", "<u4", "<u4", "<u4"],
    "offsets": [0, 8, 16, 24, 32, 40, 44, 48, 52, 56, 60],
    "itemsize": SLOT_HEADER_BYTES,
})


def _round_up(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


def frame_nbytes(width: int, height: int, pix_fmt: str = "bgr24") -> int:
    """Bytes of one frame of this size and pixel format."""
    if pix_fmt == "bgr24":
        return width * height * 3
    if pix_fmt in ("nv12", "yuv420p"):
        return width * (height * 3 // 2)
    raise ValueError(f"unknown pixel format {pix_fmt!r}")


def slot_bytes_for(width: int, height: int, pix_fmt: str = "bgr24") -> int:
    """Slot size that holds any frame up to ``width`` x ``height`` (rounded up to 64 bytes)."""
    return _round_up(frame_nbytes(width, height, pix_fmt))


def _image_shape(width: int, height: int, pix_fmt: str) -> tuple[int, ...]:
    return (height, width, 3) if pix_fmt == "bgr24" else (height * 3 // 2, width)


def _encode_text(text: str, size: int) -> bytes:
    """UTF-8 bytes of ``text`` cut to ``size`` bytes on a character boundary."""
    return text.encode("utf-8")[:size].decode("utf-8", "ignore").encode("utf-8")


@dataclass
class Frame:
    """One frame copied out of a ring (``image`` is owned by the caller)."""

    camera: str
    seq: int
    frame_index: int
    pts: float
    ts_capture: float
    width: int
    height: int
    src_width: int
    src_height: int
    pix_fmt: str
    image: np.ndarray
    dropped: int


@dataclass
class RingStatus:
    """Snapshot of a ring header: geometry, decoder status and counters."""

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


class FrameRing:
    """A camera's ring of frame slots in shared memory (see the module docstring for the protocol)."""

    def __init__(self, name: str, buf: memoryview, closer: object, owner: bool) -> None:
        """Use :meth:`create` or :meth:`attach`."""
        self.name = name
        self.owner = owner
        self._closer = closer  # SharedMemory (owner) or mmap (attached)
        self._buf = buf
        self._unlinked = False
        self._map_views(buf)

    # -- construction -------------------------------------------------------------------------

    def _map_views(self, buf: memoryview) -> None:
        self._hdr = np.ndarray((), dtype=_HEADER, buffer=buf)
        slots = int(self._hdr["slots"])
        stride = int(self._hdr["slot_stride"])
        self.slots = slots
        self.slot_bytes = int(self._hdr["slot_bytes"])
        self.camera_id = self._hdr["camera_id"].item().decode("utf-8", "replace")
        self._slot_hdr = np.ndarray((slots,), dtype=_SLOT, buffer=buf, offset=HEADER_BYTES,
                                    strides=(stride,))
        self._lock = self._slot_hdr["lock"]
        self._data = np.ndarray((slots, self.slot_bytes), dtype=np.uint8, buffer=buf,
                                offset=HEADER_BYTES + SLOT_HEADER_BYTES, strides=(stride, 1))

    @staticmethod
    def segment_bytes(slots: int, slot_bytes: int) -> int:
        """Total size of a ring segment."""
        return HEADER_BYTES + slots * (SLOT_HEADER_BYTES + _round_up(slot_bytes))

    @classmethod
    def create(cls, name: str, camera_id: str, slots: int, slot_bytes: int) -> FrameRing:
        """Create the segment (supervisor only; it alone unlinks). Raises FileExistsError."""
        if slots < 2:
            raise ValueError("a ring needs at least 2 slots")
        if slot_bytes <= 0:
            raise ValueError("slot_bytes must be positive")
        cam = camera_id.encode("utf-8")
        if len(cam) > CAMERA_ID_BYTES:
            raise ValueError(f"camera id longer than {CAMERA_ID_BYTES} bytes: {camera_id!r}")
        slot_bytes = _round_up(slot_bytes)
        shm = shared_memory.SharedMemory(name=name, create=True, size=cls.segment_bytes(slots, slot_bytes))
        hdr = np.ndarray((), dtype=_HEADER, buffer=shm.buf)
        hdr["version"] = VERSION
        hdr["header_bytes"] = HEADER_BYTES
        hdr["slots"] = slots
        hdr["slot_bytes"] = slot_bytes
        hdr["slot_stride"] = SLOT_HEADER_BYTES + slot_bytes
        hdr["created"] = time.time()
        hdr["camera_id"] = cam
        hdr["magic"] = MAGIC  # last: a reader seeing the magic sees a complete header
        del hdr
        return cls(shm.name, shm.buf, shm, owner=True)

    @classmethod
    def attach(cls, name: str) -> FrameRing:
        """Map an existing segment (decoders, workers) without registering it with the resource
        tracker, so a child's exit never unlinks it nor warns about a leak."""
        fd = _posixshmem.shm_open("/" + name.lstrip("/"), os.O_RDWR, mode=0o600)
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_BYTES:
                raise ValueError(f"shared memory {name!r} is not a streamdet frame ring")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        buf = memoryview(mm)
        hdr = np.ndarray((), dtype=_HEADER, buffer=buf)
        ok = (int(hdr["magic"]) == MAGIC and int(hdr["version"]) == VERSION
              and size >= cls.segment_bytes(int(hdr["slots"]), int(hdr["slot_bytes"])))
        del hdr
        if not ok:
            buf.release()
            mm.close()
            raise ValueError(f"shared memory {name!r} is not a streamdet frame ring v{VERSION}")
        return cls(name.lstrip("/"), buf, mm, owner=False)

    # -- writer side (decoder) ----------------------------------------------------------------

    def write(self, image: np.ndarray, *, frame_index: int, pts: float, ts_capture: float,
              src_size: tuple[int, int] | None = None, pix_fmt: str = "bgr24") -> int:
        """Store a frame in the next slot and return its seq. Never blocks (latest wins).

        ``image`` is (H, W, 3) uint8 for bgr24, (H * 3 // 2, W) for nv12/yuv420p; ``src_size`` is
        the (width, height) before the decoder downscaled (default: the image size). Raises
        ValueError if the frame does not fit in a slot.
        """
        if image.dtype != np.uint8:
            raise ValueError(f"frame must be uint8, got {image.dtype}")
        if pix_fmt == "bgr24":
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"bgr24 frame must be (H, W, 3), got {image.shape}")
            height, width = image.shape[:2]
        elif pix_fmt in ("nv12", "yuv420p"):
            if image.ndim != 2 or image.shape[0] % 3:
                raise ValueError(f"{pix_fmt} frame must be (H * 3 // 2, W), got {image.shape}")
            height, width = image.shape[0] * 2 // 3, image.shape[1]
        else:
            raise ValueError(f"unknown pixel format {pix_fmt!r}")
        nbytes = image.size
        if nbytes > self.slot_bytes:
            raise ValueError(f"frame {width}x{height} {pix_fmt} ({nbytes} bytes) exceeds the ring's slot "
                             f"size ({self.slot_bytes} bytes)")
        src_w, src_h = src_size if src_size is not None else (width, height)
        seq = int(self._hdr["latest_seq"]) + 1
        i = seq % self.slots
        hdr = self._slot_hdr
        self._lock[i] += 1  # odd: being written
        hdr["seq"][i] = seq
        hdr["frame_index"][i] = frame_index
        hdr["pts"][i] = pts
        hdr["ts_capture"][i] = ts_capture
        hdr["width"][i] = width
        hdr["height"][i] = height
        hdr["src_width"][i] = src_w
        hdr["src_height"][i] = src_h
        hdr["pix_fmt"][i] = PIX_FMTS.index(pix_fmt)
        hdr["nbytes"][i] = nbytes
        np.copyto(self._data[i, :nbytes].reshape(image.shape), image)
        self._lock[i] += 1  # even: stable
        self._hdr["latest_seq"] = seq
        return seq

    def set_state(self, state: str, error: str | None = None) -> None:
        """Record the decoder state (one of DECODER_STATES) and, optionally, an error text."""
        code = DECODER_STATES.index(state)
        if error is not None:
            self.set_error(error)
        if int(self._hdr["state"]) != code:
            self._hdr["state_since"] = time.time()
            self._hdr["state"] = code

    def set_error(self, text: str) -> None:
        """Record the last error (already redacted by the caller: never put credentials here)."""
        self._hdr["last_error"] = _encode_text(text, ERROR_BYTES)
        self._hdr["error_time"] = time.time()

    def heartbeat(self, pid: int | None = None) -> None:
        """Record that the decoder is alive now (wall time), and its pid when given."""
        self._hdr["heartbeat"] = time.time()
        if pid is not None:
            self._hdr["decoder_pid"] = pid

    def add_counts(self, *, decoded: int = 0, skipped: int = 0, reconnects: int = 0) -> None:
        """Add to the decoder counters (frames decoded, frames skipped by max_fps, reopens)."""
        if decoded:
            self._hdr["frames_decoded"] += decoded
        if skipped:
            self._hdr["frames_skipped"] += skipped
        if reconnects:
            self._hdr["reconnects"] += reconnects

    # -- reader side (worker) -----------------------------------------------------------------

    @property
    def latest_seq(self) -> int:
        """Seq of the newest complete frame (0: none yet)."""
        return int(self._hdr["latest_seq"])

    def read_latest(self, after_seq: int = 0, retries: int = 100) -> Frame | None:
        """The newest complete frame with ``seq > after_seq``, copied out, or None.

        ``Frame.dropped`` = frames written after ``after_seq`` but never returned (only the newest
        is read). A worker that starts late should pass the current ``latest_seq - 1`` rather
        than 0 if it does not want the backlog counted as dropped.
        """
        for attempt in range(retries):
            latest = int(self._hdr["latest_seq"])
            if latest <= after_seq:
                return None
            # newest first; older slots only if the newer ones are being rewritten right now
            lowest = max(after_seq, latest - self.slots)
            for seq in range(latest, lowest, -1):
                frame = self._try_read(seq % self.slots, after_seq)
                if frame is not None:
                    return frame
            if attempt > 2:
                time.sleep(0.0001)
        return None

    def _try_read(self, i: int, after_seq: int) -> Frame | None:
        hdr = self._slot_hdr
        lock = int(self._lock[i])
        if lock & 1:
            return None
        seq = int(hdr["seq"][i])
        if seq <= after_seq:
            return None
        nbytes = int(hdr["nbytes"][i])
        width, height = int(hdr["width"][i]), int(hdr["height"][i])
        pix_code = int(hdr["pix_fmt"][i])
        frame_index, pts, ts = int(hdr["frame_index"][i]), float(hdr["pts"][i]), float(hdr["ts_capture"][i])
        src_w, src_h = int(hdr["src_width"][i]), int(hdr["src_height"][i])
        if nbytes > self.slot_bytes or not 0 < pix_code < len(PIX_FMTS):
            return None  # torn header; the lock check below would fail anyway
        data = self._data[i, :nbytes].copy()
        if int(self._lock[i]) != lock:
            return None
        pix_fmt = PIX_FMTS[pix_code]
        shape = _image_shape(width, height, pix_fmt)
        if math.prod(shape) != nbytes:
            return None
        return Frame(camera=self.camera_id, seq=seq, frame_index=frame_index, pts=pts, ts_capture=ts,
                     width=width, height=height, src_width=src_w, src_height=src_h, pix_fmt=pix_fmt,
                     image=data.reshape(shape), dropped=max(0, seq - after_seq - 1))

    def next_message_seq(self) -> int:
        """Per-camera wire message seq: 0, 1, 2, ... kept in shared memory so that it survives a
        worker restart. Plain increment: only the one worker that owns the camera calls it."""
        value = int(self._hdr["message_seq"])
        self._hdr["message_seq"] = value + 1
        return value

    def status(self) -> RingStatus:
        """Snapshot of the header (geometry, decoder state, heartbeat, counters)."""
        h = self._hdr.copy()
        code = int(h["state"])
        return RingStatus(
            camera=self.camera_id, slots=self.slots, slot_bytes=self.slot_bytes,
            latest_seq=int(h["latest_seq"]), message_seq=int(h["message_seq"]),
            heartbeat=float(h["heartbeat"]),
            state=DECODER_STATES[code] if code < len(DECODER_STATES) else f"unknown({code})",
            state_since=float(h["state_since"]), decoder_pid=int(h["decoder_pid"]),
            reconnects=int(h["reconnects"]), frames_decoded=int(h["frames_decoded"]),
            frames_skipped=int(h["frames_skipped"]),
            last_error=h["last_error"].item().decode("utf-8", "replace"),
            error_time=float(h["error_time"]), created=float(h["created"]),
        )

    # -- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap (idempotent). Frames already returned stay valid: they are copies."""
        if self._closer is None:
            return
        self._hdr = self._slot_hdr = self._lock = self._data = None  # type: ignore[assignment]
        self._buf.release()
        self._closer.close()  # type: ignore[attr-defined]
        self._closer = None

    def unlink(self) -> None:
        """Remove the segment name (the supervisor, once its children are gone). Idempotent;
        mappings still open elsewhere stay valid until closed."""
        if self._unlinked:
            return
        self._unlinked = True
        with contextlib.suppress(FileNotFoundError):
            _posixshmem.shm_unlink("/" + self.name)
        if self.owner:
            # the owner's SharedMemory registered the name with the resource tracker
            resource_tracker.unregister("/" + self.name, "shared_memory")

    def __enter__(self) -> FrameRing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameRing({self.name!r}, camera={self.camera_id!r}, slots={self.slots}, " \
               f"slot_bytes={self.slot_bytes}, owner={self.owner})"
