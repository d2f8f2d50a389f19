"""Never lose a run: exact resume after kill -9, SIGINT and SIGTERM at every moment, atomic checkpoints (a kill
or a full disk mid-save), divergence, safe loading."""

import contextlib
import csv
import functools
import json
import os
import random
import resource
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
import torch

from mnist_ffn.config import load_config
from mnist_ffn.errors import CheckpointError, TrainingInterrupted
from mnist_ffn.training import trainer as train_module
from mnist_ffn.training.checkpoint import load_checkpoint
from mnist_ffn.training.trainer import train
from tests.helpers import (
    LONG_RUN,
    PROJECT_ROOT,
    TINY_FLAGS,
    assert_one_line_error,
    finish_process,
    run_cli,
    snapshot,
    start_forked,
    start_process,
    wait_for,
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


def stop_itself_at(moment: str, count: int, signals: tuple[int, ...] = (signal.SIGSTOP,)) -> None:
    """In a forked run, before its command starts: the process sends itself `signals` (it stops itself, SIGSTOP,
    unless others are given) at its `count`-th training step or its `count`-th fsync (inside an atomic save: after
    the temporary file is written and before its rename, or after the rename and before the folder's fsync). A test
    then kills it there with SIGKILL: a moment chosen by what the run has done, not by a clock, so it is the same
    moment on a fast machine and a slow one."""
    from mnist_ffn.training.autograd import AutogradEngine
    from mnist_ffn.training.backprop import BackpropEngine

    done = 0

    def counted(original):
        def call(*args, **kwargs):
            nonlocal done
            done += 1
            if done == count:
                for number in signals:
                    os.kill(os.getpid(), number)
            return original(*args, **kwargs)

        return call

    if moment == "step":  # whichever engine the run's timed choice (cached per machine) picked
        BackpropEngine.step = counted(BackpropEngine.step)
        AutogradEngine.step = counted(AutogradEngine.step)
    else:
        os.fsync = counted(os.fsync)


def wait_until_stopped(process, timeout: float = 120) -> bool:
    """Until the process has stopped itself (its state in /proc is T); False if it ended instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                return True
        time.sleep(0.002)
    raise AssertionError(f"the run did not reach its moment within {timeout} s")


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
    """SIGKILL at 5 moments of one run, resuming each time: the result is bit-for-bit the same.

    The moments are drawn (seeded, so a failure can be replayed) as counts of what the process has done: its Nth
    training step, somewhere between checkpoints, or its Nth fsync, inside a save. Each process stops itself there
    and is killed stopped; at most 40 steps or 12 fsyncs (6 saves, 42 steps) each, so 5 kills leave the run's 282
    steps unfinished on any machine."""
    out = tmp_path / "killed"
    moments = random.Random(20261125)
    command = ["train", "--data-dir", resume_data, "--out", out, "--quiet", *RUN_FLAGS]
    for kill in range(5):
        moment = ("step", "fsync")[kill % 2]
        first = 8 if kill == 0 else 1  # the first process is killed after its first checkpoint (step 7): a run
        count = moments.randint(first, 40) if moment == "step" else moments.randint(1, 12)  # to resume
        process = start_forked(*command, preexec_fn=functools.partial(stop_itself_at, moment, count))
        assert wait_until_stopped(process), f"kill {kill + 1}: the run ended before its {count}th {moment}"
        process.kill()
        process.communicate()
        load_checkpoint(out / "last.pt")  # whatever moment it died at, last.pt is whole
        command = ["train", "--resume", out, "--data-dir", resume_data, "--quiet"]
    finished = finish_process(start_forked(*command))
    assert finished.returncode == 0, finished.stderr
    summary, uninterrupted_summary = (json.loads((run / "summary.json").read_text()) for run in (out, uninterrupted))
    chosen = [(run["engine"], run["precision"]) for run in (summary, uninterrupted_summary)]
    assert chosen[0] == chosen[1], "resumed runs keep the engine and precision the run started with"
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
        from mnist_ffn.files import write_atomically

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

    from mnist_ffn.training.run_folder import RunFolder

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


# -- signals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_the_final_evaluation_stops_and_resume_finishes(
    tiny_data, tmp_path, monkeypatch, signal_number, code
):
    config = load_config(None, ["data.verify_checksums=false", "train.val_size=100", "train.epochs=2"])
    out = tmp_path / "run"
    original = train_module.Trainer.summarize

    def signalled_summarize(trainer):
        os.kill(os.getpid(), signal_number)  # delivered to the handler at once, inside the evaluation
        time.sleep(1)
        return original(trainer)

    monkeypatch.setattr(train_module.Trainer, "summarize", signalled_summarize)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(config, data_dir=tiny_data, out=out, log=None, progress_bars=False)
    assert stopped.value.exit_code == code
    assert "during the final evaluation" in str(stopped.value)
    assert "write summary.json with: mnist-ffn train --resume" in str(stopped.value)
    assert not (out / "summary.json").exists()
    monkeypatch.setattr(train_module.Trainer, "summarize", original)
    summary = train(None, data_dir=tiny_data, out=out, resume=True, log=None, progress_bars=False)
    assert summary["epochs"] == 2 and (out / "summary.json").is_file()


def test_two_quick_ctrl_c_give_one_line_and_exit_130_before_and_after_the_first_checkpoint(tiny_data, tmp_path):
    """Two SIGINTs in a row cannot wait for a checkpoint: one line, 130, and a folder the next command can use."""
    moments = {"after": "last.pt", "before": "config.toml"}
    processes = {  # both at once: one per core
        moment: start_forked("train", "--data-dir", tiny_data, "--out", tmp_path / moment, *LONG_RUN)
        for moment in moments
    }
    for moment, process in processes.items():
        wait_for(tmp_path / moment / moments[moment], process)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
    for moment, process in processes.items():
        out = tmp_path / moment
        result = finish_process(process)
        assert_one_line_error(result, 130, "SIGINT")
        if (out / "last.pt").exists():
            load_checkpoint(out / "last.pt")  # whole
            assert "resume with" in result.stderr
        else:
            assert "nothing was saved" in result.stderr
            again = run_cli("train", "--data-dir", tiny_data, "--out", out, "--quiet", *TINY_FLAGS)
            assert again.returncode == 0, again.stderr


def test_two_ctrl_c_between_the_first_best_pt_and_the_first_last_pt_leave_a_folder_to_start_again(tiny_data, tmp_path):
    """The first epoch's end writes best.pt, then last.pt: two SIGINTs in between (here while last.pt's temporary
    file is written: the run's 5th fsync, after config.toml's two and best.pt's two) leave nothing to resume, and
    nothing that stops `train --out` from starting the run again."""
    out = tmp_path / "run"
    twice = functools.partial(stop_itself_at, "fsync", 5, (signal.SIGINT, signal.SIGINT))
    process = start_forked("train", "--data-dir", tiny_data, "--out", out, *LONG_RUN, preexec_fn=twice)
    assert_one_line_error(finish_process(process), 130, "SIGINT", "nothing was saved")
    assert not (out / "last.pt").exists()
    again = run_cli("train", "--data-dir", tiny_data, "--out", out, "--quiet", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr


def test_two_ctrl_c_while_config_toml_is_written_leave_a_folder_to_start_again(tiny_data, tmp_path):
    """Two SIGINTs at the run's 2nd fsync, inside config.toml's atomic write (renamed, the folder not yet synced): the
    run has not been told its identity yet, and what it wrote is removed all the same."""
    out = tmp_path / "run"
    twice = functools.partial(stop_itself_at, "fsync", 2, (signal.SIGINT, signal.SIGINT))
    process = start_forked("train", "--data-dir", tiny_data, "--out", out, *LONG_RUN, preexec_fn=twice)
    assert_one_line_error(finish_process(process), 130, "SIGINT", "nothing was saved")
    again = run_cli("train", "--data-dir", tiny_data, "--out", out, "--quiet", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr


def test_ctrl_c_and_sigterm_during_eval_give_a_line(tiny_run, tiny_data):
    """Each signal is sent the moment the command has taken over SIGTERM (its handlers are in place, and torch's
    import and the evaluation are still ahead of it), however fast or slow the machine."""
    signals = {signal.SIGINT: 130, signal.SIGTERM: 143}
    processes = {number: start_process("eval", tiny_run / "best.pt", "--data-dir", tiny_data) for number in signals}
    for number, process in processes.items():
        assert wait_until_handled(process, signal.SIGTERM), process.communicate()
        process.send_signal(number)
    for number, process in processes.items():
        assert_one_line_error(finish_process(process), signals[number], signal.Signals(number).name)


def wait_until_handled(process, number: int, timeout: float = 60) -> bool:
    """Until the process catches signal `number` (its bit in /proc's SigCgt mask); False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError, StopIteration):
            status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
            caught = int(next(line for line in status if line.startswith("SigCgt:")).split()[1], 16)
            if caught >> (number - 1) & 1:
                return True
        time.sleep(0.001)
    raise AssertionError(f"signal {number} was not handled within {timeout} s")


# -- a full disk -----------------------------------------------------------------------------------------------


def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_whole(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"  # checkpoints of 784-512-10 (3 MB) are larger than the extracted data files
    config = load_config(None, ["data.verify_checksums=false", "train.val_size=100", "model.hidden=[512]",
                                "train.epochs=5"])  # fmt: skip
    original_save = train_module.Trainer._save

    def save_then_sigterm(trainer, path):  # a run stopped after its first epoch, with its folder as it then was
        original_save(trainer, path)
        if path.name == "last.pt":
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(train_module.Trainer, "_save", save_then_sigterm)
    with pytest.raises(TrainingInterrupted):
        train(config, data_dir=tiny_data, out=out, log=None, progress_bars=False)
    before = snapshot(out)
    size = (out / "last.pt").stat().st_size

    # files may not grow past half a checkpoint: the kernel refuses the write (EFBIG)
    small_disk = functools.partial(resource.setrlimit, resource.RLIMIT_FSIZE, (size // 2, size // 2))
    full = finish_process(
        start_forked("train", "--resume", out, "--data-dir", tiny_data, "--quiet", preexec_fn=small_disk), 120
    )
    assert_one_line_error(full, 1, "cannot write", "File too large", "is unchanged")
    assert snapshot(out) == before, "a failed save changed the run folder"
    load_checkpoint(out / "last.pt")


def test_a_signal_whose_exception_an_import_swallowed_is_still_one_line(monkeypatch):
    """Ctrl-C inside numpy's import (under torch's) can come back as "cannot load module more than once per
    process": the command still ends in the signal's one line and exit code, not in that traceback."""
    from mnist_ffn.cli import commands as cli
    from mnist_ffn.errors import Interrupted

    def import_that_swallows_the_signal(*args, **kwargs):
        # the command's own handler raises Interrupted here, and the "import" drops it, as an extension module's
        # init does with whatever its Python code raised
        with contextlib.suppress(Interrupted):
            signal.raise_signal(signal.SIGINT)
        raise ImportError("cannot load module more than once per process")

    monkeypatch.setattr(cli, "_command", lambda: types.SimpleNamespace(main=import_that_swallows_the_signal))
    assert_one_line_error(run_cli("eval", "x.pt"), 130, "interrupted by SIGINT")
    monkeypatch.setattr(cli, "_command", lambda: types.SimpleNamespace(main=lambda *args, **kwargs: 0))
    assert run_cli("eval", "x.pt").returncode == 0, "the next command in this process starts with no signal"
