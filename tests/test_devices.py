"""Devices and precisions: CUDA tests run where CUDA is available and skip elsewhere."""

import json

import pytest
import torch

from mnist_ffn.devices import pick_device
from mnist_ffn.errors import MnistFfnError
from tests.conftest import TINY_FLAGS, run_cli

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
