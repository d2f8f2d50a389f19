"""Devices and precisions: CUDA tests run where CUDA is available and skip elsewhere."""

import json

import pytest
import torch

from mnist_ffn.errors import MnistFfnError
from mnist_ffn.training.devices import pick_device
from tests.helpers import TINY_FLAGS, run_cli

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device, and MNIST_FFN_TEST_CUDA=1 (scripts/gpu_check.sh)"
)


def train_summary(tiny_data, out, *extra):
    result = run_cli(
        "train", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS, "--set", "train.epochs=3", "--quiet", *extra
    )
    assert result.returncode == 0, result.stderr
    return json.loads((out / "summary.json").read_text())


def test_auto_picks_an_available_device():
    device = pick_device("auto")
    assert device.type == ("cuda" if torch.cuda.is_available() else device.type)
    assert pick_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error():
    with pytest.raises(MnistFfnError, match="--device cuda: no CUDA device"):
        pick_device("cuda")


def test_bf16_autocast_trains_on_the_cpu(tiny_data, tmp_path):
    summary = train_summary(tiny_data, tmp_path / "bf16", "--device", "cpu", "--set", "train.precision=bf16")
    assert summary["test_accuracy"] > 0.9


@needs_cuda
def test_cuda_training_matches_cpu_accuracy_within_noise(tiny_data, tmp_path):
    cpu = train_summary(tiny_data, tmp_path / "cpu", "--device", "cpu")
    cuda = train_summary(tiny_data, tmp_path / "cuda", "--device", "cuda")
    assert cuda["device"].startswith("cuda") and cuda["peak_memory_kind"] == "cuda_max_allocated"
    assert abs(cuda["test_accuracy"] - cpu["test_accuracy"]) <= 0.03


@needs_cuda
def test_cuda_checkpoint_evaluates_on_the_cpu(tiny_data, tmp_path):
    train_summary(tiny_data, tmp_path / "cuda", "--device", "cuda")
    result = run_cli("eval", tmp_path / "cuda" / "best.pt", "--data-dir", tiny_data, "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accuracy"] > 0.9


@needs_cuda
def test_cuda_bf16_trains(tiny_data, tmp_path):
    summary = train_summary(tiny_data, tmp_path / "bf16", "--device", "cuda", "--set", "train.precision=bf16")
    assert summary["test_accuracy"] > 0.9


@needs_cuda
def test_cuda_graph_engine_matches_autograd_on_the_gpu():
    """The backprop engine replays a captured CUDA graph for full batches; it must still be autograd's SGD."""
    import copy

    from mnist_ffn.config import load_config
    from mnist_ffn.training.autograd import AutogradEngine
    from mnist_ffn.training.engines import build_engine
    from mnist_ffn.training.model import build_model
    from mnist_ffn.training.optim import learning_rate

    cuda = torch.device("cuda")
    config = load_config(None, ["model.hidden=[64,32]", "train.batch_size=32", "train.label_smoothing=0.1"])
    torch.manual_seed(0)
    reference = build_model(config.model).to(cuda)
    model = copy.deepcopy(reference)
    autograd, hand = AutogradEngine(reference, config, cuda), build_engine(model, config, cuda)
    generator = torch.Generator(cuda).manual_seed(1)
    for step in range(50):
        n = 32 if step % 10 else 20  # a short batch now and then runs eagerly, beside the graph
        images = torch.randn(n, 784, device=cuda, generator=generator)
        labels = torch.randint(0, 10, (n,), device=cuda, generator=generator)
        lr = learning_rate(config.optim, step, 10, 5)  # changes every step: the graph must read it each replay
        autograd.step(images, labels, lr)
        hand.step(images, labels, lr)
    assert hand.graph is not None, "full batches should replay a CUDA graph"
    for expected, actual in zip(reference.parameters(), model.parameters(), strict=True):
        assert (expected - actual).abs().max().item() <= 1e-4


@needs_cuda
def test_cuda_training_uses_the_backprop_engine_with_dropout(tiny_data, tmp_path):
    summary = train_summary(tiny_data, tmp_path / "cuda", "--device", "cuda", "--set", "model.dropout=0.2")
    assert summary["engine"] == "backprop"
    assert summary["test_accuracy"] > 0.9
