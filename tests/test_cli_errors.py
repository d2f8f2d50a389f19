"""Bad input through the real command: one line on stderr, a non-zero exit code, no traceback."""

import pytest

from tests.conftest import TINY_FLAGS, assert_one_line_error, run_cli

OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # a closed port: no network


def test_missing_data_when_offline(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path / "empty", env=OFFLINE)
    assert_one_line_error(
        result,
        1,
        "MNIST not found",
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "--data-dir",
        "MNIST_FFN_DATA",
    )


def test_unknown_activation_exits_2_naming_the_choices(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path, "--set", "model.activation=bogus")
    assert_one_line_error(result, 2, "model.activation", "bogus", "relu", "tanh", "sigmoid", "identity")


def test_unknown_config_key_exits_2_with_a_suggestion(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path, "--set", "optim.lrr=0.1")
    assert_one_line_error(result, 2, "optim.lrr: unknown key", "did you mean optim.lr?")


def test_several_config_problems_are_listed_together(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path, "--set", "optim.lr=0", "--set", "train.batch_size=-3")
    assert_one_line_error(result, 2, "optim.lr: must be > 0", "train.batch_size: must be > 0")


@pytest.mark.parametrize("args", [["train", "--device", "tpu"], ["eval"], ["frobnicate"]])
def test_typer_usage_errors_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_eval_of_a_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("eval", tmp_path / "nope.pt"), 1, "nope.pt: no such checkpoint file")


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    assert_one_line_error(run_cli("eval", junk), 1, "junk.pt: not a checkpoint")


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
