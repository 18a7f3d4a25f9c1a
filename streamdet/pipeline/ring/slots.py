"""The one reader side of a frame ring: pick a slot under the seqlock, copy it elsewhere, validate after.

Every reader of a ring goes through :class:`SlotReader`: :meth:`SlotReader.peek` reads a slot's
``lock`` (even: stable) and its header without touching the pixels, the caller copies ``nbytes``
from :meth:`SlotReader.data` (a CPU copy: :meth:`FrameRing.read_next
<streamdet.pipeline.ring.buffer.FrameRing.read_next>`, ``read_latest``, ``peek``) or from
:meth:`SlotReader.data_address` (a DMA: :mod:`streamdet.pipeline.ring.pinned`), and
:meth:`SlotReader.still_valid` re-reads the lock once the copy has *completed*; a changed lock
means the writer rewrote the slot meanwhile (a torn frame). :meth:`SlotReader.consume` then frees
the slot (``consumed_seq``).

Slot choice: lossless rings give ``after_seq + 1`` (or the oldest still held), latest-wins rings
the newest frame (older ones only while the newer are being rewritten); :meth:`SlotReader.peek_exact`
gives one given seq (an observer such as the live view). Same protocol and memory-ordering
assumptions (x86-64) as :mod:`streamdet.pipeline.ring.buffer`; the layout is
:mod:`streamdet.pipeline.ring.layout`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import numpy as np

from streamdet.pipeline.ring.layout import (
    HEADER_BYTES,
    HEADER_DTYPE,
    MAGIC,
    SLOT_DTYPE,
    SLOT_HEADER_BYTES,
    VERSION,
    frame_nbytes,
    segment_bytes,
)
from streamdet.pipeline.types import COLOR_MATRICES, COLOR_RANGES, PIX_FMTS, Frame

__all__ = ["SlotReader", "SlotRef"]


def _slot_struct(dtype: np.dtype) -> struct.Struct:
    """The slot header's fields after ``lock`` as one :class:`struct.Struct` (little-endian, in
    field order): one C call per frame reads them all, cheaper than numpy field access."""
    codes = {"<u8": "Q", "<i8": "q", "<f8": "d", "<u4": "I"}
    fmt, end = "<", None
    for name in dtype.names[1:]:  # type: ignore[index]
        field, offset = dtype.fields[name][:2]  # type: ignore[index]
        if end is not None and offset != end:
            raise ValueError(f"slot header field {name!r} is not packed after the previous one")
        fmt += codes[field.str]
        end = offset + field.itemsize
    return struct.Struct(fmt)


#: seq, frame_index, pts, ts_capture, width, height, src_width, src_height, pix_fmt, nbytes,
#: color_matrix, color_range, not_written (SLOT_DTYPE after ``lock``, at slot offset 8)
_SLOT_FIELDS = _slot_struct(SLOT_DTYPE)
_FIELDS_OFFSET = SLOT_DTYPE.fields["seq"][1]  # type: ignore[index]


class SlotRef(NamedTuple):
    """A slot seen stable (even ``lock``) with the header it held then; valid while the lock is unchanged.

    A NamedTuple, not a dataclass: one is built per frame read, on the worker's hot path.
    """

    slot: int
    lock: int
    seq: int
    nbytes: int
    width: int
    height: int
    pix_fmt: str
    color_matrix: str
    color_range: str
    frame_index: int
    pts: float
    ts_capture: float
    src_width: int
    src_height: int
    not_written: int

    def to_frame(self, camera: str, after_seq: int, image: np.ndarray | None = None) -> Frame:
        """The frame's metadata as a :class:`Frame` with ``image`` (default: empty, the pixels went to
        the device); ``dropped`` = frames after ``after_seq`` the reader skipped to get this one."""
        (_, _, seq, _, width, height, pix_fmt, color_matrix, color_range, frame_index, pts, ts_capture, src_width,
         src_height, not_written) = self  # one unpack, not a field lookup each: once per frame read
        return Frame(camera=camera, seq=seq, frame_index=frame_index, pts=pts, ts_capture=ts_capture, width=width,
                     height=height, src_width=src_width, src_height=src_height, pix_fmt=pix_fmt,
                     image=np.empty(0, np.uint8) if image is None else image, dropped=max(0, seq - after_seq - 1),
                     color_matrix=color_matrix, color_range=color_range, not_written=not_written)


class SlotReader:
    """Seqlock reader over a mapped ring segment (``buf``: the whole segment, e.g. a FrameRing's mapping).

    Holds numpy views of ``buf`` until :meth:`close`; close it before the mapping is released.
    """

    def __init__(self, buf: memoryview, camera: str = "") -> None:
        hdr = np.ndarray((), dtype=HEADER_DTYPE, buffer=buf)
        if int(hdr["magic"]) != MAGIC or int(hdr["version"]) != VERSION:
            raise ValueError(f"{camera or 'buffer'}: not a streamdet frame ring v{VERSION}")
        self.slots = int(hdr["slots"])
        self.slot_bytes = int(hdr["slot_bytes"])
        self.stride = int(hdr["slot_stride"])
        if len(buf) < segment_bytes(self.slots, self.slot_bytes):
            raise ValueError(f"{camera or 'buffer'}: segment of {len(buf)} bytes is shorter than its header says")
        self.camera = camera or hdr["camera_id"].item().decode("utf-8", "replace")
        self._hdr = hdr
        self._buf = buf  # struct reads of slot headers
        # 0-d views of the header words read per frame: cheaper than a field lookup each time
        self._latest = hdr["latest_seq"]
        self._lossless = hdr["lossless"]
        self._consumed = hdr["consumed_seq"]
        self._bytes = np.frombuffer(buf, np.uint8)
        self._slot_hdr = np.ndarray((self.slots,), dtype=SLOT_DTYPE, buffer=buf, offset=HEADER_BYTES,
                                    strides=(self.stride,))
        self._lock = self._slot_hdr["lock"]
        #: address and size of the whole segment (what gets page-locked)
        self.base = int(self._bytes.ctypes.data)
        self.size = int(self._bytes.size)

    # -- addresses ---------------------------------------------------------------------------------

    def data_offset(self, slot: int) -> int:
        """Byte offset of a slot's pixels in the segment."""
        return HEADER_BYTES + slot * self.stride + SLOT_HEADER_BYTES

    def data_address(self, slot: int) -> int:
        """Address of a slot's pixels (the DMA source)."""
        return self.base + self.data_offset(slot)

    def data(self, ref: SlotRef) -> np.ndarray:
        """The slot's ``nbytes`` as a uint8 view of the segment (a CPU copy's source)."""
        off = HEADER_BYTES + ref.slot * self.stride + SLOT_HEADER_BYTES
        return self._bytes[off:off + ref.nbytes]

    # -- the seqlock -------------------------------------------------------------------------------

    @property
    def latest_seq(self) -> int:
        return int(self._latest)

    @property
    def lossless(self) -> bool:
        return bool(self._lossless)

    def resume_seq(self) -> int:
        """Where a (re)started reader continues (as :meth:`FrameRing.resume_seq`)."""
        return int(self._consumed) if self.lossless else self.latest_seq

    def peek(self, after_seq: int, lossless: bool | None = None) -> SlotRef | None:
        """The slot to read after ``after_seq``, without copying its pixels; None if there is no newer
        frame or every candidate is being written right now (poll again).

        ``lossless`` picks the slot choice (default: the ring's mode now): True, ``after_seq + 1`` or
        the oldest still held; False, the newest (older ones only while the newer are being rewritten).
        One function, no helper per slot: it runs once per frame read.
        """
        latest = int(self._latest)
        if latest <= after_seq:
            return None
        if lossless is None:
            lossless = bool(self._lossless)
        slots, locks = self.slots, self._lock
        if lossless:
            seqs = range(max(after_seq + 1, latest - slots + 1), latest + 1)
        else:
            seqs = range(latest, max(after_seq, latest - slots), -1)
        for want in seqs:
            i = want % slots
            lock = int(locks[i])
            if lock & 1:
                continue  # being written
            (seq, frame_index, pts, ts_capture, width, height, src_width, src_height, fmt, nbytes, matrix, rng,
             not_written) = _SLOT_FIELDS.unpack_from(self._buf, HEADER_BYTES + i * self.stride + _FIELDS_OFFSET)
            if seq <= after_seq or (lossless and seq != want):
                continue
            if (not 0 < fmt < len(PIX_FMTS) or matrix >= len(COLOR_MATRICES) or rng >= len(COLOR_RANGES)
                    or nbytes > self.slot_bytes or frame_nbytes(width, height, PIX_FMTS[fmt]) != nbytes):
                continue  # a header being rewritten
            if int(locks[i]) != lock:
                continue
            # tuple.__new__: a NamedTuple's own __new__ is a Python function, one more call per frame
            return tuple.__new__(SlotRef, (i, lock, seq, nbytes, width, height, PIX_FMTS[fmt],
                                           COLOR_MATRICES[matrix], COLOR_RANGES[rng], frame_index, pts, ts_capture,
                                           src_width, src_height, not_written))
        return None

    def peek_exact(self, seq: int) -> SlotRef | None:
        """The slot holding frame ``seq`` (an observer's read: any mode), or None when it is not held
        (not written yet, or overwritten) or is being rewritten right now."""
        if seq <= 0:
            return None
        ref = self.peek(seq - 1, lossless=True)  # tries seq first, then newer ones: keep only seq
        return ref if ref is not None and ref.seq == seq else None

    def still_valid(self, ref: SlotRef) -> bool:
        """Whether the slot is unchanged since :meth:`peek` (call once the copy has completed)."""
        return int(self._lock[ref.slot]) == ref.lock

    def consume(self, ref: SlotRef) -> None:
        """Record the frame as consumed (``consumed_seq``, never lowered): frees it for a lossless writer."""
        if ref.seq > int(self._consumed):
            self._consumed[()] = ref.seq

    def close(self) -> None:
        """Drop the views of the segment (idempotent), so its mapping can be released."""
        self._hdr = self._slot_hdr = self._lock = self._bytes = None  # type: ignore[assignment]
        self._latest = self._lossless = self._consumed = None  # type: ignore[assignment]
        self._buf = None  # type: ignore[assignment]
