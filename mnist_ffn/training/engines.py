"""Which of the two engines takes a run's SGD steps, by hand (training.backprop) or with autograd
(training.autograd), and building it. Both update the same nn.Sequential in place and keep the optimizer state in
torch.optim.SGD's format, so checkpoints do not say, or care, which engine wrote them.
"""

from __future__ import annotations

import torch
from torch import nn

from mnist_ffn.config import Config
from mnist_ffn.training.autograd import AutogradEngine
from mnist_ffn.training.backprop import BackpropEngine


def engine_name(config: Config, device: torch.device) -> str:
    """`auto` is the hand-written engine wherever it computes what the config asks for."""
    engine = config.train.engine
    if engine != "auto":
        return engine
    # bf16 autocast and torch.compile are autograd's; an Apple GPU has never run the hand-written step
    unsupported = config.train.precision != "fp32" or config.train.compile or device.type not in ("cpu", "cuda")
    return "autograd" if unsupported else "backprop"


def build_engine(model: nn.Sequential, config: Config, device: torch.device) -> AutogradEngine | BackpropEngine:
    if engine_name(config, device) == "autograd":
        return AutogradEngine(model, config, device)
    train = config.train
    return BackpropEngine(model, config.model, config.optim, train.label_smoothing, max_batch=train.batch_size)
