"""The model input from the preprocessor's uint8 batch: to the backend's device, scaled there to [0, 1].

Used by the torch backend (the host feed's batches) and by the worker's start-up self-check (what
the device feed's kernel must equal). numpy at import time; torch when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["to_model_input"]

_INV_255 = float(np.float32(1.0) / np.float32(255.0))  # exactly representable in float32


def to_model_input(batch_u8: np.ndarray | Any, device: Any, half: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) batch -> float (or half) tensor in [0, 1] on device.

    The uint8 batch is what crosses to the device (4x less than float32); the conversion runs
    there, in the target dtype, as in the official detect.py. The scaling is the same on every
    device: float32 ``v * float32(1/255)``, which is what torch computes on CUDA for ``v / 255``
    (a CPU division would differ by one ulp on 126 of the 256 values), and what the fused CUDA
    kernel writes; FP16 is ``v / 255`` in half (equal to the kernel's rounding of the float32
    product). So the host feed, the device feed and the emulation give one model input.
    Accepts a numpy array or a (possibly pinned) CPU tensor; the copy is non-blocking when the
    source is pinned.
    """
    import torch

    t = batch_u8 if isinstance(batch_u8, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch_u8))
    t = t.to(torch.device(device), non_blocking=t.is_pinned())
    if half:
        t = t.half()
        t /= 255
    else:
        t = t.float()
        t *= _INV_255
    return t
