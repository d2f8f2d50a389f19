"""`train` then `eval` through the CLI, on tiny data the tests write themselves."""

import csv
import json

import pytest
import torch

from tests.helpers import TINY_FLAGS, run_cli

RUN_FILES = {"config.toml", "metrics.csv", "last.pt", "best.pt", "summary.json"}


def invoke(*args):
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    result = run_cli(*args)
    return result.returncode, result.stdout, result.stderr


def train_tiny(tiny_data, out, *extra):
    code, stdout, stderr = invoke(
        "train", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS, "--set", "train.epochs=3", *extra
    )
    assert code == 0, stderr
    return stdout


def test_train_writes_the_run_folder_and_eval_agrees_with_the_summary(tiny_data, tmp_path):
    out = tmp_path / "run"
    stdout = train_tiny(tiny_data, out)
    assert {path.name for path in out.iterdir()} == RUN_FILES
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
    assert list(rows[0]) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]

    code, stdout, stderr = invoke("eval", out / "best.pt", "--data-dir", tiny_data, "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["accuracy"] == summary["test_accuracy"]
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_eval_json_schema(tiny_data, tmp_path):
    train_tiny(tiny_data, tmp_path / "run")
    code, stdout, _ = invoke("eval", tmp_path / "run" / "best.pt", "--data-dir", tiny_data, "--json")
    report = json.loads(stdout)
    assert code == 0
    assert report["n"] == 200 and report["split"] == "test" and report["dataset"] == "mnist"
    assert len(report["per_class_accuracy"]) == 10 and all(0 <= value <= 1 for value in report["per_class_accuracy"])
    matrix = report["confusion_matrix"]
    assert len(matrix) == 10 and all(len(row) == 10 for row in matrix)
    assert sum(map(sum, matrix)) == report["n"]
    assert report["accuracy"] == sum(matrix[i][i] for i in range(10)) / report["n"]
    assert report["classes"] == [str(digit) for digit in range(10)]


def test_eval_other_splits(tiny_data, tmp_path):
    train_tiny(tiny_data, tmp_path / "run")
    for split, size in (("val", 100), ("train", 500)):
        code, stdout, _ = invoke(
            "eval", tmp_path / "run" / "last.pt", "--data-dir", tiny_data, "--split", split, "--json"
        )
        assert code == 0 and json.loads(stdout)["n"] == size


def test_eval_prints_tables_for_people(tiny_data, tmp_path):
    train_tiny(tiny_data, tmp_path / "run")
    code, stdout, _ = invoke("eval", tmp_path / "run" / "best.pt", "--data-dir", tiny_data)
    assert code == 0
    assert "accuracy" in stdout and "Per-class accuracy" in stdout and "Confusion matrix" in stdout


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
    assert {path.name for path in run.iterdir()} == RUN_FILES
    assert stdout == ""  # --quiet


def test_eval_json_stays_strict_for_a_model_with_nan_weights(tiny_run, tiny_data, tmp_path):
    import torch

    checkpoint = torch.load(tiny_run / "best.pt", weights_only=True)
    for tensor in checkpoint["model"].values():
        tensor.fill_(float("nan"))
    torch.save(checkpoint, tmp_path / "nan.pt")
    result = run_cli("eval", tmp_path / "nan.pt", "--data-dir", tiny_data, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert report["loss"] is None


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
