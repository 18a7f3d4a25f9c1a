"""Page-locked rings: DMA only the slots a batch uses to the GPU, then validate them (seqlock after copy).

The worker registers each attached ring segment with the CUDA driver (``cudaHostRegister``), so the
copy engine reads frames straight out of shared memory: no CPU copy per frame. For a batch,
:meth:`SlotCopier.copy` enqueues one async host-to-device copy per chosen slot (its ``nbytes``
only) into a device arena on the copy stream and records an event; :meth:`SlotCopier.finish`
waits for that event and re-checks every slot's seqlock: a slot the decoder rewrote meanwhile is a
torn frame, dropped and counted (``torn``). The survivors come back as
:class:`~streamdet.pipeline.preprocess.kernel_plan.DeviceFrame` s for :meth:`CudaPreprocessor.launch
<streamdet.pipeline.preprocess.cuda.CudaPreprocessor.launch>`.

If registration fails (a locked-down container, no ``HostRegisterSupported``), that ring falls
back to a pinned staging buffer per arena: the CPU copies the slot into it (and validates the
seqlock right after that copy), then the DMA reads the staging buffer. The first failure is logged
once; ``stats()["pinned"]`` is then False.

Arenas are double-buffered (``buffers``): an arena is rewritten only after the consumer's event
passed to :meth:`SlotCopier.release` (the copy stream waits for it on the GPU), and its staging
buffer only after its previous copy completed (the host waits). Every CUDA call goes through a
:class:`CudaApi`, so tests run all of this on the CPU with a fake; :class:`CupyTorchCuda` is the
real one (CuPy's runtime bindings for registration and copies, torch for buffers and events).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamdet.pipeline.preprocess.kernel_plan import DeviceFrame, align_up, pack_offsets
from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.slots import SlotReader, SlotRef

__all__ = ["CudaApi", "CupyTorchCuda", "DeviceBuffer", "HostBuffer", "PendingCopy", "PinnedRing", "SlotCopier",
           "ring_buffer"]

log = logging.getLogger(__name__)

#: cudaHostRegisterPortable: the range counts as pinned in every CUDA context.
HOST_REGISTER_PORTABLE = 1
#: cudaMemcpyHostToDevice
MEMCPY_HOST_TO_DEVICE = 1


@dataclass(frozen=True)
class HostBuffer:
    """Page-locked host memory: a uint8 view, its address, and whatever keeps it alive."""

    array: np.ndarray
    ptr: int
    owner: Any = None


@dataclass(frozen=True)
class DeviceBuffer:
    """Device memory: its address and whatever keeps it alive."""

    ptr: int
    nbytes: int
    owner: Any = None


class CudaApi(Protocol):
    """The CUDA calls of the pinned path (one object per worker and device)."""

    def host_register(self, ptr: int, nbytes: int) -> None:
        """Page-lock [ptr, ptr + nbytes); raise RuntimeError on failure (with the error state cleared)."""

    def host_unregister(self, ptr: int) -> None: ...

    def pinned_empty(self, nbytes: int) -> HostBuffer: ...

    def device_empty(self, nbytes: int, stream: Any) -> DeviceBuffer:
        """Device memory used in the order of ``stream``."""

    def copy_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        """Enqueue a host-to-device copy on ``stream``."""

    def record(self, stream: Any) -> Any:
        """An event recorded on ``stream`` now."""

    def synchronize(self, event: Any) -> None:
        """Block the host until ``event`` has completed."""

    def wait(self, stream: Any, event: Any) -> None:
        """Make ``stream`` wait for ``event`` (on the GPU; the host does not block)."""


class CupyTorchCuda:
    """The real :class:`CudaApi` on ``device``: ``cupy.cuda.runtime.hostRegister`` / ``memcpyAsync``
    (CuPy clears CUDA's error state when it raises), torch tensors for memory, torch events."""

    def __init__(self, device: Any) -> None:
        import torch

        from streamdet.pipeline.preprocess.cuda import import_cupy

        self._cp = import_cupy()
        self.device = torch.device(device)
        self._index = self.device.index if self.device.index is not None else torch.cuda.current_device()

    def host_register(self, ptr: int, nbytes: int) -> None:
        with self._cp.cuda.Device(self._index):
            self._cp.cuda.runtime.hostRegister(ptr, nbytes, HOST_REGISTER_PORTABLE)

    def host_unregister(self, ptr: int) -> None:
        with self._cp.cuda.Device(self._index):
            self._cp.cuda.runtime.hostUnregister(ptr)

    def pinned_empty(self, nbytes: int) -> HostBuffer:
        import torch

        t = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
        return HostBuffer(t.numpy(), int(t.data_ptr()), t)

    def device_empty(self, nbytes: int, stream: Any) -> DeviceBuffer:
        import torch

        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            t = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        return DeviceBuffer(int(t.data_ptr()), nbytes, t)

    def copy_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        with self._cp.cuda.Device(self._index):
            self._cp.cuda.runtime.memcpyAsync(dst, src, nbytes, MEMCPY_HOST_TO_DEVICE, int(stream.cuda_stream))

    def record(self, stream: Any) -> Any:
        import torch

        event = torch.cuda.Event()
        event.record(stream)
        return event

    def synchronize(self, event: Any) -> None:
        event.synchronize()

    def wait(self, stream: Any, event: Any) -> None:
        stream.wait_event(event)


def ring_buffer(ring: FrameRing) -> memoryview:
    """The whole mapped segment of a :class:`~streamdet.pipeline.ring.buffer.FrameRing` (what :meth:`SlotCopier.attach`
    page-locks); detach it from the copier before the ring is closed."""
    return ring.buffer


class PinnedRing(SlotReader):
    """A ring segment as the copier sees it: the seqlock reader plus whether it is page-locked."""

    def __init__(self, buf: memoryview, camera: str = "") -> None:
        super().__init__(buf, camera)
        self.registered = False


@dataclass
class _Arena:
    dev: DeviceBuffer | None = None
    staging: HostBuffer | None = None
    copied: Any = None  # event after its last copy
    released: Any = None  # event after its consumer's last read (release())


@dataclass
class _Entry:
    ring: PinnedRing
    ref: SlotRef
    dst: int
    valid: bool | None  # None: check the seqlock after the DMA; else checked after the CPU copy


@dataclass
class PendingCopy:
    """One batch's copies in flight: ``event`` completes when every byte is on the device."""

    entries: list[_Entry]
    event: Any
    arena: int


@dataclass
class _Counts:
    frames: int = 0
    bytes: int = 0
    torn: Counter[str] = field(default_factory=Counter)
    register_failures: int = 0


class SlotCopier:
    """Copies the chosen slots of page-locked rings to device arenas on ``stream`` (see the module
    docstring). One per worker and device; not thread-safe (the worker's gather/prepare thread)."""

    def __init__(self, cuda: CudaApi, stream: Any, buffers: int = 2, logger: logging.Logger = log) -> None:
        if buffers < 1:
            raise ValueError("buffers must be >= 1")
        self.cuda = cuda
        self.stream = stream
        self._log = logger
        self._arenas = [_Arena() for _ in range(buffers)]
        self._next = 0
        self._rings: list[PinnedRing] = []
        self._counts = _Counts()
        self._fallback_logged = False

    # -- rings ---------------------------------------------------------------------------------------

    def attach(self, buf: memoryview, camera: str = "") -> PinnedRing:
        """Page-lock a mapped ring segment (once); on failure fall back to staging for it."""
        ring = PinnedRing(buf, camera)
        try:
            self.cuda.host_register(ring.base, ring.size)
            ring.registered = True
        except RuntimeError as exc:
            self._counts.register_failures += 1
            if not self._fallback_logged:
                self._fallback_logged = True
                self._log.warning("cannot page-lock the ring of %s (%d bytes): %s; its frames go through a pinned "
                                  "staging buffer instead (one CPU copy per frame); stats report pinned: false",
                                  ring.camera, ring.size, exc)
            else:
                self._log.debug("cannot page-lock the ring of %s: %s (staging)", ring.camera, exc)
        self._rings.append(ring)
        return ring

    def detach(self, ring: PinnedRing) -> None:
        """Unregister (if registered) and drop the ring's views: call before the ring is closed, and
        only once no copy from it is in flight (after :meth:`finish`)."""
        if ring in self._rings:
            self._rings.remove(ring)
        if ring.registered:
            ring.registered = False
            try:
                self.cuda.host_unregister(ring.base)
            except RuntimeError as exc:
                self._log.warning("unregistering the ring of %s failed: %s", ring.camera, exc)
        ring.close()

    def close(self) -> None:
        """Detach every ring and drop the arenas."""
        for ring in list(self._rings):
            self.detach(ring)
        self._arenas = [_Arena() for _ in self._arenas]

    # -- one batch -----------------------------------------------------------------------------------

    def copy(self, picks: Sequence[tuple[PinnedRing, SlotRef]]) -> PendingCopy:
        """Enqueue the copies of ``picks`` (ring, peeked slot) into the next arena; nothing blocks unless
        a staged ring needs the arena's staging buffer that is still being copied from."""
        index = self._next
        self._next = (self._next + 1) % len(self._arenas)
        arena = self._arenas[index]
        if arena.released is not None:  # the consumer of this arena's last batch must be done on the GPU
            self.cuda.wait(self.stream, arena.released)
            arena.released = None
        offsets, total = pack_offsets([ref.nbytes for _, ref in picks])
        staged = any(not ring.registered for ring, _ in picks)
        if staged and arena.copied is not None:
            self.cuda.synchronize(arena.copied)
        if arena.dev is None or arena.dev.nbytes < total:
            arena.dev = self.cuda.device_empty(_capacity(total), self.stream)
        if staged and (arena.staging is None or arena.staging.array.size < total):
            arena.staging = self.cuda.pinned_empty(_capacity(total))
        entries = []
        for (ring, ref), off in zip(picks, offsets, strict=True):
            dst = arena.dev.ptr + off
            if ring.registered:
                self.cuda.copy_async(dst, ring.data_address(ref.slot), ref.nbytes, self.stream)
                entries.append(_Entry(ring, ref, dst, None))
                continue
            assert arena.staging is not None
            np.copyto(arena.staging.array[off:off + ref.nbytes], ring.data(ref))
            valid = ring.still_valid(ref)
            if valid:
                self.cuda.copy_async(dst, arena.staging.ptr + off, ref.nbytes, self.stream)
            entries.append(_Entry(ring, ref, dst, valid))
        arena.copied = self.cuda.record(self.stream)
        return PendingCopy(entries, arena.copied, index)

    def finish(self, pending: PendingCopy) -> list[DeviceFrame | None]:
        """Wait for the copies, re-check each slot's seqlock and consume the good ones: one
        DeviceFrame per pick, or None for a torn frame (dropped and counted)."""
        self.cuda.synchronize(pending.event)
        frames: list[DeviceFrame | None] = []
        for e in pending.entries:
            ok = e.ring.still_valid(e.ref) if e.valid is None else e.valid
            if not ok:
                self._counts.torn[e.ring.camera] += 1
                frames.append(None)
                continue
            e.ring.consume(e.ref)
            self._counts.frames += 1
            self._counts.bytes += e.ref.nbytes
            frames.append(DeviceFrame(e.dst, e.ref.pix_fmt, e.ref.width, e.ref.height, e.ref.color_matrix,
                                      e.ref.color_range))
        return frames

    def release(self, pending: PendingCopy, event: Any) -> None:
        """The consumer of ``pending``'s frames finishes with ``event`` (e.g. recorded after the
        preprocessing kernel on the compute stream); the arena's next copy waits for it."""
        self._arenas[pending.arena].released = event

    # -- stats ---------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``pinned`` (no attached ring goes through staging), ring counts, frames/bytes copied, torn
        frames (total and per camera) and failed registrations."""
        staged = sum(1 for r in self._rings if not r.registered)
        return {
            "pinned": staged == 0,
            "rings_pinned": len(self._rings) - staged,
            "rings_staged": staged,
            "register_failures": self._counts.register_failures,
            "frames_copied": self._counts.frames,
            "bytes_copied": self._counts.bytes,
            "torn": sum(self._counts.torn.values()),
            "torn_by_camera": dict(self._counts.torn),
        }


def _capacity(nbytes: int) -> int:
    """Arena size for ``nbytes``: at least 1 MiB, rounded up to a power of two (few reallocations)."""
    return max(1 << 20, 1 << (align_up(max(int(nbytes), 1)) - 1).bit_length())
