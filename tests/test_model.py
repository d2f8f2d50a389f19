import pytest
import torch
from torch import nn

from mnist_ffn.config import ACTIVATION_FUNCTIONS, ACTIVATIONS, ModelConfig, activation_function
from mnist_ffn.training.model import ACTIVATION_LAYERS, architecture, build_model, count_parameters


def test_every_configurable_activation_has_a_layer():
    """Every name config accepts is a function with its layer (`none` through the one alias table), and no layer
    is for a name config refuses."""
    assert tuple(ACTIVATION_LAYERS) == ACTIVATION_FUNCTIONS
    assert {activation_function(name) for name in ACTIVATIONS} == set(ACTIVATION_LAYERS)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("hidden", [[], [32], [64, 32], [16, 16, 16]])
def test_shapes_for_every_activation_and_depth(activation, hidden):
    model = build_model(ModelConfig(hidden=hidden, activation=activation))
    assert isinstance(model, nn.Sequential)
    assert model(torch.zeros(5, 784)).shape == (5, 10)
    assert model(torch.zeros(3, 28, 28)).shape == (3, 10)  # images work too
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    assert [layer.out_features for layer in linears] == [*hidden, 10]
    assert linears[0].in_features == 784


def test_parameter_count_matches_the_arithmetic():
    model = build_model(ModelConfig(hidden=[512, 256]))
    assert count_parameters(model) == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 10 + 10


def test_dropout_layers_follow_each_hidden_activation():
    model = build_model(ModelConfig(hidden=[32, 16], dropout=0.25))
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]


def test_without_activation_stacked_layers_are_one_linear_map():
    """The lesson: W2(W1 x + b1) + b2 = (W2 W1) x + (W2 b1 + b2)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[64, 32], activation="identity")).double()
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    weight, bias = torch.eye(784, dtype=torch.float64), torch.zeros(784, dtype=torch.float64)
    for layer in linears:
        weight, bias = layer.weight @ weight, layer.weight @ bias + layer.bias
    inputs = torch.randn(8, 784, dtype=torch.float64)
    assert torch.allclose(model(inputs), inputs @ weight.T + bias)


def test_with_relu_the_network_is_not_linear():
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[64], activation="relu")).double()
    x, y = torch.randn(1, 784, dtype=torch.float64), torch.randn(1, 784, dtype=torch.float64)
    zero = model(torch.zeros(1, 784, dtype=torch.float64))
    additive = model(x + y) - zero - ((model(x) - zero) + (model(y) - zero))
    assert additive.abs().max() > 1e-3


def test_architecture_names_the_widths():
    assert architecture(ModelConfig(hidden=[512, 256], activation="tanh")) == "784-512-256-10 tanh"
    assert architecture(ModelConfig(hidden=[])) == "784-10 (softmax regression)"
