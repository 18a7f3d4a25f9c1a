"""Optimiser with YOLOv5's three parameter groups, and the warm-up / decay schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def build_optimizer(
    model: nn.Module, name: str = "SGD", lr: float = 0.01, momentum: float = 0.937, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW over three groups: BN weights (no decay), other weights (decay), biases.

    Group order is fixed: 0 = BN weights, 1 = decayed weights, 2 = biases (warm-up treats group 2
    specially).
    """
    bn_w, w, b = [], [], []
    norm_types = tuple(v for k, v in nn.__dict__.items() if "Norm" in k and isinstance(v, type))
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if pname == "bias":
                b.append(p)
            elif isinstance(module, norm_types):
                bn_w.append(p)
            else:
                w.append(p)
    if name == "SGD":
        opt: torch.optim.Optimizer = torch.optim.SGD(bn_w, lr=lr, momentum=momentum, nesterov=True)
    elif name == "AdamW":
        opt = torch.optim.AdamW(bn_w, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise ValueError(f"unknown optimizer {name!r} (SGD or AdamW)")
    opt.add_param_group({"params": w, "weight_decay": weight_decay})
    opt.add_param_group({"params": b, "weight_decay": 0.0})
    return opt


def lr_lambda(epochs: int, lrf: float, cosine: bool = True) -> Callable[[float], float]:
    """LR multiplier over (fractional) epochs: 1 -> ``lrf``, cosine or linear."""
    if cosine:
        return lambda x: ((1 - math.cos(min(x, epochs) * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda x: (1 - min(x, epochs) / epochs) * (1.0 - lrf) + lrf


def set_lr(
    opt: torch.optim.Optimizer,
    it: int,
    warmup_iters: int,
    lr0: float,
    factor: float,
    momentum: float,
    warmup_momentum: float = 0.8,
    warmup_bias_lr: float = 0.1,
) -> None:
    """Set every group's LR (and momentum) for iteration ``it``: linear warm-up, then ``lr0 * factor``.

    During warm-up the bias LR falls from ``warmup_bias_lr`` and the others rise from 0, and the
    momentum rises from ``warmup_momentum``.
    """
    target = lr0 * factor
    for j, g in enumerate(opt.param_groups):
        if it < warmup_iters:
            start = warmup_bias_lr if j == 2 else 0.0
            g["lr"] = float(np.interp(it, [0, warmup_iters], [start, target]))
            mom = float(np.interp(it, [0, warmup_iters], [warmup_momentum, momentum]))
        else:
            g["lr"] = target
            mom = momentum
        if "momentum" in g:
            g["momentum"] = mom
        elif "betas" in g:
            g["betas"] = (mom, g["betas"][1])
