"""Stage 2: per-camera shared-memory frame ring (latest wins, or lossless for unpaced files).

Consumes: decoded frames from the camera's decoder thread (decoder process: ``write_planes``
copies YUV planes as they come, ``write`` takes packed arrays).
Produces: frames for the worker process (``read_next``/``read_latest``, optionally into the
caller's buffer), plus the decoder's status (state, heartbeat, counters) for the supervisor.
Processes: the supervisor creates and unlinks the segment (``FrameRing.create``/``unlink``);
decoder and worker processes ``attach`` to it, without resource tracking.

Layout: one POSIX shared-memory segment (VERSION 2): a 4096-byte ring header, then ``slots``
slots of a 128-byte slot header plus ``slot_bytes`` of packed pixels; see
:mod:`streamdet.pipeline.ring.layout`, which also defines :class:`Frame` and :class:`RingStatus`.

Frame ``seq`` numbers start at 1 (0 = nothing written yet); frame ``seq`` goes to slot
``seq % slots``.

Protocol (one writer, one consuming reader, no locks):

- writer: ``lock += 1`` (odd: slot being written), store the slot header and pixels,
  ``lock += 1`` (even: stable), then ``latest_seq = seq``.
- reader: read ``latest_seq``; read a slot's ``lock`` (skip if odd), copy header and pixels,
  re-read ``lock``; the copy is consistent if both reads are equal. After a consistent copy it
  stores ``consumed_seq = seq`` (never lowering it). The one implementation is
  :class:`~streamdet.pipeline.ring.slots.SlotReader` (also used by the GPU's DMA path).
- latest wins (default; live sources, paced files): the writer never waits and overwrites the
  oldest slot; ``read_latest`` returns the newest frame and ``Frame.dropped`` counts the frames
  the reader never saw (overwritten before inference).
- lossless (``set_lossless(True)`` by the writer; unpaced files): the writer of ``seq`` first
  waits until ``seq - slots <= consumed_seq`` (``wait_writable``: heartbeats, aborts on stop),
  so no unread frame is overwritten; ``read_next`` returns ``after_seq + 1``, in order. A
  (re)started reader continues from ``resume_seq()`` (= ``consumed_seq``), so a worker restart
  loses nothing and repeats nothing, except that a worker that dies after copying a frame (its
  ``consumed_seq`` is stored) but before publishing its detections loses that one frame.

Memory ordering: every store/load is a plain numpy store/load executed in program order by
CPython; on x86-64 (TSO) stores are seen by other cores in program order and loads are not
reordered with other loads, which is all the seqlock needs. Weakly ordered CPUs (ARM) would
need explicit fences, which numpy cannot express: this module targets x86-64.

Counters and status fields are plain read-modify-write stores, each with a single writer (the
camera's decoder thread, or the one worker that owns the camera: ``message_seq``,
``consumed_seq``), so no atomic instruction is needed. ``last_error`` is not seqlocked: a
reader racing an update may see mixed text, which is harmless.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import mmap
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker, shared_memory
from typing import Protocol

import numpy as np

from streamdet.pipeline.ring.layout import (
    CAMERA_ID_BYTES,
    DECODE_MODES,
    DECODER_STATES,
    ERROR_BYTES,
    HEADER_BYTES,
    HEADER_DTYPE,
    MAGIC,
    SLOT_DTYPE,
    SLOT_HEADER_BYTES,
    VERSION,
    RingStatus,
    check_planes,
    encode_text,
    frame_nbytes,
    image_shape,
    packed_size,
    ring_status,
    round_up,
    segment_bytes,
)
from streamdet.pipeline.ring.slots import SlotReader
from streamdet.pipeline.types import COLOR_MATRICES, COLOR_RANGES, PIX_FMTS, Frame

__all__ = ["FrameRing", "WriteAborted"]

_WAIT_POLL_S = 0.005  # longest sleep of a writer waiting for the reader (lossless)
_BEAT_S = 0.5  # heartbeat period of a waiting writer


class _EventLike(Protocol):
    def is_set(self) -> bool: ...


class WriteAborted(Exception):
    """A lossless write gave up waiting for the reader because stop was set."""


def _check_out(out: np.ndarray | None) -> None:
    if out is not None and (not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 1
                            or not out.flags.c_contiguous):
        raise ValueError("out must be a 1-D contiguous uint8 numpy array")


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
        self._hdr = np.ndarray((), dtype=HEADER_DTYPE, buffer=buf)
        slots = int(self._hdr["slots"])
        stride = int(self._hdr["slot_stride"])
        self.slots = slots
        self.slot_bytes = int(self._hdr["slot_bytes"])
        self.camera_id = self._hdr["camera_id"].item().decode("utf-8", "replace")
        self._slot_hdr = np.ndarray((slots,), dtype=SLOT_DTYPE, buffer=buf, offset=HEADER_BYTES,
                                    strides=(stride,))
        self._lock = self._slot_hdr["lock"]
        self._data = np.ndarray((slots, self.slot_bytes), dtype=np.uint8, buffer=buf,
                                offset=HEADER_BYTES + SLOT_HEADER_BYTES, strides=(stride, 1))
        self._reader = SlotReader(buf, self.camera_id)  # every read goes through it (ring.slots)

    @staticmethod
    def segment_bytes(slots: int, slot_bytes: int) -> int:
        """Total size of a ring segment."""
        return segment_bytes(slots, slot_bytes)

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
        slot_bytes = round_up(slot_bytes)
        shm = shared_memory.SharedMemory(name=name, create=True, size=cls.segment_bytes(slots, slot_bytes))
        hdr = np.ndarray((), dtype=HEADER_DTYPE, buffer=shm.buf)
        hdr["version"] = VERSION
        hdr["header_bytes"] = HEADER_BYTES
        hdr["slots"] = slots
        hdr["slot_bytes"] = slot_bytes
        hdr["slot_stride"] = SLOT_HEADER_BYTES + slot_bytes
        hdr["created"] = time.time()
        hdr["camera_id"] = cam
        hdr["magic"] = MAGIC  # last: a reader seeing the magic sees a complete header
        del hdr
        buf = shm.buf
        assert buf is not None  # a segment just created is mapped
        return cls(shm.name, buf, shm, owner=True)

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
        hdr = np.ndarray((), dtype=HEADER_DTYPE, buffer=buf)
        ok = (int(hdr["magic"]) == MAGIC and int(hdr["version"]) == VERSION
              and size >= cls.segment_bytes(int(hdr["slots"]), int(hdr["slot_bytes"])))
        del hdr
        if not ok:
            buf.release()
            mm.close()
            raise ValueError(f"shared memory {name!r} is not a streamdet frame ring v{VERSION}")
        return cls(name.lstrip("/"), buf, mm, owner=False)

    # -- writer side (decoder) ----------------------------------------------------------------

    def set_lossless(self, lossless: bool) -> None:
        """Writer: choose lossless flow control (wait for the reader) or latest wins (overwrite)."""
        self._hdr["lossless"] = int(bool(lossless))

    def writable(self) -> bool:
        """Whether the next write would not overwrite an unread frame (always true in latest-wins mode)."""
        h = self._hdr
        return not int(h["lossless"]) or int(h["latest_seq"]) + 1 - self.slots <= int(h["consumed_seq"])

    def wait_writable(self, stop: _EventLike | None = None, beat: Callable[[], None] | None = None,
                      timeout: float | None = None) -> bool:
        """Block until :meth:`writable` (polling every <= 5 ms, calling ``beat`` every 0.5 s).
        Returns False as soon as ``stop`` is set, or when ``timeout`` seconds passed first."""
        if self.writable():
            return True
        start = time.monotonic()
        next_beat = start + _BEAT_S
        delay = 0.0002
        while not self.writable():
            if stop is not None and stop.is_set():
                return False
            now = time.monotonic()
            if timeout is not None and now - start >= timeout:
                return False
            if beat is not None and now >= next_beat:
                beat()
                next_beat = now + _BEAT_S
            time.sleep(delay)
            delay = min(delay * 2, _WAIT_POLL_S)
        return True

    def write(self, image: np.ndarray, *, frame_index: int, pts: float, ts_capture: float,
              src_size: tuple[int, int] | None = None, pix_fmt: str = "bgr24", color_matrix: str = "bt601",
              color_range: str = "limited", stop: _EventLike | None = None,
              beat: Callable[[], None] | None = None) -> int:
        """Store a packed frame in the next slot and return its seq.

        ``image`` is (H, W, 3) uint8 for bgr24, (H * 3 // 2, W) (H, W even) for nv12/yuv420p;
        ``src_size`` is the (width, height) before the decoder downscaled (default: the image
        size). Latest wins: never blocks. Lossless: waits for the reader first (see
        :meth:`wait_writable`; without ``stop`` as long as it takes; raises
        :class:`WriteAborted` if ``stop`` is set meanwhile).
        Raises ValueError if the frame is malformed or does not fit in a slot.
        """
        width, height = packed_size(image, pix_fmt)
        i, seq, dst = self._begin(width, height, pix_fmt, color_matrix, color_range, frame_index, pts,
                                  ts_capture, src_size, stop, beat)
        np.copyto(dst.reshape(image.shape), image)
        return self._commit(i, seq)

    def write_planes(self, planes: Sequence[np.ndarray], *, width: int, height: int, pix_fmt: str,
                     color_matrix: str, color_range: str, frame_index: int, pts: float, ts_capture: float,
                     src_size: tuple[int, int] | None = None, stop: _EventLike | None = None,
                     beat: Callable[[], None] | None = None) -> int:
        """Copy YUV 4:2:0 planes straight into the next slot's packed layout; return the seq.

        ``planes`` are uint8 arrays, possibly strided views of padded decoder lines: yuv420p = Y
        (H, W), U (H/2, W/2), V (H/2, W/2); nv12 = Y (H, W), UV (H/2, W) or (H/2, W/2, 2).
        Width and height must be even. Flow control and errors as :meth:`write`.
        """
        check_planes(planes, width, height, pix_fmt)
        i, seq, dst = self._begin(width, height, pix_fmt, color_matrix, color_range, frame_index, pts,
                                  ts_capture, src_size, stop, beat)
        offset = 0
        for plane in planes:
            np.copyto(dst[offset:offset + plane.size].reshape(plane.shape), plane)
            offset += plane.size
        return self._commit(i, seq)

    def _begin(self, width: int, height: int, pix_fmt: str, color_matrix: str, color_range: str,
               frame_index: int, pts: float, ts_capture: float, src_size: tuple[int, int] | None,
               stop: _EventLike | None, beat: Callable[[], None] | None) -> tuple[int, int, np.ndarray]:
        """Validate, wait for a free slot (lossless), mark it odd and store its header; returns
        (slot, seq, destination bytes)."""
        nbytes = frame_nbytes(width, height, pix_fmt)
        if nbytes > self.slot_bytes:
            raise ValueError(f"frame {width}x{height} {pix_fmt} ({nbytes} bytes) exceeds the ring's slot "
                             f"size ({self.slot_bytes} bytes)")
        if color_matrix not in COLOR_MATRICES or color_range not in COLOR_RANGES:
            raise ValueError(f"unknown colour matrix/range {color_matrix!r}/{color_range!r}")
        if not self.wait_writable(stop, beat):
            raise WriteAborted("stopped while waiting for the reader to free a slot")
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
        hdr["color_matrix"][i] = COLOR_MATRICES.index(color_matrix)
        hdr["color_range"][i] = COLOR_RANGES.index(color_range)
        hdr["not_written"][i] = self.not_written()
        return i, seq, self._data[i, :nbytes]

    def _commit(self, i: int, seq: int) -> int:
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
        self._hdr["last_error"] = encode_text(text, ERROR_BYTES)
        self._hdr["error_time"] = time.time()

    def set_decode_mode(self, mode: str) -> None:
        """Record how the decoder decodes the camera now (one of DECODE_MODES: cpu, nvdec)."""
        self._hdr["decode_mode"] = DECODE_MODES.index(mode)

    def heartbeat(self, pid: int | None = None) -> None:
        """Record that the decoder is alive now (wall time), and its pid when given."""
        self._hdr["heartbeat"] = time.time()
        if pid is not None:
            self._hdr["decoder_pid"] = pid

    def add_counts(self, *, decoded: int = 0, skipped: int = 0, reconnects: int = 0, behind: int = 0,
                   converted: int = 0, decode_ns: int = 0, hw_fallbacks: int = 0) -> None:
        """Add to the decoder counters: frames decoded, skipped by max_fps, not written because a
        paced file was behind, converted/downscaled; reopens; nanoseconds spent decoding; times
        NVDEC was given up for the CPU."""
        h = self._hdr
        for field, value in (("frames_decoded", decoded), ("frames_skipped", skipped), ("reconnects", reconnects),
                             ("frames_behind", behind), ("frames_converted", converted),
                             ("decode_ns", decode_ns), ("hw_fallbacks", hw_fallbacks)):
            if value:
                h[field] += value

    # -- reader side (worker) -----------------------------------------------------------------

    def not_written(self) -> int:
        """Decoded frames the decoder did not write so far (skipped by max_fps or behind)."""
        return int(self._hdr["frames_skipped"]) + int(self._hdr["frames_behind"])

    @property
    def latest_seq(self) -> int:
        """Seq of the newest complete frame (0: none yet)."""
        return int(self._hdr["latest_seq"])

    @property
    def lossless(self) -> bool:
        """Whether the writer is in lossless mode."""
        return bool(self._hdr["lossless"])

    @property
    def consumed_seq(self) -> int:
        """Seq of the last frame the reader copied out (0: none)."""
        return int(self._hdr["consumed_seq"])

    def resume_seq(self) -> int:
        """Where a (re)started reader continues (its first ``after_seq``): ``consumed_seq`` in
        lossless mode (nothing lost, nothing repeated), ``latest_seq`` otherwise (no backlog)."""
        return self.consumed_seq if self.lossless else self.latest_seq

    def read_latest(self, after_seq: int = 0, out: np.ndarray | None = None, retries: int = 100) -> Frame | None:
        """The newest complete frame with ``seq > after_seq``, or None.

        Pixels are copied into ``out`` (1-D uint8, at least the frame's bytes, else ValueError;
        ``Frame.image`` is then a view of it) or into a new array. ``Frame.dropped`` = frames
        written after ``after_seq`` but never returned (only the newest is read). Records
        ``consumed_seq``. A reader that starts late should pass :meth:`resume_seq`.
        """
        return self._read(after_seq, out, retries, lossless=False)

    def read_next(self, after_seq: int = 0, out: np.ndarray | None = None, retries: int = 100, *,
                  pixels: bool = True) -> Frame | None:
        """Lossless mode: frame ``after_seq + 1`` (the oldest unread, in order; if it was already
        overwritten, the oldest still held) or None; latest-wins mode: as :meth:`read_latest`.
        ``consumed_seq`` is set once the copy is complete, which frees the slot for the writer.
        ``pixels=False``: the same frame's metadata only (``image`` empty), consumed without copying
        its pixels: for a frame the detector will not see (``detect_every``)."""
        return self._read(after_seq, out, retries, None, pixels)

    def peek(self, seq: int | None = None, retries: int = 3) -> Frame | None:
        """A copy of frame ``seq`` (default: the newest) for an observer such as the live view, or
        None when it is not held (any more), is being rewritten, or stayed torn ``retries`` times.
        Never records ``consumed_seq`` and never waits: the worker and the writer do not notice."""
        reader = self._reader
        for _ in range(retries):
            latest = reader.latest_seq
            want = latest if seq is None else seq
            if want <= 0 or want > latest or want <= latest - self.slots:
                return None
            ref = reader.peek_exact(want)
            if ref is not None:
                data = reader.data(ref).copy()
                if reader.still_valid(ref):
                    return ref.to_frame(self.camera_id, want - 1,
                                        data.reshape(image_shape(ref.width, ref.height, ref.pix_fmt)))
        return None

    def _read(self, after_seq: int, out: np.ndarray | None, retries: int, lossless: bool | None,
              pixels: bool = True) -> Frame | None:
        """The consuming read: pick a slot (SlotReader's choice; ``lossless`` None: the ring's mode),
        copy its pixels into ``out`` or a new array, validate, record ``consumed_seq``; retry while
        every candidate is being written or the copy was torn. One function: the worker's hot path.
        Without ``pixels`` the slot's header (read stable by the peek) is all that is taken."""
        if out is not None:
            _check_out(out)
        reader = self._reader
        for attempt in range(retries):
            ref = reader.peek(after_seq, lossless)
            if ref is not None and not pixels:
                reader.consume(ref)
                return ref.to_frame(self.camera_id, after_seq)
            if ref is not None:
                data: np.ndarray | None
                if out is None:
                    data = reader.data(ref).copy()
                elif ref.nbytes <= out.size:
                    data = out[:ref.nbytes]
                    np.copyto(data, reader.data(ref))
                elif reader.still_valid(ref):
                    raise ValueError(f"out buffer of {out.size} bytes is too small for a {ref.width}x"
                                     f"{ref.height} {ref.pix_fmt} frame ({ref.nbytes} bytes)")
                else:
                    data = None  # torn: the size read may be wrong, try again
                if data is not None and reader.still_valid(ref):
                    reader.consume(ref)
                    return ref.to_frame(self.camera_id, after_seq,
                                        data.reshape(image_shape(ref.width, ref.height, ref.pix_fmt)))
            elif reader.latest_seq <= after_seq:
                return None  # nothing newer (else every candidate was being written: poll again)
            if attempt > 2:
                time.sleep(0.0001)
        return None

    def latest_size(self) -> tuple[int, int] | None:
        """The source size (width, height) of the newest frame written, or None before the first.
        Reads two header fields only (no copy, no lock): for displays such as the live view's list."""
        latest = int(self._hdr["latest_seq"])
        if latest <= 0:
            return None
        slot = self._slot_hdr[latest % self.slots]
        width = int(slot["src_width"]) or int(slot["width"])
        height = int(slot["src_height"]) or int(slot["height"])
        return (width, height) if width and height else None

    def next_message_seq(self) -> int:
        """Per-camera wire message seq: 0, 1, 2, ... kept in shared memory so that it survives a
        worker restart. Plain increment: only the one worker that owns the camera calls it."""
        value = int(self._hdr["message_seq"])
        self._hdr["message_seq"] = value + 1
        return value

    def status(self) -> RingStatus:
        """Snapshot of the header (geometry, flow control, decoder state, heartbeat, counters)."""
        return ring_status(self._hdr.copy(), self.camera_id, self.slots, self.slot_bytes)

    # -- lifetime -----------------------------------------------------------------------------

    @property
    def buffer(self) -> memoryview:
        """The whole mapped segment, e.g. for page-locking it or for another :class:`SlotReader`.
        Views made of it must be dropped (``SlotReader.close``) before :meth:`close`."""
        return self._buf

    def close(self) -> None:
        """Unmap (idempotent). Frames already returned stay valid: they are copies (or live in
        the caller's buffer). BufferError if views of :attr:`buffer` made elsewhere are still alive:
        the segment then stays mapped but the ring is unusable; drop them and call close again."""
        if self._closer is None:
            return
        self._reader.close()
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
