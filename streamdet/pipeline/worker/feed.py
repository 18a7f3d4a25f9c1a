"""Where gathering meets preprocessing: one seam (:class:`Feed`), two implementations.

A feed takes the frame the gatherer picks from a camera's ring, turns a batch of picked frames
into the model's input, runs an inference lane on it and hands back each frame's detections:

* :class:`HostFeed` (every CPU worker, and a CUDA worker with ``preprocess: cpu``): the ring's
  seqlock read copies each picked frame into host memory at once (a frame the detector skips,
  ``detect_every``, only its header), the CPU preprocessor letterboxes
  the batch into uint8, the backend uploads and converts it, and the postprocessor returns host
  arrays.
* :class:`~streamdet.pipeline.worker.device_feed.DeviceFeed` (``preprocess: cuda``): picking
  only peeks at the slot; the batch's slots are copied by DMA from the page-locked ring, the fused
  kernel writes the model-dtype batch on the device, and the lane runs the model and whole-batch
  NMS on its own CUDA stream.

The worker's steps (:class:`~streamdet.pipeline.worker.loop.WorkerLoop`) are the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamdet.pipeline.ring.buffer import FrameRing
from streamdet.pipeline.types import Frame

if TYPE_CHECKING:
    from streamdet.pipeline.stages import Stages

__all__ = ["Feed", "HostFeed", "InferredBatch", "PreparedBatch"]


@dataclass
class PreparedBatch:
    """Stage 3's output: the frames, their model-input batch and each frame's geometry.

    ``batch`` is a host uint8 array (host feed) or a tensor on the device in the model's dtype
    (device feed), valid for reading once ``ready`` (an event; None on the host) has completed.
    ``torn``: picked frames that the decoder rewrote while they were being copied (dropped, counted).
    """

    frames: list[Frame]
    batch: Any
    transforms: list[Any]
    ready: Any = None
    torn: list[Frame] = field(default_factory=list)
    slot: int | None = None  # the device feed's batch buffer holding ``batch``
    tracked_only: list[Frame] = field(default_factory=list)  # taken, not for the detector (detect_every)


@dataclass
class InferredBatch:
    """Stage 4's output: the frames, their transforms and the raw predictions (host feed) or the
    device feed's pending packed detections, complete once ``done`` (an event) has completed."""

    frames: list[Frame]
    transforms: list[Any]
    pred: Any
    done: Any = None
    torn: list[Frame] = field(default_factory=list)  # the prepared batch's torn frames, counted when published
    tracked_only: list[Frame] = field(default_factory=list)  # published with the tracker's boxes, in this order


class Feed(Protocol):
    """Ring -> model input -> detections, for one worker (see the module docstring)."""

    name: str  # "host" or "device"

    def take(self, camera: str, ring: FrameRing, after_seq: int, pixels: bool = True) -> Frame | None:
        """The frame of ``camera`` after ``after_seq`` to put in the next batch, or None. ``pixels``
        False: the detector will not run on it (``detect_every``), its pixels are not needed."""
        ...

    def prepare(self, frames: list[Frame]) -> PreparedBatch:
        """Stage 3: the model-input batch of the picked frames."""
        ...

    def skip(self, frames: list[Frame]) -> None:
        """Frames taken that the detector does not run on (``detect_every``): free their slots."""
        ...

    def infer(self, prepared: PreparedBatch, lane: int) -> InferredBatch:
        """Stage 4 on inference lane ``lane``."""
        ...

    def detections(self, inferred: InferredBatch) -> list[np.ndarray]:
        """Stage 5: per-frame (n, 6) float32 [x1, y1, x2, y2, score, class] in source pixels, on the host."""
        ...

    def forget(self, ring: FrameRing) -> None:
        """A ring is about to be closed (a reload detached its camera): drop what refers to it."""
        ...

    def stats(self) -> dict[str, Any]:
        """The worker stats message's feed fields: preprocess, pinned, graphs, torn (cumulative)."""
        ...

    def close(self) -> None: ...


class HostFeed:
    """Today's path: copy on pick, CPU preprocessing, host batch (see the module docstring)."""

    name = "host"

    def __init__(self, stages: Stages, reason: str | None = None) -> None:
        self.stages = stages
        self.reason = reason  # why a CUDA worker runs the CPU preprocessor (None: asked for, or a CPU worker)

    def take(self, camera: str, ring: FrameRing, after_seq: int, pixels: bool = True) -> Frame | None:
        return ring.read_next(after_seq, pixels=pixels)  # a tracked-only frame: its header, no copy

    def prepare(self, frames: list[Frame]) -> PreparedBatch:
        images = [f.to_image() for f in frames]
        batch, transforms = self.stages.preprocess(images, [(f.src_height, f.src_width) for f in frames])
        return PreparedBatch(frames, batch, transforms)

    def skip(self, frames: list[Frame]) -> None:
        return None  # read_next consumed them already

    def infer(self, prepared: PreparedBatch, lane: int) -> InferredBatch:
        return InferredBatch(prepared.frames, prepared.transforms, self.stages.infer(prepared.batch, lane))

    def detections(self, inferred: InferredBatch) -> list[np.ndarray]:
        return self.stages.postprocess(inferred.pred, inferred.transforms)

    def forget(self, ring: FrameRing) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"preprocess": "cpu", "pinned": None, "graphs": None, "torn": 0}

    def close(self) -> None:
        return None
