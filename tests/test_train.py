"""`mnist-ffn train` through the CLI, on tiny data the tests write themselves: the run folder, determinism,
settings from files and --set, and the commands' help."""

import csv
import json

import pytest
import torch

from mnist_ffn.training.event_log import tensorboard_installed
from tests.helpers import TINY_FLAGS, invoke, run_cli, train_tiny

RUN_FILES = {"config.toml", "metrics.csv", "last.pt", "best.pt", "summary.json"}


def run_files(folder) -> set[str]:
    """The run folder's files but its TensorBoard event file: one where the tensorboard package is installed."""
    names = {path.name for path in folder.iterdir()}
    events = {name for name in names if name.startswith("events.out.tfevents.")}
    assert len(events) == (1 if tensorboard_installed() else 0), events
    return names - events


def test_train_writes_the_run_folder_and_eval_agrees_with_the_summary(tiny_data, tmp_path):
    out = tmp_path / "run"
    stdout = train_tiny(tiny_data, out)
    assert run_files(out) == RUN_FILES
    assert "epoch 3/3" in stdout and "test accuracy" in stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "test_accuracy",
        "test_loss",
        "best_epoch",
        "wall_seconds",
        "train_samples_per_second",
        "time_to_best_seconds",
        "peak_memory_bytes",
        "device",
        "torch_version",
        "seed",
    ):
        assert key in summary, key
    assert summary["test_accuracy"] > 0.9  # the fake digits are easy: learning must have happened
    with open(out / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    fixed = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    layers = summary["architecture"].count("-")  # 784-32-10 relu: 2 layers
    per_layer = [f"grad_norm_{k}" for k in range(1, layers + 1)] + [f"update_ratio_{k}" for k in range(1, layers + 1)]
    assert list(rows[0]) == fixed + per_layer

    code, stdout, stderr = invoke("eval", out / "best.pt", "--data-dir", tiny_data, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["accuracy"] == summary["test_accuracy"]
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_same_seed_gives_the_same_metrics_and_weights(tiny_data, tmp_path):
    extra = ("--set", "model.dropout=0.2")  # dropout draws random numbers too
    train_tiny(tiny_data, tmp_path / "a", *extra)
    train_tiny(tiny_data, tmp_path / "b", *extra)
    train_tiny(tiny_data, tmp_path / "c", *extra, "--set", "train.seed=1")

    def metrics(run):
        with open(tmp_path / run / "metrics.csv") as file:
            return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(file)]

    def weights(run):
        return torch.load(tmp_path / run / "last.pt", weights_only=True)["model"]

    assert metrics("a") == metrics("b")
    assert all(torch.equal(weights("a")[name], weights("b")[name]) for name in weights("a"))
    assert not torch.equal(weights("a")["1.weight"], weights("c")["1.weight"])


def test_activation_and_widths_from_the_command_line(tiny_data, tmp_path):
    out = tmp_path / "run"
    train_tiny(tiny_data, out, "--set", "model.activation=tanh", "--set", "model.hidden=[256,128]")
    assert 'activation = "tanh"' in (out / "config.toml").read_text()
    assert json.loads((out / "summary.json").read_text())["architecture"] == "784-256-128-10 tanh"


def test_config_file_then_set(tiny_data, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text("[model]\nhidden = [32]\n[optim]\nlr = 0.05\n")
    out = tmp_path / "run"
    train_tiny(tiny_data, out, "--config", config, "--set", "optim.lr=0.02")
    saved = (out / "config.toml").read_text()
    assert "hidden = [32]" in saved and "lr = 0.02" in saved


def test_softmax_regression_trains(tiny_data, tmp_path):
    train_tiny(tiny_data, tmp_path / "run", "--set", "model.hidden=[]")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["parameters"] == 784 * 10 + 10


def test_without_validation_best_is_the_last_epoch(tiny_data, tmp_path):
    out = tmp_path / "run"
    code, _, stderr = invoke(
        "train",
        "--data-dir",
        tiny_data,
        "--out",
        out,
        "--set",
        "data.verify_checksums=false",
        "--set",
        "train.val_size=0",
        "--set",
        "train.epochs=2",
    )
    assert code == 0, stderr
    assert json.loads((out / "summary.json").read_text())["best_epoch"] == 2


def test_default_run_folder_is_under_runs(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = invoke("train", "--data-dir", tiny_data, *TINY_FLAGS, "--set", "train.epochs=1", "--quiet")
    assert code == 0, stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert run_files(run) == RUN_FILES
    assert stdout == ""  # --quiet


def test_help_is_available_for_every_command():
    for command in ([], ["train"], ["eval"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout


def test_train_on_tiny_data_writes_its_summary(tiny_data, tmp_path):
    result = run_cli(
        "train", "--data-dir", tiny_data, "--out", tmp_path / "run", *TINY_FLAGS, "--set", "train.epochs=1"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "summary.json").is_file()
