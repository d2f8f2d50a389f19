"""Never lose a run: exact resume after SIGKILL, atomic checkpoints, SIGINT/SIGTERM, safe loading."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mnist_ffn.checkpoint import load_checkpoint
from mnist_ffn.errors import CheckpointError
from tests.conftest import (
    PROJECT_ROOT,
    TINY_FLAGS,
    assert_one_line_error,
    finish_process,
    run_cli,
    start_forked,
    write_dataset,
)

# A run long enough to be killed at several moments: 94 steps per epoch, a checkpoint every 7 steps.
RUN_FLAGS = [
    "--set", "data.verify_checksums=false",
    "--set", "train.val_size=200",
    "--set", "model.hidden=[256,256]",
    "--set", "model.dropout=0.1",  # dropout draws random numbers, so the RNG state must be restored too
    "--set", "train.batch_size=32",
    "--set", "train.epochs=3",
    "--set", "train.checkpoint_every=7",
]  # fmt: skip


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    write_dataset(root / "MNIST" / "raw", train=3200, test=200)
    return root


@pytest.fixture(scope="module")
def uninterrupted(resume_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = run_cli("train", "--data-dir", resume_data, "--out", out, "--quiet", *RUN_FLAGS)
    assert result.returncode == 0, result.stderr
    return out


def wait_for_new_checkpoint(path, process, after_ns: int, timeout: float = 120) -> bool:
    """Wait until `path` is replaced by a newer file; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if path.stat().st_mtime_ns > after_ns:
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.002)
    raise AssertionError(f"no new {path.name} within {timeout} s")


def mtime_ns(path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def assert_same_final_state(run_a, run_b):
    a = torch.load(run_a / "last.pt", weights_only=True)
    b = torch.load(run_b / "last.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), f"weights differ: {name}"
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert metrics_without_time(run_a) == metrics_without_time(run_b)


def metrics_without_time(run):
    with open(run / "metrics.csv") as file:
        return [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(file)]


def test_resume_after_kill_matches_uninterrupted_run(resume_data, uninterrupted, tmp_path):
    """SIGKILL at 5 random moments of one run, resuming each time: the result is bit-for-bit the same."""
    out = tmp_path / "killed"
    last = out / "last.pt"
    moments = random.Random(20261125)  # seeded, so a failure can be replayed
    command = ["train", "--data-dir", resume_data, "--out", out, "--quiet", *RUN_FLAGS]
    kills = 0
    while True:
        process = start_forked(*command)
        if kills < 5 and wait_for_new_checkpoint(last, process, after_ns=mtime_ns(last)):
            time.sleep(moments.uniform(0.0, 0.3))  # somewhere between checkpoints, or inside a save
            if process.poll() is None:
                process.kill()
                process.communicate()
                kills += 1
                load_checkpoint(last)  # whatever moment it died at, last.pt is whole
                command = ["train", "--resume", out, "--data-dir", resume_data, "--quiet"]
                continue
        _, stderr = process.communicate()
        assert process.returncode == 0, stderr
        break
    assert kills == 5, "the run finished before it could be killed five times"
    assert json.loads((out / "summary.json").read_text())["engine"] == "backprop"  # what auto picks
    assert not list(out.glob(".*.mnist-ffn-partial")), "leftover temp files are cleaned on resume"
    assert_same_final_state(uninterrupted, out)


def test_sigint_and_sigterm_save_and_print_the_resume_command(resume_data, uninterrupted, tmp_path):
    signals = {signal.SIGINT: 130, signal.SIGTERM: 143}
    outs = {number: tmp_path / signal.Signals(number).name for number in signals}
    processes = {  # both at once: one per core
        number: start_forked("train", "--data-dir", resume_data, "--out", out, "--quiet", *RUN_FLAGS)
        for number, out in outs.items()
    }
    for number, process in processes.items():
        assert wait_for_new_checkpoint(outs[number] / "last.pt", process, after_ns=0)
        process.send_signal(number)
    for number, process in processes.items():
        out = outs[number]
        result = finish_process(process, timeout=60)
        assert_one_line_error(
            result, signals[number], "stopped by", "saved", f"resume with: mnist-ffn train --resume {out}"
        )
        resumed = run_cli("train", "--resume", out, "--data-dir", resume_data, "--quiet")
        assert resumed.returncode == 0, resumed.stderr
        assert_same_final_state(uninterrupted, out)


def test_kill_during_a_checkpoint_save_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "last.pt"
    torch.save({"generation": 1}, target)
    writer = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from mnist_ffn.atomic import write_atomically

        def write_half_then_hang(file):
            file.write(b"PK" + b"x" * 100_000)
            file.flush()
            print("writing", flush=True)
            time.sleep(60)

        write_atomically(Path({str(target)!r}), write_half_then_hang)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert torch.load(target, weights_only=True) == {"generation": 1}
    leftovers = list(tmp_path.glob(".last.pt.*.mnist-ffn-partial"))
    assert len(leftovers) == 1  # the half-written temp file, never the real name

    from mnist_ffn.run_folder import RunFolder

    torch.save({"format": "stub"}, tmp_path / "last.pt")
    RunFolder(tmp_path).open_for_resume()
    assert not list(tmp_path.glob(".*.mnist-ffn-partial"))


def test_a_pickle_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):  # unpickling would call os.system("touch MARKER")
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "mnist-ffn checkpoint", "model": Payload()}, evil)
    assert not marker.exists()
    result = run_cli("eval", evil)
    assert_one_line_error(result, 1, "refused", "pickled code", "never runs")
    assert not marker.exists(), "the payload ran"
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "diverged"
    result = run_cli(
        "train",
        "--data-dir",
        tiny_data,
        "--out",
        out,
        *TINY_FLAGS,
        "--set",
        "optim.lr=1e30",  # far too large: the weights overflow within a few steps
        "--set",
        "optim.schedule=constant",
        "--set",
        "train.checkpoint_every=1",
    )
    assert_one_line_error(result, 1, "the loss became", "at epoch 1, step", "smaller learning rate", "optim.lr=")
    last_good = load_checkpoint(out / "last.pt")
    assert all(torch.isfinite(tensor).all() for tensor in last_good["model"].values())
    assert not (out / "summary.json").exists()


def test_a_divergence_before_the_first_checkpoint_says_so_and_leaves_a_usable_folder(tiny_data, tmp_path):
    out = tmp_path / "diverged"
    diverging = ["--set", "optim.lr=1e30", "--set", "optim.schedule=constant"]
    result = run_cli("train", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS, *diverging)
    assert_one_line_error(result, 1, "the loss became", "before the first checkpoint: nothing was saved")
    assert "last.pt" not in result.stderr  # no promise of a file that does not exist
    assert not (out / "config.toml").exists() and not (out / "last.pt").exists()
    again = run_cli("train", "--data-dir", tiny_data, "--out", out, "--quiet", *TINY_FLAGS)  # no --force needed
    assert again.returncode == 0, again.stderr
