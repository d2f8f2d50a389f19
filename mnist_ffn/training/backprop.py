"""Backpropagation by hand: the lesson's equations as mnist-ffn's training engine.

For a batch X (N x 784), labels y, and layers l = 1..L of the nn.Sequential (W_l: out x in):

    forward    Z_l = A_{l-1} W_l^T + b_l          A_0 = X
               A_l = f(Z_l)  (then dropout: A_l <- A_l * M_l / keep, M_l ~ Bernoulli(keep))
               log P = log softmax(Z_L)
               loss = -(1/N) sum_i sum_k T_ik log P_ik,   T = (1 - eps) onehot(y) + eps / K
    backward   dL/dZ_L = (P - T) / N
               dL/dW_l = (dL/dZ_l)^T A_{l-1}          dL/db_l = (dL/dZ_l)^T 1   (the sum over the batch)
               dL/dA_{l-1} = dL/dZ_l W_l
               dL/dZ_{l-1} = dL/dA_{l-1} * M_{l-1} / keep * f'(Z_{l-1})
    update     g = dL/dW + wd W + l1 sign(W)          v <- mu v + g          W <- W - lr v       (or, Nesterov,
                                                                                     W <- W - lr (g + mu v))
                                                      (the biases take wd, not l1)

which is exactly what autograd and torch.optim.SGD compute (tests/test_backprop.py checks it).
Every buffer is allocated once, for the largest batch; a step writes into them with `out=` and
in-place operations, so the hot loop builds no autograd graph and allocates no tensors. Products
are folded where one BLAS call does two things for the price of one: the forward's addmm adds the
bias, and with plain momentum `v.addmm_(delta^T, A)` accumulates dL/dW straight into the momentum
buffer, so no gradient is ever written out and read back.

With `precision="bf16"` the same equations run with their matrix products in bfloat16, as autocast computes
them: the products' inputs are bfloat16 (the weights' bfloat16 copies, refreshed from the float32 masters at the
start of each step; the activations and dL/dZ, kept in bfloat16 between the products) and each product accumulates
in float32 inside the kernel before its result is rounded to bfloat16 (the biases' gradients too: sums over the
batch in float32, rounded once). The softmax, the loss and dL/dZ_L are float32, and so are the master weights, the
gradients handed to the update, the momentum and the update; so are f'(Z) (computed from Z and A read into float32,
so that dL/dA * f'(Z) rounds once, as autograd's fused backward kernels round it) and the dropout masks (Bernoulli
draws at exactly `keep`, scaled by exactly 1/keep). Where a CPU has bfloat16 units (AMX, AVX512-BF16) the products
run two to four times as fast.

The optimizer state is what torch.optim.SGD.state_dict() holds (its momentum buffers), so a run
started with this engine resumes with the autograd one and back. The engine never builds a
torch.optim.SGD: constructing one imports torch._dynamo, a second and a half of every start.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mnist_ffn.config import ModelConfig, OptimConfig, activation_function
from mnist_ffn.messages import reason
from mnist_ffn.training.model import linear_layers
from mnist_ffn.training.optim import fused_sgd

# -- activations: f and its derivative f' -------------------------------------------------------------
# forward(z, out) writes a = f(z); derivative(z, a, out) writes f'(z), given z and a = f(z).
# The forward passes are torch's own kernels, so the numbers are nn.Sequential's to the bit;
# the derivatives are the lesson's, written out.

LEAKY_SLOPE = 0.01  # nn.LeakyReLU's default
SQRT_HALF = math.sqrt(0.5)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    forward: Callable[[Tensor, Tensor], object]
    derivative: Callable[[Tensor, Tensor, Tensor, Tensor], object] | None  # (z, a, out, scratch); None: f' = 1
    # (delta, z): delta <- delta * f'(z) in one pass, where f' is 0 or 1 (ReLU: keep delta where z > 0). The same
    # numbers as multiplying by the derivative, without writing f'(z) out and reading it back.
    gate: Callable[[Tensor, Tensor], object] | None = None


def _relu_derivative(z, a, out, scratch):
    torch.gt(z, 0, out=out)  # f'(z) = 1 if z > 0 else 0


def _relu_gate(delta, z):
    torch.ops.aten.threshold_backward.grad_input(delta, z, 0, grad_input=delta)  # delta where z > 0, else 0


def _leaky_relu_derivative(z, a, out, scratch):
    torch.gt(z, 0, out=out).mul_(1.0 - LEAKY_SLOPE).add_(LEAKY_SLOPE)  # 1 if z > 0 else the slope


def _elu_derivative(z, a, out, scratch):
    # 1 if z > 0 else e^z, from z: e^z = a + 1 would lose e^z's digits where a is close to -1
    torch.clamp_max(z, 0, out=out).exp_()


def _gelu_derivative(z, a, out, scratch):
    # f(z) = z Phi(z)  ->  f'(z) = Phi(z) + z phi(z), Phi the normal CDF and phi its density
    torch.mul(z, SQRT_HALF, out=out).erf_().add_(1).mul_(0.5)  # Phi(z) = (1 + erf(z / sqrt 2)) / 2
    torch.mul(z, z, out=scratch).mul_(-0.5).exp_().mul_(INV_SQRT_2PI).mul_(z)  # z phi(z)
    out.add_(scratch)


def _silu_derivative(z, a, out, scratch):
    # f(z) = z s(z), s the sigmoid  ->  f'(z) = s + z s (1 - s) = s + a (1 - s)
    torch.sigmoid(z, out=out)
    torch.neg(out, out=scratch).add_(1).mul_(a)
    out.add_(scratch)


def _tanh_derivative(z, a, out, scratch):
    torch.mul(a, a, out=out).neg_().add_(1)  # 1 - tanh(z)^2


def _sigmoid_derivative(z, a, out, scratch):
    torch.neg(a, out=out).add_(1).mul_(a)  # s(z) (1 - s(z))


def _softplus_derivative(z, a, out, scratch):
    # f(z) = log(1 + e^z)  ->  f'(z) = s(z). (nn.Softplus returns z itself above z = 20, where
    # s(z) = 1 - 2e-9 rounds to 1.0 in float32: the same numbers.)
    torch.sigmoid(z, out=out)


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(lambda z, out: out.copy_(z), None),
    "relu": Activation(lambda z, out: torch.clamp_min(z, 0, out=out), _relu_derivative, _relu_gate),
    "leaky_relu": Activation(lambda z, out: torch._C._nn.leaky_relu(z, LEAKY_SLOPE, out=out), _leaky_relu_derivative),
    "elu": Activation(lambda z, out: torch._C._nn.elu(z, out=out), _elu_derivative),
    "gelu": Activation(lambda z, out: torch._C._nn.gelu(z, out=out), _gelu_derivative),
    "silu": Activation(lambda z, out: torch._C._nn.silu(z, out=out), _silu_derivative),
    "tanh": Activation(lambda z, out: torch.tanh(z, out=out), _tanh_derivative),
    "sigmoid": Activation(lambda z, out: torch.sigmoid(z, out=out), _sigmoid_derivative),
    "softplus": Activation(lambda z, out: torch._C._nn.softplus(z, 1, 20, out=out), _softplus_derivative),
}


def add_scaled(param: Tensor, direction: Tensor, scale: float | Tensor) -> None:
    """param <- param + scale * direction, for a number or a 0-dim tensor `scale`."""
    if isinstance(scale, Tensor):
        param.addcmul_(direction, scale)
    else:
        param.add_(direction, alpha=scale)


# -- the engine ---------------------------------------------------------------------------------------

GRAPH_TOLERANCE = 1e-5  # the graph and the eager step run the same kernels on the same numbers: equal, or nearly


@dataclass
class Buffers:
    """Everything one step writes, as views of the engine's storage for a batch of `n` images."""

    z: list[Tensor]  # per layer: (N, out)
    a: list[Tensor]  # per hidden layer: f(z), (N, out)
    after_dropout: list[Tensor]  # per hidden layer with dropout: a * mask, the next layer's input (N, out)
    mask: list[Tensor]  # per hidden layer with dropout: Bernoulli(keep) / keep, (N, out), float32
    delta: list[Tensor]  # per hidden layer: dL/da, then in place dL/dz, (N, out)
    slope: list[Tensor]  # per hidden layer: f'(z), (N, out), float32
    scratch: list[Tensor]  # per hidden layer: (N, out), float32
    z_master: list[Tensor]  # bf16 products with a written f'(z): z and a read into float32 for it, (N, out) each
    a_master: list[Tensor]
    log_probs: Tensor  # (N, K)
    target: Tensor  # (N, K): (1 - eps) onehot(y) + eps / K
    logits_delta: Tensor  # dL/dz_L, (N, K), float32
    ones: Tensor  # (N,): dL/db = delta^T 1
    # bf16 products only (empty tensors otherwise):
    inputs: Tensor  # X in bfloat16, (N, in)
    logits: Tensor  # Z_L in float32, for the softmax and the loss, (N, K)
    logits_delta_products: Tensor  # dL/dZ_L in bfloat16, the backward's first product's input, (N, K)


class BackpropEngine:
    """Trains `model` (Flatten, [Linear, activation, Dropout?] * H, Linear) in place, one SGD step per call."""

    name = "backprop"

    def __init__(
        self,
        model: nn.Sequential,
        model_config: ModelConfig,
        optim_config: OptimConfig,
        label_smoothing: float,
        max_batch: int,
        cuda_graph: bool | None = None,  # None: on a CUDA device (the tests simulate one on the CPU)
        precision: str = "fp32",  # or "bf16": the matrix products in bfloat16 (the module docstring)
        grad_norms: bool = True,  # each step's ||dL/dZ_l|| per layer into self.grad_norms
    ):
        linears = linear_layers(model)
        # detach(): the same storage as the model's parameters, without autograd's bookkeeping
        self.weights = [layer.weight.detach() for layer in linears]  # W_l: (out, in)
        self.biases = [layer.bias.detach() for layer in linears]  # b_l: (out,)
        self.parameters = [p for pair in zip(self.weights, self.biases, strict=True) for p in pair]  # model order
        self.activation = ACTIVATIONS[activation_function(model_config.activation)]
        self.keep = 1.0 - model_config.dropout
        self.writes_slopes = self.activation.derivative is not None and self.activation.gate is None
        self.label_smoothing = label_smoothing
        self.optim = optim_config
        device = self.weights[0].device
        self.fused = fused_sgd(device)  # what build_optimizer's torch.optim.SGD records in its state
        self.momentum_buffers = [torch.zeros_like(p) for p in self.parameters] if optim_config.momentum else []
        self.precision = precision
        self.bf16 = precision == "bf16"
        # fp32 plain momentum accumulates dL/dW straight into the momentum buffer (descend()); the rest write it out
        plain_momentum = optim_config.momentum and not optim_config.nesterov and not self.bf16
        self.gradients = [] if plain_momentum else [torch.empty_like(p) for p in self.parameters]
        self.signs = [torch.empty_like(w) for w in self.weights] if optim_config.l1 else []  # sign(W) for L1
        self.steps_taken = 0
        self.lr = optim_config.lr  # the last step's, as torch.optim.SGD's state dict records it
        compute = torch.bfloat16 if self.bf16 else self.weights[0].dtype  # the products' and activations' dtype
        # the products' weights and biases: the float32 parameters themselves, or bfloat16 copies of them
        self.product_weights = [w.to(compute) for w in self.weights] if self.bf16 else self.weights
        self.product_biases = [b.to(compute) for b in self.biases] if self.bf16 else self.biases
        self.product_parameters = [
            p for pair in zip(self.product_weights, self.product_biases, strict=True) for p in pair
        ]
        self.weights_t = [weight.t() for weight in self.product_weights]  # W_l^T: (in, out), views made once
        # bf16: each parameter's dL/dp as its product gives it, in bfloat16, before the float32 gradient takes it
        self.gradient_products = [torch.empty_like(p, dtype=compute) for p in self.parameters] if self.bf16 else []
        # -lr and -lr mu scale the updates: numbers on the CPU, 0-dim device tensors where a CUDA graph
        # replays the step (it then reads whatever they hold)
        self.neg_lr: float | Tensor = 0.0
        self.neg_lr_momentum: float | Tensor = 0.0
        self.loss = torch.zeros((), dtype=self.weights[0].dtype, device=device)
        # ||dL/dZ_l|| of the last step, layer l = 0 the lowest: (L,) float32, or None where not recorded
        master = self.weights[0].dtype
        self.grad_norms = torch.zeros(len(self.weights), dtype=master, device=device) if grad_norms else None
        self.record_grad_norms = True  # this step's: the trainer records every GRAD_NORM_EVERY-th step
        # training.trace's: per layer, copies of what the backward pass forms ("grad_z", "grad_a", "grad_weight",
        # "grad_bias") as it forms them; None (training) copies nothing
        self.trace: list[dict[str, Tensor]] | None = None

        widths = [layer.out_features for layer in linears]
        hidden, classes = widths[:-1], widths[-1]

        def empty(*shape: int, dtype: torch.dtype = compute) -> Tensor:
            return torch.empty(*shape, dtype=dtype, device=device)

        master = self.weights[0].dtype

        def per_hidden(enabled: bool = True, dtype: torch.dtype = compute) -> list[Tensor]:
            return [empty(max_batch, width, dtype=dtype) for width in hidden] if enabled else []

        products_only = max_batch if self.bf16 else 0  # the bf16 step's own buffers: none in float32
        self._storage = Buffers(
            z=[empty(max_batch, width) for width in widths],
            a=per_hidden(),
            after_dropout=per_hidden(self.keep < 1.0),
            mask=per_hidden(self.keep < 1.0, master),
            delta=per_hidden(),
            slope=per_hidden(self.writes_slopes, master),
            scratch=per_hidden(self.writes_slopes, master),
            z_master=per_hidden(self.writes_slopes and self.bf16, master),
            a_master=per_hidden(self.writes_slopes and self.bf16, master),
            log_probs=empty(max_batch, classes, dtype=master),
            target=empty(max_batch, classes, dtype=master),
            logits_delta=empty(max_batch, classes, dtype=master),
            ones=empty(max_batch, dtype=master).fill_(1),
            inputs=empty(products_only, linears[0].in_features),
            logits=empty(products_only, classes, dtype=master),
            logits_delta_products=empty(products_only, classes),
        )
        self._views: dict[int, Buffers] = {}
        # CUDA: full batches replay one captured graph of train_step (see replay_on_cuda)
        self.max_batch = max_batch
        self.use_cuda_graph = device.type == "cuda" if cuda_graph is None else cuda_graph
        self.graph = None
        self.eager_full_batches = 0  # on CUDA, before the capture
        self.graph_inputs: tuple[Tensor, Tensor] | None = None  # each full batch is copied in before a replay
        if self.use_cuda_graph:
            self.neg_lr, self.neg_lr_momentum = torch.zeros((), device=device), torch.zeros((), device=device)
            labels = torch.empty(max_batch, dtype=torch.int64, device=device)
            self.graph_inputs = (empty(max_batch, linears[0].in_features), labels)

    def buffers(self, n: int) -> Buffers:
        """Views of the storage for a batch of n (the last batch of an epoch is smaller); made once per size."""
        if n not in self._views:
            storage = self._storage
            views = {
                name: [tensor[:n] for tensor in value] if isinstance(value, list) else value[:n]
                for name, value in vars(storage).items()
            }
            self._views[n] = Buffers(**views)
        return self._views[n]

    @torch.no_grad()
    def step(self, images: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One SGD step on (images, labels); returns (the loss before the step, the logits), both buffers."""
        n = len(labels)
        self.lr = lr
        if self.use_cuda_graph:
            self.neg_lr.fill_(-lr)
            self.neg_lr_momentum.fill_(-lr * self.optim.momentum)
        else:
            self.neg_lr, self.neg_lr_momentum = -lr, -lr * self.optim.momentum
        x = images.reshape(n, -1)  # (N, 784)
        if self.use_cuda_graph and n == self.max_batch:
            self.replay_on_cuda(x, labels)
        else:
            self.train_step(x, labels)
        self.steps_taken += 1
        return self.loss, self.buffers(n).z[-1]

    def train_step(self, x: Tensor, labels: Tensor) -> None:
        """forward, loss, backward and update for x (N, 784) and labels (N,); lr is in self.neg_lr."""
        buffers = self.buffers(len(labels))
        if self.bf16:  # this step's bfloat16 weights and input, from the float32 masters the last step updated
            torch._foreach_copy_(self.product_parameters, self.parameters)  # one call for all of them
            x = buffers.inputs.copy_(x)  # (N, 784)
        inputs = self.forward(x, buffers)
        self.loss_and_its_gradient(buffers, labels)
        self.backward_and_update(inputs, buffers)

    def replay_on_cuda(self, x: Tensor, labels: Tensor) -> None:
        """A full batch on a GPU: one replay of train_step captured as a CUDA graph.

        The step launches some 40 small kernels; replaying them as one graph removes the launch cost,
        which is most of a step's time at this model size. The graph reads its batch from two static
        device buffers and its learning rate from self.neg_lr, written before each replay; dropout's
        draws come from the default CUDA generator, which graphs advance on every replay.
        """
        static_x, static_labels = self.graph_inputs
        static_x.copy_(x)
        static_labels.copy_(labels)
        if self.graph is None and self.eager_full_batches >= 3:  # a few eager steps first: cuBLAS sets itself up
            try:
                graph = self.capture(static_x, static_labels)
            except RuntimeError as exc:
                return self.fall_back(f"could not be captured ({reason(exc)})", static_x, static_labels)
            return self.first_replay(graph, static_x, static_labels)
        if self.graph is None:
            self.train_step(static_x, static_labels)
            self.eager_full_batches += 1
            return
        try:
            self.graph.replay()
        except RuntimeError as exc:  # a launch that failed ran nothing: this batch is taken eagerly
            self.fall_back(f"failed on replay ({reason(exc)})", static_x, static_labels)

    def capture(self, static_x: Tensor, static_labels: Tensor):
        """train_step recorded as a CUDA graph; recording runs nothing, so the parameters are untouched."""
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.train_step(static_x, static_labels)
        return graph

    def first_replay(self, graph, static_x: Tensor, static_labels: Tensor) -> None:
        """The graph's first step against the eager step on the same batch, from the same state (parameters,
        momentum, random numbers for dropout). They run the same kernels: anything but agreement is a graph
        this torch or driver replays wrongly, and the run goes on eagerly, having taken the eager step."""
        before = self._state()
        try:
            graph.replay()
        except RuntimeError as exc:
            self._restore(before)
            return self.fall_back(f"failed on its first replay ({reason(exc)})", static_x, static_labels)
        replayed = [tensor.clone() for tensor in self._state()[0]]
        self._restore(before)
        self.train_step(static_x, static_labels)
        worst = max(float((a - b).abs().max()) for a, b in zip(replayed, self._state()[0], strict=True))
        if not worst <= GRAPH_TOLERANCE:  # also NaN
            return self.fall_back(f"disagreed with the eager step by {worst:.2g} on its first batch", None, None)
        self.graph = graph

    def _state(self) -> tuple[list[Tensor], object]:
        tensors = [*self.parameters, *self.momentum_buffers, self.loss]
        rng = torch.cuda.get_rng_state() if self.weights[0].is_cuda else torch.get_rng_state()
        return [tensor.clone() for tensor in tensors], rng

    def _restore(self, state: tuple[list[Tensor], object]) -> None:
        tensors, rng = state
        for target, saved in zip([*self.parameters, *self.momentum_buffers, self.loss], tensors, strict=True):
            target.copy_(saved)
        (torch.cuda.set_rng_state if self.weights[0].is_cuda else torch.set_rng_state)(rng)

    def fall_back(self, why: str, static_x: Tensor | None, static_labels: Tensor | None) -> None:
        """Eager steps from now on, said once; the batch in hand (when given) is taken eagerly."""
        self.graph, self.use_cuda_graph = None, False
        print(
            f"mnist-ffn: warning: the CUDA graph of the training step {why}; training goes on with the eager "
            "step (the same numbers, slower)",
            file=sys.stderr,
            flush=True,
        )
        if static_x is not None:
            self.train_step(static_x, static_labels)

    def forward(self, x: Tensor, buffers: Buffers) -> list[Tensor]:
        """Fills z and a layer by layer; returns each layer's input A_{l-1}."""
        inputs, a = [], x  # A_0 = X: (N, 784)
        last = len(self.weights) - 1
        for layer, bias in enumerate(self.product_biases):
            inputs.append(a)
            z = buffers.z[layer]
            torch.addmm(bias, a, self.weights_t[layer], out=z)  # Z = A W^T + b: (N, in) (in, out) -> (N, out)
            if layer == last:
                break
            a = buffers.a[layer]
            self.activation.forward(z, a)  # A = f(Z): (N, out)
            if self.keep < 1.0:
                # M ~ Bernoulli(keep), drawn as U < keep with U uniform on [0, 1), from the run's seeded generator
                # (saved in every checkpoint): a third of the time of bernoulli_, which nn.Dropout uses
                mask = buffers.mask[layer].uniform_().lt_(self.keep).div_(self.keep)  # M / keep: (N, out)
                a = torch.mul(a, mask, out=buffers.after_dropout[layer])  # (N, out)
        return inputs

    def loss_and_its_gradient(self, buffers: Buffers, labels: Tensor) -> None:
        """Cross-entropy with label smoothing into self.loss, and dL/dZ_L into buffers.logits_delta (float32
        whatever the products' precision, as autocast computes the softmax and the loss)."""
        logits = buffers.logits.copy_(buffers.z[-1]) if self.bf16 else buffers.z[-1]  # (N, K)
        log_probs, target = buffers.log_probs, buffers.target  # (N, K) each
        n, classes = logits.shape
        eps = self.label_smoothing
        torch.log_softmax(logits, 1, out=log_probs)  # log P = Z - logsumexp(Z): (N, K)
        target.fill_(eps / classes).scatter_(1, labels[:, None], 1.0 - eps + eps / classes)  # T: (N, K)
        torch.dot(target.view(-1), log_probs.view(-1), out=self.loss).div_(-n)  # -(1/N) sum T log P: ()
        torch.exp(log_probs, out=buffers.logits_delta).sub_(target).div_(n)  # dL/dZ_L = (P - T) / N: (N, K)

    def backward_and_update(self, inputs: list[Tensor], buffers: Buffers) -> None:
        """From the loss back to the first layer; each layer's weights are updated once its dL/dA below is formed."""
        delta = buffers.logits_delta  # dL/dZ_L: (N, K)
        if self.bf16:
            delta = buffers.logits_delta_products.copy_(delta)
        for layer in range(len(self.weights) - 1, -1, -1):
            weight, a_below = self.product_weights[layer], inputs[layer]  # (out, in), (N, in)
            if self.grad_norms is not None and self.record_grad_norms:  # ||dL/dZ_l||: how much reaches layer l
                torch.linalg.vector_norm(delta, dtype=self.grad_norms.dtype, out=self.grad_norms[layer])
            if self.trace is not None:
                self.trace[layer]["grad_z"] = delta.clone()
            if layer > 0:
                below = layer - 1
                delta_below = torch.mm(delta, weight, out=buffers.delta[below])  # dL/dA = dZ W: (N, out)(out, in)
                if self.trace is not None:
                    self.trace[below]["grad_a"] = delta_below.clone()
            # dL/dW = delta^T A: (out, N)(N, in); dL/db = delta^T 1: (out, N)(N,)
            delta_t = delta.t()  # (out, N)
            if self.bf16:  # the gradients now, the update of all parameters at the end
                self.gradients_in_bf16(layer, delta, a_below)
            else:
                self.descend(2 * layer, delta_t, a_below)
                self.descend(2 * layer + 1, delta_t, buffers.ones)
            if layer > 0:
                if self.keep < 1.0:
                    delta_below.mul_(buffers.mask[below])  # through the dropout: the same mask
                if self.activation.gate is not None:
                    self.activation.gate(delta_below, buffers.z[below])  # dL/dZ = dL/dA * f'(Z): (N, in)
                elif self.writes_slopes:
                    slope, z, a = buffers.slope[below], buffers.z[below], buffers.a[below]
                    if self.bf16:  # f'(Z) in float32, so that the product below rounds once
                        z, a = buffers.z_master[below].copy_(z), buffers.a_master[below].copy_(a)
                    self.activation.derivative(z, a, slope, buffers.scratch[below])
                    delta_below.mul_(slope)  # dL/dZ = dL/dA * f'(Z): (N, in)
                delta = delta_below
        if self.bf16:
            self.update_all()

    def descend(self, index: int, delta_t: Tensor, right: Tensor) -> None:
        """One SGD update of parameter `index`, whose gradient is the product delta^T @ right.

        A weight's gradient is a matrix product (mm), a bias's a matrix-vector one (mv). Plain momentum
        accumulates the product straight into the momentum buffer (BLAS's C <- C + A B, no gradient
        buffer written or read). Folding mu in as well (addmm's beta = mu) would save the scaling pass,
        but measured slower than it on MKL: BLAS takes a slower path for beta other than 0 or 1.
        """
        param = self.parameters[index]
        wd, mu = self.optim.weight_decay, self.optim.momentum
        matrix = right.dim() == 2  # a weight; a bias's gradient is a matrix-vector product
        l1 = self.optim.l1 if matrix else 0.0
        if mu and not self.optim.nesterov:
            velocity = self.momentum_buffers[index]
            velocity.mul_(mu)
            (velocity.addmm_ if matrix else velocity.addmv_)(delta_t, right)  # v <- mu v + dL/dp
            if wd:
                velocity.add_(param, alpha=wd)  # ... + wd p
            if l1:
                velocity.add_(torch.sign(param, out=self.signs[index // 2]), alpha=l1)  # ... + l1 sign(p)
            add_scaled(param, velocity, self.neg_lr)  # p <- p - lr v
            return
        grad = self.gradients[index]
        (torch.mm if matrix else torch.mv)(delta_t, right, out=grad)  # dL/dp
        if self.trace is not None:
            self.trace[index // 2]["grad_weight" if matrix else "grad_bias"] = grad.clone()
        if wd:
            grad.add_(param, alpha=wd)  # g = dL/dp + wd p
        if l1:
            grad.add_(torch.sign(param, out=self.signs[index // 2]), alpha=l1)  # g += l1 sign(p)
        if not mu:
            add_scaled(param, grad, self.neg_lr)  # p <- p - lr g
            return
        velocity = self.momentum_buffers[index]
        torch.add(grad, velocity, alpha=mu, out=velocity)  # v <- mu v + g
        add_scaled(param, grad, self.neg_lr)  # p <- p - lr (g + mu v)
        add_scaled(param, velocity, self.neg_lr_momentum)

    def gradients_in_bf16(self, layer: int, delta: Tensor, a_below: Tensor) -> None:
        """dL/dW = delta^T A and dL/db = delta^T 1 as autocast computes them: bfloat16 products (float32 sums inside
        the kernels, each result rounded to bfloat16 once), taken into the float32 gradients."""
        weight, bias = 2 * layer, 2 * layer + 1
        torch.mm(delta.t(), a_below, out=self.gradient_products[weight])  # (out, N) (N, in) -> (out, in)
        torch.sum(delta, 0, out=self.gradient_products[bias])  # (N, out) -> (out,)

    def update_all(self) -> None:
        """SGD on every parameter at once, by torch.optim.SGD's own fused kernel: weight decay, momentum, Nesterov
        and the update in one pass over each parameter (L1's l1 sign(W) is added to the gradients first)."""
        optim = self.optim
        torch._foreach_copy_(self.gradients, self.gradient_products)  # float32 gradients, in one call
        if optim.l1:
            for weight, gradient, sign in zip(self.weights, self.gradients[::2], self.signs, strict=True):
                gradient.add_(torch.sign(weight, out=sign), alpha=optim.l1)
        lr = self.neg_lr.neg() if isinstance(self.neg_lr, Tensor) else -self.neg_lr
        torch._fused_sgd_(
            self.parameters,
            self.gradients,
            self.momentum_buffers,
            weight_decay=optim.weight_decay,
            momentum=optim.momentum,
            lr=lr,
            dampening=0.0,
            nesterov=optim.nesterov,
            maximize=False,
            is_first_step=False,  # zeroed buffers: mu 0 + g is g, what the first step sets them to
        )

    # -- the optimizer state, in torch.optim.SGD's format ------------------------------------------------

    def optimizer_state(self) -> dict:
        """What torch.optim.SGD(model.parameters(), ...).state_dict() would hold after the same steps."""
        optim = self.optim
        state = {}
        if optim.momentum and self.steps_taken:
            state = {i: {"momentum_buffer": buffer.clone()} for i, buffer in enumerate(self.momentum_buffers)}
        group = {
            "lr": self.lr,
            "momentum": optim.momentum,
            "dampening": 0,
            "weight_decay": optim.weight_decay,
            "nesterov": optim.nesterov,
            "maximize": False,
            "foreach": None,
            "differentiable": False,
            "fused": self.fused,
            "params": list(range(len(self.parameters))),
        }
        return {"state": state, "param_groups": [group]}

    def load_optimizer_state(self, saved: dict) -> None:
        """Take the momentum buffers of a torch.optim.SGD state dict (from either engine)."""
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.parameters):
            raise ValueError("the optimizer state does not match this model's parameters")
        for index, buffer in enumerate(self.momentum_buffers):
            saved_buffer = saved["state"].get(index, {}).get("momentum_buffer")
            if saved_buffer is None:
                buffer.zero_()
            elif saved_buffer.shape != buffer.shape:
                raise ValueError(f"momentum buffer {index} has shape {tuple(saved_buffer.shape)}")
            else:
                buffer.copy_(saved_buffer)
        self.steps_taken = 1 if saved["state"] else 0
