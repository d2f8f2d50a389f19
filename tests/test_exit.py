"""`mnist-ffn` ends with os._exit (see cli.console_main): nothing written may be lost, no exit code changed."""

import json
import os
import subprocess
import sys

import pytest

from mnist_ffn import cli
from tests.conftest import PROJECT_ROOT, TINY_FLAGS


def run_buffered(*args: str) -> subprocess.CompletedProcess:
    """As a script pipes it: stdout is a pipe and Python buffers it (no PYTHONUNBUFFERED)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-m", "mnist_ffn", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=600,
    )


def test_buffered_output_is_flushed_before_the_fast_exit(tiny_data, tmp_path):
    out = tmp_path / "run"
    train = run_buffered("train", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS, "--set", "train.epochs=2")
    assert train.returncode == 0, train.stderr
    assert "epoch 2/2" in train.stdout and "run folder" in train.stdout  # the summary table is printed last

    evaluation = run_buffered("eval", out / "best.pt", "--data-dir", tiny_data, "--json")
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout)  # the whole document, not a cut-off prefix
    assert report["accuracy"] == json.loads((out / "summary.json").read_text())["test_accuracy"]


def test_an_error_line_survives_the_fast_exit(tmp_path):
    result = run_buffered("eval", tmp_path / "missing.pt")
    assert result.returncode == 1
    assert result.stderr.strip() == f"mnist-ffn: error: {tmp_path / 'missing.pt'}: no such checkpoint file"


@pytest.mark.parametrize(
    ("exit_value", "code", "stderr"),
    [(None, 0, ""), (0, 0, ""), (2, 2, ""), (130, 130, ""), ("a message", 1, "a message\n")],
)
def test_console_main_keeps_main_exit_code(monkeypatch, capsys, exit_value, code, stderr):
    def fake_main():
        sys.exit(exit_value)

    class Exited(Exception):
        pass

    def fake_exit(value):
        raise Exited(value)

    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    with pytest.raises(Exited) as exited:
        cli.console_main()
    assert exited.value.args == (code,)
    assert capsys.readouterr().err == stderr
