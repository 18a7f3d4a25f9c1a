"""CUDA graphs for the torch backend: one graph per batch size, batches padded up, eager fall-back.

A CUDA graph replays a recorded sequence of kernels with one launch, which removes the per-layer
launch overhead that dominates small batches of a small model. A graph is recorded for fixed
tensor shapes, so the runner fixes the input (C, H, W) and captures one graph per batch size of
a short list (1, 2, 4, ... up to ``max_batch``); a batch is copied into the static input of the
next captured size, the padding rows are zeroed, the graph replays and the first B output rows
are returned (a copy: the next replay overwrites the static output).

Capture happens in :meth:`GraphRunner.warmup`, which the worker must call before it reports
READY. When capture fails, or (given a timer) the graphs are not faster than eager execution,
the runner logs one line and runs eagerly. The capture and timing mechanics are injected, so
the policy is tested on CPU with fake graphs; :class:`TorchCudaGraph` and :func:`cuda_timer`
are the CUDA parts and have never run on a GPU (docs/gpu-verification.md).

Used by the worker's device feed, one runner per lane
(:meth:`streamdet.pipeline.worker.device_feed.DeviceFeed.warm_graphs`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

import torch

if TYPE_CHECKING:
    from streamdet.pipeline.backends.torch_backend import TorchBackend

__all__ = [
    "DEFAULT_SIZES",
    "Graph",
    "GraphRunner",
    "TorchCudaGraph",
    "capture_sizes",
    "cuda_timer",
    "for_backend",
]

log = logging.getLogger(__name__)

DEFAULT_SIZES = (1, 2, 4, 8, 16, 32, 64)

Forward = Callable[[torch.Tensor], torch.Tensor]
Timer = Callable[[Callable[[], object]], float]  # seconds one call of the thunk takes (median of a few)


class Graph(Protocol):
    """A recorded forward pass: ``replay()`` reruns it on its static input, writing ``output``."""

    output: torch.Tensor

    def replay(self) -> None:
        """Run the recorded kernels again."""
        ...


Capture = Callable[[Forward, torch.Tensor], Graph]


def capture_sizes(max_batch: int, sizes: Sequence[int] = DEFAULT_SIZES) -> tuple[int, ...]:
    """The batch sizes to capture: those of ``sizes`` below ``max_batch``, then ``max_batch`` itself."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if any(s < 1 for s in sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(sizes)}")
    return (*sorted({s for s in sizes if s < max_batch}), max_batch)


class TorchCudaGraph:
    """``torch.cuda.CUDAGraph`` of ``forward(static_input)`` (CUDA only; unverified on a GPU).

    A few eager runs on a side stream first (cuDNN picks its algorithms, the caching allocator
    settles), as torch's documentation prescribes, then the capture.
    """

    def __init__(self, forward: Forward, static_input: torch.Tensor, warmup_runs: int = 3) -> None:
        dev = static_input.device
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup_runs):
                forward(static_input)
        torch.cuda.current_stream(dev).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self.output = forward(static_input)

    def replay(self) -> None:
        """Replay on the current stream."""
        self._graph.replay()


def cuda_timer(thunk: Callable[[], object], runs: int = 10) -> float:
    """Median seconds of ``thunk`` measured with CUDA events (CUDA only; unverified on a GPU)."""
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        thunk()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


class GraphRunner:
    """Runs ``forward`` on (B, *sample_shape) batches through per-size graphs, or eagerly.

    ``mode`` is ``"pending"`` until :meth:`warmup`, then ``"graphs"`` or ``"eager"``. Inputs must
    have exactly ``sample_shape``, ``dtype`` and ``device`` (the fixed-shape policy graphs need).
    """

    def __init__(
        self,
        forward: Forward,
        *,
        sample_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device | str,
        max_batch: int,
        sizes: Sequence[int] = DEFAULT_SIZES,
        channels_last: bool = False,
        capture: Capture = TorchCudaGraph,
        timer: Timer | None = None,
    ) -> None:
        self.forward = forward
        self.sample_shape = tuple(sample_shape)
        self.dtype = dtype
        self.device = torch.device(device)
        self.sizes = capture_sizes(max_batch, sizes)
        self.max_batch = max_batch
        self.channels_last = channels_last
        self._capture = capture
        self._timer = timer
        self._graphs: dict[int, tuple[torch.Tensor, Graph]] = {}
        self.mode: Literal["pending", "graphs", "eager"] = "pending"

    def _static_input(self, size: int) -> torch.Tensor:
        t = torch.zeros((size, *self.sample_shape), dtype=self.dtype, device=self.device)
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last else t

    def warmup(self) -> str:
        """Capture every size (and, given a timer, keep graphs only if they win); returns ``mode``."""
        try:
            for size in self.sizes:
                static = self._static_input(size)
                self._graphs[size] = (static, self._capture(self.forward, static))
        except Exception as exc:  # any capture failure: an unsupported op, out of memory, no CUDA
            self._graphs.clear()
            self.mode = "eager"
            log.warning("CUDA graph capture failed (%s: %s); running the model eagerly", type(exc).__name__, exc)
            return self.mode
        self.mode = "graphs"
        if self._timer is not None:
            size = self.sizes[-1]
            static, graph = self._graphs[size]
            eager_s = self._timer(lambda: self.forward(static))
            graph_s = self._timer(graph.replay)
            if graph_s >= eager_s:
                self._graphs.clear()
                self.mode = "eager"
                log.info("CUDA graphs not faster at batch %d (%.2f ms vs %.2f ms eager); running eagerly",
                         size, graph_s * 1e3, eager_s * 1e3)
        return self.mode

    def size_for(self, batch: int) -> int:
        """The captured size a batch of ``batch`` images runs at (the smallest that holds it)."""
        if not 1 <= batch <= self.max_batch:
            raise ValueError(f"batch of {batch}: must be 1..{self.max_batch}")
        return next(s for s in self.sizes if s >= batch)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """forward(x) for a (B, *sample_shape) batch: through its size's graph, or eagerly."""
        if self.mode == "pending":
            raise RuntimeError("GraphRunner.warmup() must run before the first batch")
        if tuple(x.shape[1:]) != self.sample_shape or x.dtype != self.dtype or x.device != self.device:
            raise ValueError(f"expected (B, {', '.join(map(str, self.sample_shape))}) {self.dtype} on "
                             f"{self.device}, got {tuple(x.shape)} {x.dtype} on {x.device}")
        b = x.shape[0]
        size = self.size_for(b)
        if self.mode == "eager":
            return self.forward(x)
        static, graph = self._graphs[size]
        static[:b].copy_(x)
        static[b:].zero_()  # padding rows: zeros, whatever the last batch left there
        graph.replay()
        return graph.output[:b].clone()


def for_backend(
    backend: TorchBackend,
    input_hw: tuple[int, int],
    max_batch: int,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    capture: Capture = TorchCudaGraph,
    timer: Timer | None = None,
) -> GraphRunner:
    """A runner over a CUDA :class:`TorchBackend`'s model for normalised (B, 3, *input_hw) tensors.

    The forward pass includes the backend's FP16 -> float32 cast of the predictions, so the
    runner returns what ``backend.infer`` returns. Call ``warmup()`` before READY.
    """
    model = backend.model
    if model is None:
        raise RuntimeError("TorchBackend is closed")
    half = backend.half

    def forward(t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            pred = model(t)
            return pred.float() if half else pred

    dtype = torch.float16 if half else torch.float32
    return GraphRunner(forward, sample_shape=(3, *input_hw), dtype=dtype, device=backend.device,
                       max_batch=max_batch, sizes=sizes, channels_last=backend.channels_last, capture=capture,
                       timer=timer)
