"""Device memory of the CUDA emulation: an address map of host buffers that stand for device,
pinned and registered memory, and the view of it the kernel's numpy twin reads.

Used by :mod:`streamdet.pipeline.cuda.emulation` only.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

import numpy as np

from streamdet.pipeline.preprocess.kernel_plan import TABLE_ALIGN

__all__ = ["DEVICE", "PINNED", "REGISTERED", "AddressMap", "DeviceMemory", "Range", "aligned_zeros"]

DEVICE, PINNED, REGISTERED = "device", "pinned", "registered"


@dataclass(frozen=True)
class Range:
    start: int
    nbytes: int
    kind: str
    view: np.ndarray | None = None  # its bytes (keeps them alive); the kernel reads device ones

    @property
    def end(self) -> int:
        return self.start + self.nbytes


class AddressMap:
    """Non-overlapping ranges by start address (thread-safe: host threads add, stream threads look up)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._starts: list[int] = []
        self._ranges: list[Range] = []

    def add(self, r: Range) -> None:
        """Insert ``r``; RuntimeError if it overlaps a known range (e.g. a range registered twice)."""
        with self._lock:
            i = bisect.bisect_right(self._starts, r.start)
            prev = self._ranges[i - 1] if i else None
            nxt = self._ranges[i] if i < len(self._ranges) else None
            for other in (prev, nxt):
                if other is not None and other.start < r.end and r.start < other.end:
                    raise RuntimeError(f"[{r.start:#x}, {r.end:#x}) overlaps {other.kind} memory "
                                       f"[{other.start:#x}, {other.end:#x}) (already registered?)")
            self._starts.insert(i, r.start)
            self._ranges.insert(i, r)

    def discard(self, start: int, kind: str) -> bool:
        """Remove the ``kind`` range starting at ``start``; False if there is none."""
        with self._lock:
            i = bisect.bisect_left(self._starts, start)
            if i < len(self._ranges) and self._starts[i] == start and self._ranges[i].kind == kind:
                del self._starts[i], self._ranges[i]
                return True
            return False

    def find(self, addr: int, nbytes: int, kinds: tuple[str, ...]) -> Range | None:
        """The range of one of ``kinds`` that holds all of [addr, addr + nbytes), or None."""
        with self._lock:
            i = bisect.bisect_right(self._starts, addr) - 1
            r = self._ranges[i] if i >= 0 else None
        if r is None or r.kind not in kinds or addr + nbytes > r.end:
            return None
        return r

    def readable(self) -> list[tuple[int, np.ndarray]]:
        """(start, bytes) of the device ranges the kernel may read, in address order."""
        with self._lock:
            return [(r.start, r.view) for r in self._ranges if r.kind == DEVICE and r.view is not None]


class DeviceMemory:
    """Device memory as the kernel emulation reads it (a :class:`~streamdet.pipeline.preprocess.kernel_reference.
    PixelMemory`): absolute addresses resolved through a snapshot of the address map."""

    def __init__(self, blocks: list[tuple[int, np.ndarray]]) -> None:
        self._blocks = blocks
        self._starts = np.array([start for start, _ in blocks], np.int64)
        self._ends = np.array([start + view.size for start, view in blocks], np.int64)

    def _locate(self, addr: np.ndarray, nbytes: int, what: str) -> np.ndarray:
        """The block holding each [addr, addr + nbytes); IndexError if one is outside them all."""
        idx = np.searchsorted(self._starts, addr, side="right") - 1
        bad = (idx < 0) | (addr + nbytes > self._ends[np.maximum(idx, 0)]) if self._blocks else addr == addr
        if bad.any():
            raise IndexError(f"{what} at {int(addr[bad].flat[0]):#x} is outside every device allocation")
        return idx

    def gather_u8(self, addr: np.ndarray) -> np.ndarray:
        addr = np.asarray(addr, np.int64)
        out = np.empty(addr.shape, np.int32)
        if addr.size == 0:
            return out
        idx = self._locate(addr, 1, "a pixel load")
        if idx.min() == idx.max():  # the usual case: one plane of one allocation
            start, view = self._blocks[int(idx.flat[0])]
            out[...] = view[addr - start]
            return out
        for i in np.unique(idx):
            start, view = self._blocks[int(i)]
            sel = idx == i
            out[sel] = view[addr[sel] - start]
        return out

    def int32s(self, addr: int, count: int) -> np.ndarray:
        n = 4 * int(count)
        start, view = self._blocks[int(self._locate(np.array([addr], np.int64), n, "a table read")[0])]
        return view[addr - start:addr - start + n].view(np.int32)


def aligned_zeros(nbytes: int) -> np.ndarray:
    """A zeroed uint8 array of ``nbytes`` (at least 1) starting on a 256-byte boundary, as cudaMalloc's."""
    n = max(int(nbytes), 1)
    raw = np.zeros(n + TABLE_ALIGN, np.uint8)
    shift = (-raw.ctypes.data) % TABLE_ALIGN
    return raw[shift:shift + n]
