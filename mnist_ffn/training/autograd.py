"""The reference engine: forward through the module, loss.backward(), torch.optim.SGD's fused step; bf16 under
autocast, and torch.compile, which is its alone. mnist_ffn.training.backprop writes the same step out by hand.

It keeps the optimizer state in torch.optim.SGD's own format, as the hand-written engine does, so checkpoints do
not say, or care, which engine wrote them.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mnist_ffn.config import Config
from mnist_ffn.training.model import linear_layers
from mnist_ffn.training.optim import build_optimizer


class AutogradEngine:
    """The reference: forward through the module, loss.backward(), torch.optim.SGD's fused step."""

    name = "autograd"

    def __init__(self, model: nn.Sequential, config: Config, device: torch.device, *, precision: str = "fp32"):
        self.model = model
        self.forward = torch.compile(model) if config.train.compile else model
        self.optimizer = build_optimizer(model, config.optim)
        self.label_smoothing = config.train.label_smoothing
        self.l1 = config.optim.l1
        self.weights = [layer.weight for layer in linear_layers(model)]
        self.precision = precision  # "bf16": under autocast (the products in bfloat16, the loss in float32)
        bf16 = precision == "bf16"
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
        # ||dL/dZ_l|| of the last step, as the hand-written engine records it: read by a hook on each Linear's
        # output as backward() passes it (compiled graphs run no such hooks)
        self.grad_norms = None
        self.record_grad_norms = True  # this step's: the trainer records every GRAD_NORM_EVERY-th step
        if config.train.grad_norms and not config.train.compile:
            linears = linear_layers(model)
            self.grad_norms = torch.zeros(len(linears), device=device)
            self.hooks = [layer.register_forward_hook(self._watch(index)) for index, layer in enumerate(linears)]

    def _watch(self, index: int):
        norms = self.grad_norms

        def record(grad: Tensor) -> None:  # returns None: the gradient flows on unchanged
            torch.linalg.vector_norm(grad, dtype=torch.float32, out=norms[index])

        def on_output(module, inputs, z: Tensor) -> None:
            if z.requires_grad and self.record_grad_norms:  # training, not evaluation
                z.register_hook(record)

        return on_output

    def step(self, images: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast:
            logits = self.forward(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.l1:  # torch.optim.SGD has no L1: autograd differentiates the penalty l1 * sum |w| itself
            (loss + self.l1 * sum(weight.abs().sum() for weight in self.weights)).backward()
        else:
            loss.backward()
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def optimizer_state(self) -> dict:
        return self.optimizer.state_dict()

    def load_optimizer_state(self, saved: dict) -> None:
        self.optimizer.load_state_dict(saved)
