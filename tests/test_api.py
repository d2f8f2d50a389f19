"""The Python API (mnist_ffn.train, load, evaluate) against the CLI, which calls the same functions."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import mnist_ffn
from mnist_ffn.errors import CheckpointError, ConfigError, ImageError, UsageError
from tests.helpers import PROJECT_ROOT, TINY_FLAGS, run_cli

EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*.png"))
TINY = {"data.verify_checksums": False, "train.val_size": 100}


def test_train_returns_the_run_folder_its_summary_and_best(tiny_data, tmp_path):
    result = mnist_ffn.train(
        overrides={**TINY, "train.epochs": 2, "model.hidden": [32]}, out=tmp_path / "run", data_dir=tiny_data
    )
    assert result.folder == tmp_path / "run" and result.best == tmp_path / "run" / "best.pt"
    assert result.summary == json.loads((result.folder / "summary.json").read_text())
    assert result.best.is_file() and result.summary["epochs"] == 2
    assert "hidden = [32]" in (result.folder / "config.toml").read_text()
    # the same config through the CLI: the same numbers (one code path, deterministic on the CPU)
    cli = run_cli("train", "--data-dir", tiny_data, "--out", tmp_path / "cli", "--quiet", *TINY_FLAGS,
                  "--set", "train.epochs=2", "--set", "model.hidden=[32]")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert from_cli["test_accuracy"] == result.summary["test_accuracy"]
    assert from_cli["final_train_loss"] == result.summary["final_train_loss"]


def test_load_gives_an_eval_mode_sequential_whose_predictions_are_the_clis(tiny_run):
    network = mnist_ffn.load(tiny_run / "best.pt")
    assert isinstance(network, nn.Sequential) and not network.training
    assert network.dataset == "mnist" and network.classes == [str(digit) for digit in range(10)]
    assert network.config == mnist_ffn.api.load_config(tiny_run / "config.toml")
    probabilities = network.predict(EXAMPLES)
    assert probabilities.shape == (len(EXAMPLES), 10)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(EXAMPLES)))
    cli = run_cli("predict", tiny_run / "best.pt", *EXAMPLES, "--json")
    assert cli.returncode == 0, cli.stderr
    for row, expected in zip(probabilities, json.loads(cli.stdout)["predictions"], strict=True):
        best = expected["top"][0]
        assert int(row.argmax()) == best["index"]
        assert float(row.max()) == pytest.approx(best["probability"], abs=1e-6)
    from PIL import Image

    with Image.open(EXAMPLES[0]) as image:  # a PIL image gives what its file gives
        assert torch.equal(network.predict(image), network.predict(EXAMPLES[0]))


def test_evaluate_is_what_eval_json_prints(tiny_run, tiny_data):
    report = mnist_ffn.evaluate(tiny_run / "best.pt", data_dir=tiny_data)
    cli = run_cli("eval", tiny_run / "best.pt", "--data-dir", tiny_data, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == json.loads(json.dumps(report))
    assert mnist_ffn.evaluate(tiny_run / "best.pt", "val", tiny_data)["split"] == "val"


def test_errors_are_the_projects_own_with_the_clis_line(tiny_run, tmp_path):
    with pytest.raises(ConfigError) as raised:
        mnist_ffn.train("bets", out=tmp_path / "x")
    cli = run_cli("train", "--config", "bets", "--out", tmp_path / "y")
    assert cli.stderr.strip() == f"mnist-ffn: error: {raised.value}"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        mnist_ffn.train(overrides={"optim.lr": -1}, out=tmp_path / "x")
    with pytest.raises(CheckpointError):
        mnist_ffn.load(tiny_run / "metrics.csv")
    with pytest.raises(ImageError, match="no such image file"):
        mnist_ffn.load(tiny_run / "best.pt").predict([tmp_path / "missing.png"])
    with pytest.raises(UsageError, match="split"):
        mnist_ffn.evaluate(tiny_run / "best.pt", "validation")
    assert issubclass(ConfigError, mnist_ffn.MnistFfnError)


def test_importing_the_package_does_not_import_torch():
    code = "import sys, mnist_ffn; print('torch' in sys.modules, mnist_ffn.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[0] == "False", result.stdout
