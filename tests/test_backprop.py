"""Backpropagation by hand, checked against PyTorch.

The lesson in matrix form, for a batch X (N x 784) and one-hot labels Y (N x 10):

    forward    Z_l = A_{l-1} W_l^T + b_l,    A_l = f(Z_l),    A_0 = X
               P = softmax(Z_L),  L = -(1/N) sum(Y * log P)
    backward   dL/dZ_L = (P - Y) / N
               dL/dW_l = (dL/dZ_l)^T A_{l-1},    dL/db_l = sum over the batch of dL/dZ_l
               dL/dA_{l-1} = dL/dZ_l W_l,        dL/dZ_{l-1} = dL/dA_{l-1} * f'(Z_{l-1})
    update     W <- W - lr * dL/dW

The hand-written gradients must equal autograd's (`loss.backward()`), pass
`torch.autograd.gradcheck` against finite differences in float64, and one hand-written SGD
step must equal `torch.optim.SGD`'s.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mnist_ffn.config import ModelConfig
from mnist_ffn.model import build_model

# f and f' for each activation of the lesson, written out by hand.
ACTIVATIONS = {
    "identity": (lambda z: z, lambda z: torch.ones_like(z)),
    "sigmoid": (torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z))),
    "tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "relu": (lambda z: z.clamp(min=0), lambda z: (z > 0).to(z.dtype)),
}


def forward(weights, biases, inputs, activation):
    """Returns the logits and, per layer, (input A_{l-1}, pre-activation Z_l)."""
    f, _ = ACTIVATIONS[activation]
    layers, a = [], inputs
    for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        z = a @ weight.T + bias
        layers.append((a, z))
        a = z if index == len(weights) - 1 else f(z)
    return a, layers


def cross_entropy(logits, labels):
    log_p = logits - logits.logsumexp(dim=1, keepdim=True)
    return -log_p[torch.arange(len(labels)), labels].mean()


def backward(weights, layers, logits, labels, activation):
    """The chain rule, layer by layer from the loss back to the first weights."""
    _, f_prime = ACTIVATIONS[activation]
    one_hot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
    dz = (torch.softmax(logits, dim=1) - one_hot) / len(labels)
    weight_grads, bias_grads = [None] * len(weights), [None] * len(weights)
    for index in range(len(weights) - 1, -1, -1):
        a_below, _ = layers[index]
        weight_grads[index] = dz.T @ a_below
        bias_grads[index] = dz.sum(dim=0)
        if index > 0:
            da_below = dz @ weights[index]
            _, z_below = layers[index - 1]
            dz = da_below * f_prime(z_below)
    return weight_grads, bias_grads


def model_and_batch(activation, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(hidden=[7, 5], activation=activation)).double()
    inputs = torch.randn(6, 784, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 3, 1, 7])
    return model, inputs, labels


def parameters(model):
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    return [layer.weight for layer in linears], [layer.bias for layer in linears]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hand_forward_equals_the_model(activation):
    model, inputs, labels = model_and_batch(activation)
    weights, biases = parameters(model)
    logits, _ = forward(weights, biases, inputs, activation)
    assert torch.allclose(logits, model(inputs))
    assert torch.allclose(cross_entropy(logits, labels), F.cross_entropy(model(inputs), labels))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hand_gradients_equal_autograd(activation):
    model, inputs, labels = model_and_batch(activation)
    weights, biases = parameters(model)
    F.cross_entropy(model(inputs), labels).backward()
    with torch.no_grad():
        logits, layers = forward(weights, biases, inputs, activation)
        weight_grads, bias_grads = backward(weights, layers, logits, labels, activation)
    for weight, grad in zip(weights, weight_grads, strict=True):
        assert torch.allclose(grad, weight.grad, atol=1e-12), activation
    for bias, grad in zip(biases, bias_grads, strict=True):
        assert torch.allclose(grad, bias.grad, atol=1e-12), activation


class HandWrittenNetwork(torch.autograd.Function):
    """The loss of the network with the hand-derived backward pass, so gradcheck can judge it."""

    @staticmethod
    def forward(ctx, inputs, labels, activation, *params):
        weights, biases = list(params[0::2]), list(params[1::2])
        logits, layers = forward(weights, biases, inputs, activation)
        ctx.save_for_backward(*params)
        ctx.layers, ctx.logits, ctx.labels, ctx.activation = layers, logits, labels, activation
        return cross_entropy(logits, labels)

    @staticmethod
    def backward(ctx, grad_output):
        params = ctx.saved_tensors
        weight_grads, bias_grads = backward(list(params[0::2]), ctx.layers, ctx.logits, ctx.labels, ctx.activation)
        grads = [grad * grad_output for pair in zip(weight_grads, bias_grads, strict=True) for grad in pair]
        return (None, None, None, *grads)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hand_gradients_pass_gradcheck(activation):
    torch.manual_seed(1)
    inputs = torch.randn(4, 6, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 2])
    shapes = [(5, 6), (5,), (4, 5), (4,), (3, 4), (3,)]
    params = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
    assert torch.autograd.gradcheck(
        lambda *p: HandWrittenNetwork.apply(inputs, labels, activation, *p), params, eps=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_one_hand_sgd_step_equals_torch_optim_sgd(activation):
    learning_rate = 0.1
    model, inputs, labels = model_and_batch(activation)
    weights, biases = parameters(model)
    with torch.no_grad():
        logits, layers = forward(weights, biases, inputs, activation)
        weight_grads, bias_grads = backward(weights, layers, logits, labels, activation)
        by_hand = [w - learning_rate * g for w, g in zip(weights, weight_grads, strict=True)]
        by_hand += [b - learning_rate * g for b, g in zip(biases, bias_grads, strict=True)]

    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate)
    F.cross_entropy(model(inputs), labels).backward()
    optimizer.step()
    weights, biases = parameters(model)
    for expected, actual in zip(by_hand, [*weights, *biases], strict=True):
        assert torch.allclose(expected, actual, atol=1e-12)


def test_two_momentum_steps_by_hand_equal_torch_optim_sgd():
    """With momentum: v <- mu v + g, W <- W - lr v (PyTorch's form; the first v is g)."""
    learning_rate, momentum = 0.1, 0.9
    model, inputs, labels = model_and_batch("tanh")
    weights, biases = parameters(model)
    params = [w.detach().clone() for w in weights] + [b.detach().clone() for b in biases]
    velocity = [torch.zeros_like(p) for p in params]
    for _ in range(2):
        with torch.no_grad():
            logits, layers = forward(params[:3], params[3:], inputs, "tanh")
            weight_grads, bias_grads = backward(params[:3], layers, logits, labels, "tanh")
        for index, grad in enumerate([*weight_grads, *bias_grads]):
            velocity[index] = momentum * velocity[index] + grad
            params[index] = params[index] - learning_rate * velocity[index]

    optimizer = torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()
    weights, biases = parameters(model)
    for expected, actual in zip(params, [*weights, *biases], strict=True):
        assert torch.allclose(expected, actual, atol=1e-12)
