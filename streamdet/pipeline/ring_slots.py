"""Zero-copy reader side of a frame ring: pick a slot under the seqlock, copy it elsewhere, validate after.

:meth:`FrameRing.read_next <streamdet.pipeline.ring.FrameRing.read_next>` copies a slot's pixels on
the CPU and re-checks the slot's ``lock`` word right after. The GPU path copies with DMA instead
(:mod:`streamdet.pipeline.pinned`), so the check moves: :meth:`SlotReader.peek` reads the lock
(even) and the slot header without touching the pixels, the caller copies ``nbytes`` from
:meth:`SlotReader.data_address`, and :meth:`SlotReader.still_valid` re-reads the lock once the
copy has *completed*; a changed lock means the writer rewrote the slot meanwhile (a torn frame).
:meth:`SlotReader.consume` then frees the slot (``consumed_seq``), as ``read_next`` does.

The slot choice is ``read_next``'s: lossless rings give ``after_seq + 1`` (or the oldest still
held), latest-wins rings the newest frame. Same protocol and memory-ordering assumptions (x86-64)
as :mod:`streamdet.pipeline.ring`; the layout is :mod:`streamdet.pipeline.ring_layout`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamdet.pipeline.image import COLOR_MATRICES, COLOR_RANGES, PIX_FMTS
from streamdet.pipeline.ring_layout import (
    HEADER_BYTES,
    HEADER_DTYPE,
    MAGIC,
    SLOT_DTYPE,
    SLOT_HEADER_BYTES,
    VERSION,
    Frame,
    frame_nbytes,
    segment_bytes,
)

__all__ = ["SlotReader", "SlotRef"]


@dataclass(frozen=True)
class SlotRef:
    """A slot seen stable (even ``lock``) with the header it held then; valid while the lock is unchanged."""

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

    def to_frame(self, camera: str, after_seq: int) -> Frame:
        """The frame's metadata as a :class:`Frame` whose ``image`` is empty (the pixels went to the
        device); ``dropped`` counted as ``read_next`` counts it."""
        return Frame(camera=camera, seq=self.seq, frame_index=self.frame_index, pts=self.pts,
                     ts_capture=self.ts_capture, width=self.width, height=self.height, src_width=self.src_width,
                     src_height=self.src_height, pix_fmt=self.pix_fmt, image=np.empty(0, np.uint8),
                     dropped=max(0, self.seq - after_seq - 1), color_matrix=self.color_matrix,
                     color_range=self.color_range, not_written=self.not_written)


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
        off = self.data_offset(ref.slot)
        return self._bytes[off:off + ref.nbytes]

    # -- the seqlock -------------------------------------------------------------------------------

    @property
    def latest_seq(self) -> int:
        return int(self._hdr["latest_seq"])

    @property
    def lossless(self) -> bool:
        return bool(self._hdr["lossless"])

    def resume_seq(self) -> int:
        """Where a (re)started reader continues (as :meth:`FrameRing.resume_seq`)."""
        return int(self._hdr["consumed_seq"]) if self.lossless else self.latest_seq

    def peek(self, after_seq: int) -> SlotRef | None:
        """The slot ``read_next(after_seq)`` would read, without copying its pixels; None if there is
        no newer frame or every candidate is being written right now (poll again)."""
        latest = self.latest_seq
        if latest <= after_seq:
            return None
        if self.lossless:
            seqs = range(max(after_seq + 1, latest - self.slots + 1), latest + 1)
        else:
            seqs = range(latest, max(after_seq, latest - self.slots), -1)
        for seq in seqs:
            ref = self._peek_slot(seq % self.slots, seq if self.lossless else None, after_seq)
            if ref is not None:
                return ref
        return None

    def _peek_slot(self, i: int, exact: int | None, after_seq: int) -> SlotRef | None:
        lock = int(self._lock[i])
        if lock & 1:
            return None
        h = self._slot_hdr[i].copy()
        seq = int(h["seq"])
        if seq <= after_seq or (exact is not None and seq != exact):
            return None
        codes = int(h["pix_fmt"]), int(h["color_matrix"]), int(h["color_range"])
        nbytes, width, height = int(h["nbytes"]), int(h["width"]), int(h["height"])
        if (not 0 < codes[0] < len(PIX_FMTS) or codes[1] >= len(COLOR_MATRICES) or codes[2] >= len(COLOR_RANGES)
                or nbytes > self.slot_bytes or frame_nbytes(width, height, PIX_FMTS[codes[0]]) != nbytes):
            return None  # a header being rewritten
        if int(self._lock[i]) != lock:
            return None
        return SlotRef(slot=i, lock=lock, seq=seq, nbytes=nbytes, width=width, height=height,
                       pix_fmt=PIX_FMTS[codes[0]], color_matrix=COLOR_MATRICES[codes[1]],
                       color_range=COLOR_RANGES[codes[2]], frame_index=int(h["frame_index"]), pts=float(h["pts"]),
                       ts_capture=float(h["ts_capture"]), src_width=int(h["src_width"]),
                       src_height=int(h["src_height"]), not_written=int(h["not_written"]))

    def still_valid(self, ref: SlotRef) -> bool:
        """Whether the slot is unchanged since :meth:`peek` (call once the copy has completed)."""
        return int(self._lock[ref.slot]) == ref.lock

    def consume(self, ref: SlotRef) -> None:
        """Record the frame as consumed (``consumed_seq``, never lowered): frees it for a lossless writer."""
        if ref.seq > int(self._hdr["consumed_seq"]):
            self._hdr["consumed_seq"] = ref.seq

    def close(self) -> None:
        """Drop the views of the segment (idempotent), so its mapping can be released."""
        self._hdr = self._slot_hdr = self._lock = self._bytes = None  # type: ignore[assignment]
