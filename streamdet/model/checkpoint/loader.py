"""Building our :class:`~streamdet.model.yolov5.YOLOv5` from a checkpoint read by the safe reader.

The checkpoint's architecture dict builds a fresh model, whose tensors are then filled by name
from the stored state_dict after checking that keys and shapes agree exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from streamdet.errors import CheckpointError, ModelError
from streamdet.model.checkpoint.reader import PathLike, read_checkpoint
from streamdet.model.yolov5 import YOLOv5


def load_model(path: PathLike, device: str | torch.device = "cpu", half: bool = False,
               fuse: bool = True) -> YOLOv5:
    """Build a YOLOv5 from a checkpoint, ready for inference (eval mode, no gradients).

    The stored (fp16) tensors are copied by name into a float32 model after checking that the
    key sets and every shape agree. ``fuse`` folds BatchNorm into the convolutions; ``half``
    converts to float16 afterwards (meant for CUDA).
    """
    ckpt = read_checkpoint(path)
    try:
        model = YOLOv5(ckpt.arch, ch=int(ckpt.arch.get("ch", 3)), nc=ckpt.nc)
    except (ModelError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot build the stored architecture: {e}") from e
    _copy_weights(model, ckpt.state_dict, path)
    model.names = list(ckpt.names)
    if ckpt.stride:
        if len(ckpt.stride) != model.detect.nl or any(
            abs(a - b) > 1e-6 for a, b in zip(ckpt.stride, model.stride.tolist(), strict=False)
        ):
            raise CheckpointError(f"{path}: stored strides {ckpt.stride} do not match the architecture's "
                                  f"{model.stride.tolist()}")
        model.stride = torch.tensor(ckpt.stride, dtype=torch.float32)
        model.detect.stride = model.stride.clone()
    if fuse:
        model.fuse()
    if half:
        model.half()
    model.to(device).eval()
    model.requires_grad_(False)
    return model


def _copy_weights(model: YOLOv5, state: dict[str, Tensor], path: PathLike) -> None:
    """Copy checkpoint tensors into ``model`` by name; any key or shape disagreement is an error."""
    own = model.state_dict()
    # Ultralytics <= v5.0 stored the pixel anchors of the head as an extra buffer; it is derived data.
    head = f"model.{len(model.model) - 1}."
    state = {k: v for k, v in state.items() if k != head + "anchor_grid"}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{path}: weights do not fit the stored architecture "
                              f"({len(state)} tensors in file, {len(own)} in model); " + "; ".join(parts))
    with torch.no_grad():
        for k, v in own.items():
            v.copy_(state[k])  # fp16 -> fp32 upcast happens here (exact)
