"""Stages 3-5 composed: preprocessor -> backend -> postprocessor, with the batch-shape policy.

The worker, :class:`streamdet.detector.Detector` (and so ``streamdet val`` and training
validation) all run frames through a :class:`Stages`, so there is one inference path.
Implementations are chosen by name (``preprocessor: cpu``; ``backend: auto | torch |
onnxruntime | openvino``) from lazy registries, so a missing optional dependency is a clear
error naming the pip extra, raised when the stage is built, not at import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from streamdet.pipeline.preprocess.letterbox import batch_input_shape
from streamdet.pipeline.registry import Registry
from streamdet.pipeline.types import Image, Transform

if TYPE_CHECKING:
    import torch

    from streamdet.pipeline.backends import Backend
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor
    from streamdet.pipeline.preprocess.letterbox import Preprocessor
    from streamdet.pipeline.settings import InferenceOptions

__all__ = ["PREPROCESSORS", "Stages", "build_stages"]

#: Preprocessor implementations by name: OpenCV on the CPU, or the fused CUDA kernel (CuPy: the
#: ``gpu`` extra; it also needs a CUDA device, checked when it is built).
PREPROCESSORS = Registry(
    "preprocessor",
    {
        "cpu": ("streamdet.pipeline.preprocess.letterbox:CpuPreprocessor", None),
        "cuda": ("streamdet.pipeline.preprocess.cuda:CudaPreprocessor", "gpu", ("cupy",)),
    },
)


@dataclass
class Stages:
    """One inference path: ``preprocess`` -> ``infer`` -> ``postprocess`` (see the module docstring).

    ``extra_backends`` are more instances of the same model for concurrent inference lanes:
    lane 0 is ``backend``, lane i is ``extra_backends[i - 1]``.
    """

    preprocessor: Preprocessor
    backend: Backend
    postprocessor: Postprocessor
    img_size: int
    extra_backends: list[Backend] = field(default_factory=list)

    @property
    def backends(self) -> list[Backend]:
        """Every inference lane's backend, lane 0 first."""
        return [self.backend, *self.extra_backends]

    @property
    def names(self) -> list[str]:
        """Class names, index = class id."""
        return list(self.backend.names)

    @property
    def stride(self) -> int:
        return int(self.backend.stride)

    def input_shape(self, frame_hws: Sequence[tuple[int, int]]) -> tuple[int, int]:
        """The (H, W) model input for a batch of frames of these sizes: the smallest common
        letterbox shape (dynamic backends), or the backend's fixed shape."""
        contract = self.backend.contract
        if not contract.dynamic_shape and contract.fixed_hw is not None:
            return contract.fixed_hw
        return batch_input_shape(frame_hws, self.img_size, self.stride)

    def preprocess(self, images: Sequence[Image], src_hws: Sequence[tuple[int, int]] | None = None,
                   out: np.ndarray | None = None) -> tuple[np.ndarray, list[Transform]]:
        """Stage 3: uint8 (B, 3, H, W) RGB batch and each frame's Transform. ``src_hws`` are the
        sources' sizes before any decoder downscale (default: the images' own sizes)."""
        frame_hws = [im.hw for im in images]
        input_hw = self.input_shape(frame_hws)
        batch = self.preprocessor(images, input_hw, out=out)
        srcs = frame_hws if src_hws is None else list(src_hws)
        transforms = [Transform(src_hw=tuple(s), frame_hw=f, input_hw=input_hw)  # type: ignore[arg-type]
                      for s, f in zip(srcs, frame_hws, strict=True)]
        return batch, transforms

    def infer(self, batch: np.ndarray, lane: int = 0) -> torch.Tensor:
        """Stage 4: raw predictions (B, N, 5+nc), on inference lane ``lane``."""
        return self.backends[lane].infer(batch)

    def postprocess(self, pred: torch.Tensor, transforms: Sequence[Transform]) -> list[np.ndarray]:
        """Stage 5: per-frame (n, 6) [x1, y1, x2, y2, score, class] in source pixels."""
        return self.postprocessor(pred, transforms)

    def __call__(self, images: Sequence[Image]) -> list[np.ndarray]:
        """All three stages on one batch."""
        if not images:
            return []
        batch, transforms = self.preprocess(images)
        return self.postprocess(self.infer(batch), transforms)

    def warmup(self, shapes: Sequence[tuple[int, int]], max_batch: int) -> None:
        """Run grey batches of every size up to ``max_batch`` on every lane, so the first real
        frames are not slow (and every lane's backend has compiled the shapes it will see)."""
        for b in range(1, max_batch + 1):
            hws = [shapes[i % len(shapes)] for i in range(b)]
            batch, transforms = self.preprocess([Image.bgr(np.full((h, w, 3), 114, np.uint8)) for h, w in hws])
            for lane in range(len(self.backends)):
                self.postprocess(self.infer(batch, lane), transforms)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def build_stages(options: InferenceOptions, *, model: Any = None) -> Stages:
    """Load the model into the named backend and put the three stages together, as ``options`` say.

    ``model`` (an in-memory streamdet YOLOv5 module, e.g. during training) replaces
    ``options.weights`` and implies the torch backend and one lane. ``options.lanes`` > 1 loads
    that many backend instances for concurrent inference (each with ``options.threads`` intra-op
    threads). Raises ValueError for an img_size that is not a multiple of the model stride,
    ImplementationUnavailable for a backend whose extra is not installed.
    """
    from streamdet.pipeline.backends import create_backend
    from streamdet.pipeline.postprocess.postprocessor import Postprocessor

    o = options
    if o.half and o.device == "cpu":
        raise ValueError("half=True needs a CUDA device; FP16 convolutions are not supported on CPU")
    if model is not None:
        from streamdet.pipeline.backends.torch_backend import TorchBackend

        be: Backend = TorchBackend.from_module(model, device=o.device, threads=o.threads)
    else:
        be = create_backend(o.backend, o.weights, device=o.device, half=o.half, threads=o.threads,
                            cache_dir=o.cache_dir)
    if o.img_size % int(be.stride):
        be.close()
        raise ValueError(f"img_size {o.img_size} is not a multiple of the model stride {be.stride}")
    extra: list[Backend] = []
    if model is None:
        try:
            for _ in range(1, o.lanes):
                extra.append(create_backend(be.name, o.weights, device=o.device, half=o.half, threads=o.threads,
                                            cache_dir=o.cache_dir))
        except BaseException:
            for b in [be, *extra]:
                b.close()
            raise
    pre = PREPROCESSORS.resolve(o.preprocessor)()
    return Stages(preprocessor=pre, backend=be, postprocessor=Postprocessor(o.nms), img_size=o.img_size,
                  extra_backends=extra)
