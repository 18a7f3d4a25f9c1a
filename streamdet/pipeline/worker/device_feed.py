"""The device feed: page-locked ring -> DMA of the picked slots -> fused kernel -> model-dtype batch -> lane.

One batch, stream by stream (every step goes through a :class:`~streamdet.pipeline.cuda.runtime.CudaRuntime`,
so CI runs this very code on :class:`~streamdet.pipeline.cuda.emulation.EmulatedCuda`)::

    take      peek the slot under the seqlock (no copy)                                    host
    prepare   copy only the picked slots into an arena                                     copy stream
              wait for the copy, re-check each slot's seqlock: torn frames dropped        host (copy event only)
              kernel: YUV/BGR -> letterboxed CHW in the model's dtype, into a batch buffer prep stream
              the arena is rewritten only after the kernel's event (SlotCopier.release)
    infer     wait for the kernel; forward pass (CUDA graph when warm-up measured it      lane stream
              faster); the batch buffer is free after this event; whole-batch NMS
    detections wait for the lane's last event; ONE device-to-host copy of the packed      host
              detections; split and inverse transform on the host

Double buffering: the arenas (two) and the batch buffers (lanes + 2: one being prepared, one
queued, one per lane) are reused only after the events of their last readers, so the copy and
kernel of batch k+1 overlap inference of batch k; nothing synchronises the whole device.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.ring.pinned import PinnedRing, SlotCopier, ring_buffer
from streamdet.pipeline.ring.slots import SlotRef
from streamdet.pipeline.types import Frame, Transform
from streamdet.pipeline.worker.feed import InferredBatch, PreparedBatch

if TYPE_CHECKING:
    import torch

    from streamdet.pipeline.backends.cuda_graphs import GraphRunner
    from streamdet.pipeline.cuda.runtime import CudaRuntime
    from streamdet.pipeline.stages import Stages

__all__ = ["DeviceFeed", "SlotFrame"]

log = logging.getLogger("streamdet.worker")


@dataclass
class SlotFrame(Frame):
    """A picked frame whose pixels are still in its ring slot: the slot's reader and the slot seen."""

    reader: PinnedRing | None = None
    ref: SlotRef | None = None


@dataclass
class _BatchBuffer:
    tensor: torch.Tensor | None = None  # 1-D, max_batch * 3 * H * W elements of the model dtype
    released: Any = None  # event after the last forward pass that read it
    busy: bool = False  # handed to a batch whose lane has not recorded ``released`` yet


class DeviceFeed:
    """The GPU path of one worker (see the module docstring). ``stages``: the worker's stages (a
    torch backend per lane, the postprocessor); ``dtype``: the model input dtype ("float16" or
    "float32")."""

    name = "device"

    def __init__(self, runtime: CudaRuntime, stages: Stages, *, dtype: str, max_batch: int,
                 lanes: int | None = None, arenas: int = 2) -> None:
        self.rt = runtime
        self.stages = stages
        self.dtype = dtype
        self.max_batch = max(1, int(max_batch))
        n_lanes = len(stages.backends) if lanes is None else lanes
        self.copy_stream = runtime.new_stream()
        self.prep_stream = runtime.new_stream()
        self.lane_streams = [runtime.new_stream() for _ in range(n_lanes)]
        self.copier = SlotCopier(runtime, self.copy_stream, buffers=arenas)
        self._readers: dict[str, tuple[FrameRing, PinnedRing]] = {}  # ring name -> (ring, its reader)
        self._buffers = [_BatchBuffer() for _ in range(n_lanes + 2)]
        self._next_buffer = 0
        self._cond = threading.Condition()
        # the copier and the readers: used by the feeder thread, detached by whichever thread
        # retires a ring (the publisher's stats step), so that a ring is never closed mid-copy
        self._copier_lock = threading.Lock()
        self.runners: list[GraphRunner | None] = [None] * n_lanes
        self.graphs_mode = "eager"

    # -- picking -----------------------------------------------------------------------------------

    def _reader(self, camera: str, ring: FrameRing) -> PinnedRing:
        entry = self._readers.get(ring.name)
        if entry is not None and entry[0] is not ring:  # the same segment attached again: drop the old view
            self.copier.detach(entry[1])
            entry = None
        if entry is None:
            entry = self._readers[ring.name] = (ring, self.copier.attach(ring_buffer(ring), camera))
        return entry[1]

    def take(self, camera: str, ring: FrameRing, after_seq: int, pixels: bool = True) -> Frame | None:
        with self._copier_lock:
            reader = self._reader(camera, ring)
            ref = reader.peek(after_seq)
        if ref is None:
            return None
        meta = ref.to_frame(camera, after_seq)
        return SlotFrame(**vars(meta), reader=reader, ref=ref)

    def forget(self, ring: FrameRing) -> None:
        with self._copier_lock:
            entry = self._readers.get(ring.name)
            if entry is not None and entry[0] is ring:
                del self._readers[ring.name]
                self.copier.detach(entry[1])

    # -- stage 3 -------------------------------------------------------------------------------------

    def _acquire(self, numel: int) -> tuple[int, torch.Tensor]:
        """The next batch buffer, at least ``numel`` elements, ordered after its last reader on the
        preprocessing stream (the host waits only if a lane still holds it unreleased)."""
        index = self._next_buffer
        self._next_buffer = (index + 1) % len(self._buffers)
        buf = self._buffers[index]
        with self._cond:
            while buf.busy:
                self._cond.wait(0.1)
            buf.busy = True
        if buf.tensor is None or buf.tensor.numel() < numel:
            if buf.released is not None:  # the old tensor goes away: its last reader must be done
                self.rt.synchronize(buf.released)
                buf.released = None
            buf.tensor = self.rt.empty_batch(numel, self.dtype, self.prep_stream)
        if buf.released is not None:
            self.rt.wait(self.prep_stream, buf.released)
            buf.released = None
        return index, buf.tensor

    def _release_buffer(self, index: int, event: Any) -> None:
        buf = self._buffers[index]
        with self._cond:
            buf.released = event
            buf.busy = False
            self._cond.notify_all()

    def prepare(self, frames: list[Frame]) -> PreparedBatch:
        picks = []
        for f in frames:
            if not isinstance(f, SlotFrame) or f.reader is None or f.ref is None:
                raise TypeError("the device feed prepares frames it picked itself (SlotFrame)")
            picks.append((f.reader, f.ref))
        with self._copier_lock:
            pending = self.copier.copy(picks)
            copied = self.copier.finish(pending)  # waits for the copy event only; torn frames are None
        kept = [(f, d) for f, d in zip(frames, copied, strict=True) if d is not None]
        torn = [f for f, d in zip(frames, copied, strict=True) if d is None]
        if not kept:
            self.copier.release(pending, pending.event)
            return PreparedBatch([], None, [], torn=torn)
        hw = self.stages.input_shape([(f.height, f.width) for f, _ in kept])
        n = len(kept)
        index, storage = self._acquire(self.max_batch * 3 * hw[0] * hw[1])
        out = storage[: n * 3 * hw[0] * hw[1]].view(n, 3, *hw)
        self.rt.wait(self.prep_stream, pending.event)  # the kernel reads what the copy wrote
        self.rt.launch_preprocess([d for _, d in kept], hw, out, self.prep_stream)
        ready = self.rt.record(self.prep_stream)
        self.copier.release(pending, ready)  # the arena is rewritten only after the kernel read it
        transforms = [Transform(src_hw=(f.src_height, f.src_width), frame_hw=(f.height, f.width), input_hw=hw)
                      for f, _ in kept]
        return PreparedBatch([f for f, _ in kept], out, transforms, ready=ready, torn=torn, slot=index)

    def skip(self, frames: list[Frame]) -> None:
        """Consume the slots of frames the detector does not run on, without copying them."""
        with self._copier_lock:
            for f in frames:
                if isinstance(f, SlotFrame) and f.reader is not None and f.ref is not None:
                    f.reader.consume(f.ref)

    # -- stage 4 -------------------------------------------------------------------------------------

    def infer(self, prepared: PreparedBatch, lane: int) -> InferredBatch:
        if not prepared.frames:
            return InferredBatch([], [], None)
        stream = self.lane_streams[lane]
        self.rt.wait(stream, prepared.ready)  # the forward pass reads what the kernel wrote
        x = prepared.batch
        runner = self.runners[lane]
        backend = self.stages.backends[lane]

        def forward() -> torch.Tensor:
            if runner is not None and runner.mode == "graphs" and tuple(x.shape[1:]) == runner.sample_shape:
                return runner(x)
            return backend.infer(x)

        pred = self.rt.submit(stream, forward)
        assert prepared.slot is not None
        self._release_buffer(prepared.slot, self.rt.record(stream))
        post = self.stages.postprocessor
        packed = self.rt.submit(stream, lambda: post.packed(pred.result()))
        return InferredBatch(prepared.frames, prepared.transforms, packed, done=self.rt.record(stream))

    # -- stage 5 -------------------------------------------------------------------------------------

    def detections(self, inferred: InferredBatch) -> list[np.ndarray]:
        if not inferred.frames:
            return []
        self.rt.synchronize(inferred.done)
        packed = inferred.pred.result().cpu()  # the one device-to-host copy of the batch
        return self.stages.postprocessor.unpack(packed, inferred.transforms)

    # -- warm-up, stats --------------------------------------------------------------------------------

    def warm_graphs(self, input_hw: tuple[int, int], max_batch: int) -> str:
        """Capture one CUDA graph per batch size for every lane at ``input_hw`` and keep them only where
        warm-up measures them faster than eager (logged either way); returns "graphs" or "eager"."""
        if self.rt.emulated:
            self.graphs_mode = "eager"
            log.info("CUDA graphs: not used on the emulated device")
            return self.graphs_mode
        from streamdet.pipeline.backends.cuda_graphs import cuda_timer, for_backend
        from streamdet.pipeline.backends.torch_backend import TorchBackend

        modes = []
        for lane, backend in enumerate(self.stages.backends):
            if not isinstance(backend, TorchBackend):
                modes.append("eager")
                continue
            runner = for_backend(backend, input_hw, max_batch, timer=cuda_timer)
            with_stream = self.rt.submit(self.lane_streams[lane], runner.warmup)
            self.rt.synchronize(self.rt.record(self.lane_streams[lane]))
            modes.append(with_stream.result())
            self.runners[lane] = runner if runner.mode == "graphs" else None
        self.graphs_mode = "graphs" if modes and all(m == "graphs" for m in modes) else "eager"
        return self.graphs_mode

    def stats(self) -> dict[str, Any]:
        copier = self.copier.stats()
        return {"preprocess": "cuda", "pinned": copier["pinned"], "graphs": self.graphs_mode,
                "torn": copier["torn"]}

    def close(self) -> None:
        with self._copier_lock:
            for _, reader in list(self._readers.values()):
                self.copier.detach(reader)
            self._readers.clear()
            self.copier.close()
        self.rt.close()
