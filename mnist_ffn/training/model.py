"""The model: an nn.Sequential of Linear + activation blocks ending in a Linear to one logit per class.

Each hidden block computes z = W x + b, then a = f(z). With f = identity the whole stack
collapses to one linear map (W2 (W1 x + b1) + b2 = W x + b), which is why `identity`
is here: to measure what non-linearity buys.
"""

from __future__ import annotations

from torch import Tensor, nn

from mnist_ffn.catalog import DATASETS, IMAGE_PIXELS
from mnist_ffn.config import ModelConfig, activation_function

MNIST_CLASSES = len(DATASETS["mnist"].classes)  # what a network is for unless told: MNIST's ten digits

ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
}


def build_model(config: ModelConfig, num_classes: int = MNIST_CLASSES, inputs: int = IMAGE_PIXELS) -> nn.Sequential:
    """`inputs` wide (784 pixels, or a 2-D set's features) to `num_classes` logits."""
    layers: list[nn.Module] = [nn.Flatten()]  # accepts (N, 28, 28) images as well as (N, 784) rows
    width = inputs
    for hidden_width in config.hidden:
        layers.append(nn.Linear(width, hidden_width))
        layers.append(ACTIVATION_LAYERS[activation_function(config.activation)]())
        if config.dropout > 0:
            layers.append(nn.Dropout(config.dropout))
        width = hidden_width
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def is_activation(module: nn.Module) -> bool:
    """Whether a layer of the Sequential is a hidden layer's a = f(z) (not a Linear, the Flatten or a Dropout)."""
    return not isinstance(module, nn.Linear | nn.Flatten | nn.Dropout)


def forward_with_activations(model: nn.Sequential, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """The model's output for x, and each hidden layer's a = f(z) on the way: the lesson's forward pass, shown."""
    activations = []
    for module in model:
        x = module(x)
        if is_activation(module):
            activations.append(x)
    return x, activations


def linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    """The network's z = Wx + b layers, the lowest first."""
    return [layer for layer in model if isinstance(layer, nn.Linear)]


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def layer_widths(config: ModelConfig, num_classes: int = MNIST_CLASSES, inputs: int = IMAGE_PIXELS) -> str:
    """e.g. '784-512-256-10': input, hidden and output widths."""
    return "-".join(str(width) for width in [inputs, *config.hidden, num_classes])


def architecture(config: ModelConfig, num_classes: int = MNIST_CLASSES, inputs: int = IMAGE_PIXELS) -> str:
    """e.g. '784-512-256-10 relu': the layer widths a person would draw."""
    widths = layer_widths(config, num_classes, inputs)
    return f"{widths} {config.activation}" if config.hidden else f"{widths} (softmax regression)"
