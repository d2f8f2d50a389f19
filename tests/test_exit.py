"""`mnist-ffn` ends with os._exit (see process.fast_exit): nothing written may be lost, no exit code changed."""

import json
import sys

import pytest

from mnist_ffn.cli import commands as cli
from mnist_ffn.cli import process
from tests.helpers import TINY_FLAGS, finish_process, start_process


def test_buffered_output_and_an_error_line_survive_the_fast_exit(tiny_data, tiny_run, tmp_path):
    out = tmp_path / "new-run"
    train = start_process(
        "train", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS, "--set", "train.epochs=2", buffered=True
    )
    evaluation = start_process("eval", tiny_run / "best.pt", "--data-dir", tiny_data, "--json", buffered=True)
    missing = start_process("eval", tmp_path / "missing.pt", buffered=True)
    train, evaluation, missing = map(finish_process, (train, evaluation, missing))  # all at once

    assert train.returncode == 0, train.stderr
    assert "epoch 2/2" in train.stdout and "run folder" in train.stdout  # the summary table is printed last
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(evaluation.stdout)  # the whole document, not a cut-off prefix
    assert report["accuracy"] == json.loads((tiny_run / "summary.json").read_text())["test_accuracy"]
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"mnist-ffn: error: {tmp_path / 'missing.pt'}: no such checkpoint file"


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
    monkeypatch.setattr(process.os, "_exit", fake_exit)
    with pytest.raises(Exited) as exited:
        cli.console_main()
    assert exited.value.args == (code,)
    assert capsys.readouterr().err == stderr
