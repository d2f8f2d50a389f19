"""`mnist-ffn eval`: a checkpoint judged alone, as JSON for scripts or tables for people, on any split it has."""

import json

import pytest
import torch

from tests.helpers import invoke, run_cli, train_tiny


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


def test_eval_json_stays_strict_for_a_model_with_nan_weights(tiny_run, tiny_data, tmp_path):

    checkpoint = torch.load(tiny_run / "best.pt", weights_only=True)
    for tensor in checkpoint["model"].values():
        tensor.fill_(float("nan"))
    torch.save(checkpoint, tmp_path / "nan.pt")
    result = run_cli("eval", tmp_path / "nan.pt", "--data-dir", tiny_data, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"not strict JSON: {name}"))
    assert report["loss"] is None
