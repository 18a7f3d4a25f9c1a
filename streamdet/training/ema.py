"""Exponential moving average of model weights (what YOLOv5 evaluates and saves)."""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Generic, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


class ModelEMA(Generic[M]):
    """Keeps ``ema = d * ema + (1 - d) * model`` over every float state tensor (BN statistics included).

    The decay ramps up as ``decay * (1 - exp(-updates / tau))`` so the early, poor weights are
    forgotten quickly; a short run wants a short ``tau``.
    """

    def __init__(self, model: M, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0) -> None:
        self.ema = deepcopy(model).eval()
        self.updates = updates
        self.decay = decay
        self.tau = tau
        for p in self.ema.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """Decay used by the next update."""
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the model's current weights into the average."""
        self.updates += 1
        d = self.current_decay()
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
