"""The CUDA layer on the CPU, for CI: every stream is a thread that runs its queued work in order,
each item after a random delay, so a missing ``wait`` or ``synchronize`` shows up as wrong output.

:class:`EmulatedCuda` implements :class:`~streamdet.pipeline.cuda.runtime.CudaRuntime`:

* memory: an address map of every range it allocated (device buffers, pinned buffers, axis tables,
  batch tensors) or was told about (``host_register``). A copy checks, when it runs, that its source
  is page-locked and its destination lies in one device allocation; the kernel emulation follows
  descriptor addresses through the map into device allocations only (IndexError elsewhere).
* ``launch_preprocess`` plans the launch on the host at call time, as the real launch does, and
  enqueues the numpy twin of the kernel (:func:`~streamdet.pipeline.preprocess.kernel_reference.emulate`),
  which reads the frames' bytes only when the stream reaches it.
* an error raised by work on a stream is stored and re-raised, as :class:`StreamError` naming the
  stream, by the host's next :meth:`EmulatedCuda.synchronize` of an event recorded after it on that
  stream, or by :meth:`EmulatedCuda.close`; the stream keeps draining, so events still complete.
  A submitted function's exception is also re-raised by its :class:`EmulatedDeferred`.
"""

from __future__ import annotations

import ctypes
import itertools
import queue
import random
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np
import torch

from streamdet.pipeline.cuda.emulation_memory import (
    DEVICE,
    PINNED,
    REGISTERED,
    AddressMap,
    DeviceMemory,
    Range,
    aligned_zeros,
)
from streamdet.pipeline.cuda.runtime import NotReady
from streamdet.pipeline.preprocess.kernel_plan import (
    DESC_FIELDS,
    OUT_DTYPES,
    DeviceFrame,
    axis_table,
    describe,
    plan_frame,
)
from streamdet.pipeline.preprocess.kernel_reference import emulate
from streamdet.pipeline.ring.pinned import DeviceBuffer, HostBuffer

if TYPE_CHECKING:
    from streamdet.pipeline.cuda.runtime import CudaRuntime

__all__ = ["EmulatedCuda", "EmulatedDeferred", "EmulatedEvent", "EmulatedStream", "StreamError"]

T = TypeVar("T")



class StreamError(RuntimeError):
    """Work on an emulated stream failed (the cause is chained)."""


class EmulatedEvent:
    """An event recorded on an :class:`EmulatedStream`: set when the stream's thread reaches it."""

    def __init__(self, stream: EmulatedStream) -> None:
        self.stream = stream
        self.seq = 0  # its place in the stream's queue
        self.done = threading.Event()

    def query(self) -> bool:
        """Whether the stream has reached the event."""
        return self.done.is_set()

    def __repr__(self) -> str:
        return f"EmulatedEvent({self.stream.name}#{self.seq}, {'done' if self.query() else 'pending'})"


class EmulatedStream:
    """One daemon thread running queued items in FIFO order, each after a delay drawn from ``delay_s``."""

    def __init__(self, name: str, delay_s: tuple[float, float], seed: int) -> None:
        lo, hi = (float(v) for v in delay_s)
        if not 0 <= lo <= hi:
            raise ValueError(f"delay_s must be (low, high) with 0 <= low <= high, got {delay_s}")
        self.name = name
        self._delay = (lo, hi)
        self._rng = random.Random(seed)
        self._queue: queue.SimpleQueue[tuple[int, str, Callable[[], object]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._seq = 0
        self._errors: list[tuple[int, str, BaseException]] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"emulated-cuda-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"EmulatedStream({self.name!r})"

    def enqueue(self, what: str, fn: Callable[[], object]) -> int:
        """Queue ``fn`` (described by ``what`` in errors); its sequence number."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"emulated stream {self.name!r} is closed")
            self._seq += 1
            self._queue.put((self._seq, what, fn))
            return self._seq

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            seq, what, fn = item
            lo, hi = self._delay
            if hi > 0:
                time.sleep(self._rng.uniform(lo, hi))
            try:
                fn()
            except BaseException as exc:  # stored for the host; the stream keeps draining
                with self._lock:
                    self._errors.append((seq, what, exc))

    def raise_errors(self, before: int | None = None) -> None:
        """Re-raise (once) the first stored error of an item queued before ``before`` (None: any)."""
        with self._lock:
            hit = [e for e in self._errors if before is None or e[0] < before]
            self._errors = [e for e in self._errors if not (before is None or e[0] < before)]
        if hit:
            _, what, exc = hit[0]
            more = f" (and {len(hit) - 1} later error(s))" if len(hit) > 1 else ""
            raise StreamError(f"{what} on emulated stream {self.name!r} failed: {type(exc).__name__}: {exc}{more}") \
                from exc

    def stop(self) -> None:
        """Queue the end: the thread drains what is queued, then exits."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"emulated stream {self.name!r} did not drain within {timeout_s} s")


class EmulatedDeferred(Generic[T]):
    """The result of :meth:`EmulatedCuda.submit`: readable only once the stream ran the work."""

    def __init__(self, stream: EmulatedStream) -> None:
        self._stream = stream
        self._done = threading.Event()
        self._value: T | None = None
        self._exc: BaseException | None = None

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:
            self._exc = exc
            raise
        finally:
            self._done.set()

    def result(self) -> T:
        """The value; NotReady if the stream has not run the work yet; the work's exception if it failed."""
        if not self._done.is_set():
            raise NotReady(f"work on emulated stream {self._stream.name!r} has not run yet: synchronize an event "
                           f"recorded after it first (a missing wait or synchronize)")
        if self._exc is not None:
            raise self._exc
        return cast(T, self._value)


class EmulatedCuda:
    """:class:`~streamdet.pipeline.cuda.runtime.CudaRuntime` on the CPU (see the module docstring).

    ``delay_s``: each stream item's random delay range (seconds), ``seed``: of the delays,
    ``fail_register``: host_register raises RuntimeError with this message (the staging fallback),
    ``timeout_s``: how long the host (synchronize, close) or a stream (wait) waits before giving up.
    ``during_copy(dst, src, nbytes)``, if set, runs on the copy's stream just before its bytes move.
    """

    emulated = True

    def __init__(self, delay_s: tuple[float, float] = (0.0, 0.002), seed: int = 0, fail_register: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.device = torch.device("cpu")
        self.delay_s = delay_s
        self.seed = int(seed)
        self.fail_register = fail_register
        self.timeout_s = float(timeout_s)
        self.during_copy: Callable[[int, int, int], None] | None = None
        self._map = AddressMap()
        self._streams: list[EmulatedStream] = []
        self._index = itertools.count()
        self._tables: dict[tuple[int, int, bool], np.ndarray] = {}
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._closed = False

    # -- streams and events ------------------------------------------------------------------------

    def new_stream(self, delay_s: tuple[float, float] | None = None, name: str | None = None) -> EmulatedStream:
        """A stream with its own thread; ``delay_s`` overrides the runtime's delay range for it."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the emulated CUDA runtime is closed")
            index = next(self._index)
            stream = EmulatedStream(name or f"stream-{index}", delay_s or self.delay_s, self.seed * 1_000_003 + index)
            self._streams.append(stream)
        return stream

    def _stream(self, stream: Any) -> EmulatedStream:
        if not isinstance(stream, EmulatedStream) or stream not in self._streams:
            raise TypeError(f"not a stream of this emulated runtime: {stream!r}")
        return stream

    @staticmethod
    def _event(event: Any) -> EmulatedEvent:
        if not isinstance(event, EmulatedEvent):
            raise TypeError(f"not an emulated event: {event!r}")
        return event

    def record(self, stream: Any) -> EmulatedEvent:
        s = self._stream(stream)
        event = EmulatedEvent(s)
        event.seq = s.enqueue("record", event.done.set)
        self._count(records=1)
        return event

    def wait(self, stream: Any, event: Any) -> None:
        s, ev = self._stream(stream), self._event(event)

        def block() -> None:
            if not ev.done.wait(self.timeout_s):
                raise RuntimeError(f"waited {self.timeout_s} s for {ev!r}, which never completed")

        s.enqueue(f"wait for an event of stream {ev.stream.name!r}", block)
        self._count(waits=1)

    def synchronize(self, event: Any) -> None:
        """Block until ``event`` completed, then re-raise an error of the work queued before it."""
        ev = self._event(event)
        if not ev.done.wait(self.timeout_s):
            raise RuntimeError(f"synchronize: {ev!r} on emulated stream {ev.stream.name!r} did not complete within "
                               f"{self.timeout_s} s (a wait for an event that never completes?)")
        ev.stream.raise_errors(before=ev.seq)

    def submit(self, stream: Any, fn: Callable[[], T]) -> EmulatedDeferred[T]:
        s = self._stream(stream)
        deferred: EmulatedDeferred[T] = EmulatedDeferred(s)
        s.enqueue(f"submit({getattr(fn, '__qualname__', type(fn).__name__)})", lambda: deferred._run(fn))
        self._count(submits=1)
        return deferred

    # -- memory ------------------------------------------------------------------------------------

    def host_register(self, ptr: int, nbytes: int) -> None:
        if self.fail_register:
            raise RuntimeError(self.fail_register)
        if int(nbytes) <= 0:
            raise RuntimeError(f"host_register of {nbytes} bytes (invalid value)")
        self._map.add(Range(int(ptr), int(nbytes), REGISTERED))

    def host_unregister(self, ptr: int) -> None:
        if not self._map.discard(int(ptr), REGISTERED):
            raise RuntimeError(f"host_unregister: {int(ptr):#x} is not a registered range (HostMemoryNotRegistered)")

    def pinned_empty(self, nbytes: int) -> HostBuffer:
        buf = aligned_zeros(nbytes)
        self._map.add(Range(int(buf.ctypes.data), buf.size, PINNED, buf))  # kept alive: never reused
        return HostBuffer(buf[:int(nbytes)], int(buf.ctypes.data), buf)

    def device_empty(self, nbytes: int, stream: Any) -> DeviceBuffer:
        self._stream(stream)
        buf = aligned_zeros(nbytes)
        self._map.add(Range(int(buf.ctypes.data), buf.size, DEVICE, buf))
        return DeviceBuffer(int(buf.ctypes.data), int(nbytes), buf)

    def empty_batch(self, numel: int, dtype: str, stream: Any) -> torch.Tensor:
        """Zeros on the CPU, entered in the address map as device memory while the tensor lives."""
        self._stream(stream)
        if dtype not in OUT_DTYPES:
            raise ValueError(f"unsupported batch dtype {dtype!r} (expected one of {tuple(OUT_DTYPES)})")
        t = torch.zeros(int(numel), dtype=getattr(torch, dtype))
        if t.numel():
            start = int(t.data_ptr())
            self._map.add(Range(start, t.numel() * t.element_size(), DEVICE))  # no view: it would keep t alive
            weakref.finalize(t, self._map.discard, start, DEVICE)
        return t

    def copy_async(self, dst: int, src: int, nbytes: int, stream: Any) -> None:
        s = self._stream(stream)
        dst, src, n = int(dst), int(src), int(nbytes)
        if n < 0:
            raise ValueError(f"copy_async of {n} bytes")

        def run() -> None:
            hook = self.during_copy
            if hook is not None:
                hook(dst, src, n)
            if self._map.find(src, n, (PINNED, REGISTERED)) is None:
                raise RuntimeError(f"DMA source [{src:#x}, +{n}) is not page-locked (pageable memory: neither "
                                   f"host_register-ed nor pinned_empty)")
            if self._map.find(dst, n, (DEVICE,)) is None:
                raise RuntimeError(f"DMA destination [{dst:#x}, +{n}) is not inside one device allocation")
            ctypes.memmove(dst, src, n)
            self._count(copies=1, bytes_copied=n)

        s.enqueue(f"copy_async({n} bytes, {src:#x} -> {dst:#x})", run)

    # -- the preprocessing kernel ------------------------------------------------------------------

    def compile(self) -> None:
        """Nothing to build."""

    def launch_preprocess(self, frames: Sequence[DeviceFrame], input_hw: tuple[int, int], out: torch.Tensor,
                          stream: Any) -> None:
        """Plan now (descriptors, tables), as the real launch does; the kernel reads the frames when
        ``stream`` reaches it and writes ``out[:B]``."""
        s = self._stream(stream)
        hw = int(input_hw[0]), int(input_hw[1])
        if hw[0] <= 0 or hw[1] <= 0:
            raise ValueError(f"bad input_hw {input_hw}")
        batch = self._out(out, len(frames), hw)
        if not frames:
            return
        descs = np.empty((len(frames), len(DESC_FIELDS)), np.int64)
        for i, frame in enumerate(frames):
            plan = plan_frame(frame, hw)
            descs[i] = describe(plan, self._table(plan.xtab_key), self._table(plan.ytab_key))
        dtype = str(batch.dtype).removeprefix("torch.")

        def kernel() -> None:
            values = emulate(DeviceMemory(self._map.readable()), descs, hw, dtype)
            batch.copy_(torch.from_numpy(values))
            self._count(kernels=1)

        s.enqueue(f"preprocess kernel ({len(frames)} frame(s) -> {dtype} {hw})", kernel)

    def _out(self, out: Any, n: int, hw: tuple[int, int]) -> torch.Tensor:
        """``out[:n]`` after the checks of CudaPreprocessor.launch (ValueError)."""
        from streamdet.pipeline.preprocess.cuda import check_out

        return check_out(out, n, hw, self.device)

    def _table(self, key: tuple[int, int, bool] | None) -> int:
        """The device address of an axis table (0 for none), built once and kept alive."""
        if key is None:
            return 0
        with self._lock:
            table = self._tables.get(key)
            if table is None:
                data = axis_table(*key).view(np.uint8).reshape(-1)
                table = self._tables[key] = aligned_zeros(data.size)
                table[:] = data
                self._map.add(Range(int(table.ctypes.data), table.size, DEVICE, table))
        return int(table.ctypes.data)

    # -- counters and shutdown ---------------------------------------------------------------------

    def _count(self, **amounts: int) -> None:
        with self._lock:
            self._counts.update(amounts)

    def stats(self) -> dict[str, int]:
        """Work done so far: copies, bytes_copied, kernels (run); submits, records, waits (queued)."""
        with self._lock:
            return {k: self._counts[k] for k in ("copies", "bytes_copied", "kernels", "submits", "records", "waits")}

    def close(self) -> None:
        """Drain and stop every stream, then re-raise the first error not yet reported."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        for s in streams:
            s.stop()
        for s in streams:
            s.join(self.timeout_s + 1.0)  # a stream stuck in a wait gives up after timeout_s
        for s in streams:
            s.raise_errors()

    def __enter__(self) -> EmulatedCuda:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.close()
        except StreamError:
            if exc is None:  # do not hide the exception already on its way
                raise


if TYPE_CHECKING:
    def _conforms(cuda: EmulatedCuda) -> CudaRuntime:
        return cuda  # mypy: EmulatedCuda implements the CudaRuntime protocol
