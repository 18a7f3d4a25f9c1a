"""The CUDA layer the worker's device feed runs on: one interface, a real implementation and an emulation.

The device feed (:mod:`streamdet.pipeline.worker.feed`) and the inference lanes express every GPU
action through a :class:`CudaRuntime`: page-locking ring segments, async host-to-device copies on
a copy stream, the fused preprocessing kernel on a preprocessing stream, inference and whole-batch
NMS on a lane's stream, and the events that order them. Nothing on the hot path synchronises the
whole device: the host waits only for a copy event (to re-check the seqlock) and for a lane's
last event (to read its detections).

* :class:`TorchCudaRuntime`: the real one (torch streams and events, CuPy for registration, copies
  and the kernel through :class:`~streamdet.pipeline.preprocess.cuda.CudaPreprocessor`).
* :class:`~streamdet.pipeline.cuda.emulation.EmulatedCuda`: the same calls on the CPU for CI,
  where every stream is a thread that runs its queued work in order after random delays, so a
  missing ``wait`` or ``synchronize`` in the worker shows up as wrong or torn output.

Work that is not a copy, an event or the kernel (a model's forward pass, NMS) goes through
:meth:`CudaRuntime.submit`: it runs in ``stream``'s order and its result is a :class:`Deferred`,
readable once an event recorded after it has completed (:meth:`CudaRuntime.synchronize`) or from
later work on the same stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from streamdet.pipeline.ring.pinned import CudaApi, CupyTorchCuda

if TYPE_CHECKING:
    import torch

    from streamdet.pipeline.preprocess.kernel_plan import DeviceFrame

__all__ = ["CudaRuntime", "Deferred", "NotReady", "Ready", "TorchCudaRuntime"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class NotReady(RuntimeError):
    """A :class:`Deferred` was read before its stream ran the work (a missing wait or synchronize)."""


class Deferred(Protocol[T_co]):
    """The result of work submitted to a stream."""

    def result(self) -> T_co:
        """The value; raises :class:`NotReady` if the stream has not run the work yet (emulation)."""
        ...


class Ready(Generic[T]):
    """A value available at once (the real runtime: a tensor whose kernels are queued in stream order)."""

    def __init__(self, value: T) -> None:
        self._value = value

    def result(self) -> T:
        return self._value


class CudaRuntime(CudaApi, Protocol):
    """:class:`~streamdet.pipeline.ring.pinned.CudaApi` plus what the device feed and the lanes need."""

    @property
    def device(self) -> torch.device:
        """Where batch tensors live (``cuda:N``; ``cpu`` in the emulation)."""
        ...

    @property
    def emulated(self) -> bool: ...

    def new_stream(self) -> Any:
        """A stream of its own (not the default stream)."""
        ...

    def empty_batch(self, numel: int, dtype: str, stream: Any) -> torch.Tensor:
        """A 1-D tensor of ``numel`` elements of ``dtype`` ("uint8", "float16", "float32") on
        :attr:`device`, allocated for use in ``stream``'s order."""
        ...

    def compile(self) -> None:
        """Build the preprocessing kernel now (warm-up, before READY)."""
        ...

    def launch_preprocess(self, frames: Sequence[DeviceFrame], input_hw: tuple[int, int], out: torch.Tensor,
                          stream: Any) -> None:
        """Enqueue the fused kernel on ``stream``: ``frames`` (device addresses, valid until the kernel has
        run) letterboxed into ``out`` ((>= B, 3, H, W) contiguous, uint8/float16/float32). Nothing waits."""
        ...

    def submit(self, stream: Any, fn: Callable[[], T]) -> Deferred[T]:
        """Run ``fn`` in ``stream``'s order (torch work inside it is enqueued on ``stream``)."""
        ...

    def close(self) -> None:
        """Stop whatever the runtime started (the emulation's stream threads)."""
        ...


class TorchCudaRuntime(CupyTorchCuda):
    """The real :class:`CudaRuntime` on one CUDA device (unverified on a GPU: docs/gpu-verification.md)."""

    emulated = False

    def __init__(self, device: Any) -> None:
        super().__init__(device)
        from streamdet.pipeline.preprocess.cuda import CudaPreprocessor

        self._pre = CudaPreprocessor(str(self.device))

    def new_stream(self) -> Any:
        import torch

        return torch.cuda.Stream(self.device)

    def empty_batch(self, numel: int, dtype: str, stream: Any) -> torch.Tensor:
        import torch

        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            return torch.empty(int(numel), dtype=getattr(torch, dtype), device=self.device)

    def compile(self) -> None:
        self._pre.compile()

    def launch_preprocess(self, frames: Sequence[DeviceFrame], input_hw: tuple[int, int], out: torch.Tensor,
                          stream: Any) -> None:
        self._pre.launch(frames, input_hw, out, stream)

    def submit(self, stream: Any, fn: Callable[[], T]) -> Deferred[T]:
        import torch

        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            return Ready(fn())

    def close(self) -> None:
        return None
