"""Learning on the real MNIST files: the smoke test and the accuracy gate CI runs."""

import json

import pytest

from tests.helpers import real_data_dir, run_cli

pytestmark = pytest.mark.real_data


def test_smoke_preset_learns_on_a_small_real_subset(tmp_path):
    out = tmp_path / "smoke"
    result = run_cli("train", "--config", "smoke", "--data-dir", real_data_dir(), "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.90, summary  # seeds 0-4: 95.2-95.7% on AVX-512 and AVX2 kernel paths


@pytest.mark.slow
def test_default_preset_reaches_98_percent_and_eval_agrees(default_run):
    """The accuracy gate: `mnist-ffn train` with no flags must reach 98.0% on the test set."""
    summary = json.loads((default_run / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.98, summary
    assert summary["engine"] in ("backprop", "autograd") and summary["precision"] in ("fp32", "bf16"), summary
    assert summary["precision_why"], "the summary says why this engine and precision trained"
    assert {path.name for path in default_run.iterdir()} >= {
        "config.toml",
        "metrics.csv",
        "last.pt",
        "best.pt",
        "summary.json",
    }
    evaluated = run_cli("eval", default_run / "best.pt", "--data-dir", real_data_dir(), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == summary["test_accuracy"]
