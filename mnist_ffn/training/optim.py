"""SGD and its learning-rate schedule.

The learning rate is a pure function of the global step, set on the optimizer before each
step: nothing to save for it, so a resumed run follows exactly the same schedule.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mnist_ffn.config import OptimConfig


def fused_sgd(device: torch.device) -> bool | None:
    """The fused kernel updates all parameters in one pass: measurably faster on CPU and CUDA (None: not offered)."""
    return True if device.type in ("cpu", "cuda") else None


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        fused=fused_sgd(next(model.parameters()).device),
    )


def learning_rate(config: OptimConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The learning rate for global step `step` (0-based) of a run of `epochs` epochs."""
    total_steps = steps_per_epoch * epochs
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    if step < warmup_steps:
        return config.lr * (step + 1) / warmup_steps
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "step":
        return config.lr * config.step_gamma ** ((step // steps_per_epoch) // config.step_every)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
