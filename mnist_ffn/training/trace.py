"""The backward pass, shown: every number of the chain rule for some points, and its gradient check.

`trace` runs one step of the training engine itself (training.backprop.BackpropEngine, the code that trains) on a
float64 copy of the network and keeps what the step forms on its way, layer by layer, in the lesson's notation:

    forward    x (the layer's input), z = Wx + b, a = f(z), f'(z)
    backward   dL/dz, dL/da (= dL/dz of the layer above times its W), dL/dW = dL/dz x^T, dL/db = dL/dz
    update     what one SGD step, W <- W - lr (dL/dW + l2 W + l1 sign W), changes W and b by

The copy runs without dropout (the network as it answers, the one the playground draws) and without momentum (one
step of the lesson's plain SGD); float64, so that the gradient check below measures the equations, not rounding.

`finite_differences` is that check: each weight's dL/dW estimated from the loss alone, (L(w + h) - L(w - h)) / 2h,
through the model's own torch modules, not the engine: a wrong derivative in the engine makes the two disagree. It
takes two forward passes a weight: seconds for one point through the default 784-512-256-10 network.

Both take the network's own inputs: a 2-D set's features (Network.inputs_of_points) or normalized pixels (N, 784).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional

from mnist_ffn.config import Config
from mnist_ffn.training.backprop import BackpropEngine
from mnist_ffn.training.model import linear_layers

STEP = 1e-5  # h of the central differences: truncation (h^2) and rounding (1e-16 / h) errors both near 1e-11
# Where the engine and the estimate agree: |g - estimate| <= RELATIVE * max(|g|, |estimate|) + ABSOLUTE. The float64
# estimate's own error is about 1e-10 (truncation h^2 f''' / 6 and rounding 2e-16 L / h), far inside the bound;
# a wrong derivative is off by a fraction of the gradient itself. A ReLU whose z is within h |x| of its kink
# has no derivative there: its estimate may disagree, and the check says which weights those are.
RELATIVE = 1e-4
ABSOLUTE = 1e-8
CHUNK = 256  # moved copies of the network evaluated at once
CHUNK_VALUES = 1 << 22  # ... and at most this many numbers of z among them (32 MB in float64)


@dataclass
class LayerTrace:
    """One Linear layer's numbers for N points; the output layer has no a, f'(z) or dL/da."""

    x: Tensor  # the layer's input, (N, in)
    z: Tensor  # Wx + b, (N, out)
    a: Tensor | None  # f(z), (N, out)
    slope: Tensor | None  # f'(z), (N, out)
    grad_a: Tensor | None  # dL/da, (N, out)
    grad_z: Tensor  # dL/dz, (N, out)
    grad_weight: Tensor  # dL/dW, (out, in): the sum over the points of dL/dz x^T
    grad_bias: Tensor  # dL/db, (out,)
    weight: Tensor  # W and b before the step
    bias: Tensor
    weight_update: Tensor  # what the step added to W and b
    bias_update: Tensor


@dataclass
class Trace:
    layers: list[LayerTrace]  # the lowest first
    loss: float  # the mean loss over the points, before the step
    probabilities: Tensor  # softmax(z_L), (N, K)
    target: Tensor  # (1 - eps) onehot(y) + eps / K, (N, K)
    lr: float


def trace(model: nn.Sequential, config: Config, x: Tensor, labels: Tensor) -> Trace:
    """The chain rule through `model` for the points x (N, inputs) with `labels` (N,): one step of the engine on a
    float64 copy (the model itself is not touched)."""
    copied, x, labels = _in_float64(model, x, labels)
    model_config = dataclasses.replace(config.model, dropout=0.0)
    optim = dataclasses.replace(config.optim, momentum=0.0, nesterov=False)
    engine = BackpropEngine(
        copied, model_config, optim, config.train.label_smoothing, len(labels), cuda_graph=False, grad_norms=False
    )
    linears = linear_layers(copied)
    before = [(layer.weight.detach().clone(), layer.bias.detach().clone()) for layer in linears]
    engine.trace = [{} for _ in before]
    loss, _ = engine.step(x.clone(), labels, optim.lr)
    buffers = engine.buffers(len(labels))
    layers = []
    for index, (layer, (weight, bias)) in enumerate(zip(linears, before, strict=True)):
        kept = engine.trace[index]
        hidden = index < len(before) - 1
        a = buffers.a[index].clone() if hidden else None
        layers.append(
            LayerTrace(
                x=x if index == 0 else layers[-1].a,
                z=buffers.z[index].clone(),
                a=a,
                slope=_slope(engine, buffers.z[index], a) if hidden else None,
                grad_a=kept.get("grad_a"),
                grad_z=kept["grad_z"],
                grad_weight=kept["grad_weight"],
                grad_bias=kept["grad_bias"],
                weight=weight,
                bias=bias,
                weight_update=layer.weight.detach() - weight,
                bias_update=layer.bias.detach() - bias,
            )
        )
    return Trace(
        layers=layers,
        loss=float(loss),
        probabilities=buffers.log_probs.exp(),
        target=buffers.target.clone(),
        lr=optim.lr,
    )


def _in_float64(model: nn.Sequential, x: Tensor, labels: Tensor) -> tuple[nn.Sequential, Tensor, Tensor]:
    """A float64 copy of the model on the CPU, in evaluation mode, and the points and labels to go with it."""
    copied = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    x = x.to(device="cpu", dtype=torch.float64).reshape(len(labels), -1)
    return copied, x, labels.to(device="cpu", dtype=torch.int64)


def _slope(engine: BackpropEngine, z: Tensor, a: Tensor) -> Tensor:
    """f'(z) by the engine's own derivative (the one its backward multiplies by); 1 for the identity."""
    derivative = engine.activation.derivative
    if derivative is None:
        return torch.ones_like(z)
    out, scratch = torch.empty_like(z), torch.empty_like(z)
    derivative(z.clone(), a, out, scratch)
    return out


@dataclass
class GradientCheck:
    """Per layer: the central-difference estimate of dL/dW and dL/db, and where they agree with the engine's."""

    weight: list[Tensor]  # (out, in) per layer
    bias: list[Tensor]  # (out,) per layer

    def relative_differences(self, traced: Trace) -> list[tuple[Tensor, Tensor]]:
        """|g - estimate| / max(|g|, |estimate|) per weight and bias (0 where both are 0)."""
        return [
            (_relative(layer.grad_weight, weight), _relative(layer.grad_bias, bias))
            for layer, weight, bias in zip(traced.layers, self.weight, self.bias, strict=True)
        ]

    def agreements(self, traced: Trace) -> list[tuple[Tensor, Tensor]]:
        return [
            (_agree(layer.grad_weight, weight), _agree(layer.grad_bias, bias))
            for layer, weight, bias in zip(traced.layers, self.weight, self.bias, strict=True)
        ]


def _relative(exact: Tensor, estimate: Tensor) -> Tensor:
    largest = torch.maximum(exact.abs(), estimate.abs())
    return torch.where(largest > 0, (exact - estimate).abs() / largest.clamp_min(1e-300), torch.zeros_like(largest))


def _agree(exact: Tensor, estimate: Tensor) -> Tensor:
    return (exact - estimate).abs() <= RELATIVE * torch.maximum(exact.abs(), estimate.abs()) + ABSOLUTE


def finite_differences(model: nn.Sequential, config: Config, x: Tensor, labels: Tensor) -> GradientCheck:
    """dL/dW and dL/db of the mean loss over the points, estimated by central differences: the loss computed by the
    model's own modules (without dropout) with each weight moved by +h and -h, one at a time."""
    copied, x, labels = _in_float64(model, x, labels)
    smoothing = config.train.label_smoothing
    modules = list(copied)
    weights, biases = [], []
    with torch.no_grad():
        below = x
        for position, module in enumerate(modules):
            if isinstance(module, nn.Linear):
                above = nn.Sequential(*modules[position + 1 :])
                weights.append(_estimate(module.weight, module.bias, below, above, labels, smoothing, "weight"))
                biases.append(_estimate(module.weight, module.bias, below, above, labels, smoothing, "bias"))
            below = module(below)
    return GradientCheck(weights, biases)


def _estimate(weight, bias, below, above, labels, smoothing, which: str) -> Tensor:
    """(L(p + h e_i) - L(p - h e_i)) / 2h for every entry i of the layer's weight or bias. Moving W_jk by h moves
    z_j by h x_k and nothing else (b_j: z_j by h), so each moved copy of the network differs from it in one column
    of z: the copies run as a batch from there up, a chunk at a time, never a copy of the weight matrix each."""
    z = below @ weight.t() + bias  # (N, out)
    points, width = z.shape
    inputs = weight.shape[1]
    count = weight.numel() if which == "weight" else bias.numel()
    chunk = max(1, min(CHUNK, CHUNK_VALUES // (points * width)))
    estimate = torch.empty(count, dtype=torch.float64)
    for start in range(0, count, chunk):
        entries = torch.arange(start, min(start + chunk, count))
        if which == "weight":
            neurons, shift = entries // inputs, below[:, entries % inputs].t() * STEP  # (C,), (C, N): h x_k
        else:
            neurons, shift = entries, torch.full((len(entries), points), STEP, dtype=z.dtype)
        losses = []
        for sign in (1.0, -1.0):
            moved = z.expand(len(entries), points, width).clone()  # (C, N, out)
            moved[torch.arange(len(entries))[:, None], torch.arange(points)[None, :], neurons[:, None]] += sign * shift
            logits = above(moved)  # (C, N, K)
            per_point = functional.cross_entropy(
                logits.flatten(0, 1), labels.repeat(len(entries)), label_smoothing=smoothing, reduction="none"
            )
            losses.append(per_point.view(len(entries), -1).mean(dim=1))
        estimate[entries] = (losses[0] - losses[1]) / (2 * STEP)
    return estimate.view(weight.shape if which == "weight" else bias.shape)
