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


@pytest.mark.parametrize(("engine", "expected"), [("auto", "backprop"), ("autograd", "autograd")])
def test_bf16_trains_on_the_cpu_with_either_engine(engine, expected, tiny_data, tmp_path):
    """bfloat16 products run on any CPU (emulated where it has no bf16 units, only slower)."""
    flags = ["--device", "cpu", "--set", "train.precision=bf16", "--set", f"train.engine={engine}"]
    summary = train_summary(tiny_data, tmp_path / "bf16", *flags)
    assert (summary["engine"], summary["precision"]) == (expected, "bf16")
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
    from mnist_ffn.training.choice import StepChoice, build_engine
    from mnist_ffn.training.model import build_model
    from mnist_ffn.training.optim import learning_rate

    cuda = torch.device("cuda")
    config = load_config(None, ["model.hidden=[64,32]", "train.batch_size=32", "train.label_smoothing=0.1"])
    torch.manual_seed(0)
    reference = build_model(config.model).to(cuda)
    model = copy.deepcopy(reference)
    autograd = AutogradEngine(reference, config, cuda)
    hand = build_engine(model, config, cuda, StepChoice("backprop", "fp32", ""))
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
    flags = ["--device", "cuda", "--set", "model.dropout=0.2", "--set", "train.engine=backprop"]
    summary = train_summary(tiny_data, tmp_path / "cuda", *flags)
    assert summary["engine"] == "backprop"
    assert summary["test_accuracy"] > 0.9


@needs_cuda
def test_the_cuda_graph_captures_the_bf16_step():
    """bf16 products on the GPU's tensor cores, full batches replayed as one graph: the same numbers as the eager
    bf16 step (the same kernels on the same numbers), and the step runs in bfloat16."""
    import copy

    from mnist_ffn.config import load_config
    from mnist_ffn.training.backprop import BackpropEngine
    from mnist_ffn.training.model import build_model

    cuda = torch.device("cuda")
    config = load_config(None, ["model.hidden=[64,32]", "train.batch_size=32", "train.label_smoothing=0.1"])
    torch.manual_seed(0)
    eager_model = build_model(config.model).to(cuda)
    graph_model = copy.deepcopy(eager_model)
    engines = [
        BackpropEngine(model, config.model, config.optim, 0.1, max_batch=32, cuda_graph=graph, precision="bf16")
        for model, graph in ((eager_model, False), (graph_model, True))
    ]
    generator = torch.Generator(cuda).manual_seed(1)
    for step in range(50):
        n = 32 if step % 10 else 20
        images = torch.randn(n, 784, device=cuda, generator=generator)
        labels = torch.randint(0, 10, (n,), device=cuda, generator=generator)
        for engine in engines:
            engine.step(images, labels, 0.05)
    assert engines[1].graph is not None, "full batches should replay a CUDA graph"
    assert engines[1].buffers(32).z[0].dtype == torch.bfloat16
    for expected, actual in zip(eager_model.parameters(), graph_model.parameters(), strict=True):
        assert (expected - actual).abs().max().item() <= 1e-5
