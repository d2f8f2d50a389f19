"""Nothing a user does can mix, delete or half-write a run: the lock, temp files, run identity, signals, stdout.

Where the process itself is the subject (two processes at once, a closed pipe, a signal), the tests start real
processes; everything else runs in-process.
"""

import functools
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from mnist_ffn import training as train_module
from mnist_ffn.checkpoint import load_checkpoint
from mnist_ffn.config import load_config
from mnist_ffn.errors import TrainingInterrupted
from mnist_ffn.run_folder import LOCK_FILE, RunFolder
from mnist_ffn.training import train
from tests.conftest import (
    PROJECT_ROOT,
    TINY_FLAGS,
    assert_one_line_error,
    finish_process,
    run_cli,
    start_forked,
    start_process,
)

LONG_RUN = [*TINY_FLAGS, "--set", "train.epochs=400", "--set", "model.hidden=[32]", "--quiet"]


def wait_for(path, process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {path.name} within {timeout} s"
        time.sleep(0.01)


def snapshot(folder) -> dict:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


# -- two processes in one folder -------------------------------------------------------------------------------


def test_a_second_process_is_refused_while_a_run_trains_in_the_folder(tiny_data, tmp_path):
    out = tmp_path / "run"
    first = start_forked("train", "--data-dir", tiny_data, "--out", out, *LONG_RUN)
    try:
        wait_for(out / "last.pt", first)
        before_config = (out / "config.toml").read_text()
        for args in (
            ["train", "--data-dir", tiny_data, "--out", out, "--force", *TINY_FLAGS],
            ["train", "--resume", out, "--data-dir", tiny_data],
        ):
            second = run_cli(*args)
            assert_one_line_error(second, 1, str(out), "another mnist-ffn process", f"pid {first.pid}")
        assert (out / "config.toml").read_text() == before_config
    finally:
        first.kill()  # kill -9: the operating system releases the lock with the process
        first.communicate()
    identity = RunFolder(out).config_run_id()
    assert load_checkpoint(out / "last.pt")["run_id"] == identity, "the folder holds one run only"
    assert load_checkpoint(out / "best.pt")["run_id"] == identity
    again = run_cli("train", "--data-dir", tiny_data, "--out", out, "--force", "--quiet", *TINY_FLAGS)
    assert again.returncode == 0, again.stderr  # no stale lock after kill -9


def test_two_forced_runs_started_together_leave_one_whole_run(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data-dir", tiny_data, "--out", out, "--force", *TINY_FLAGS, "--set", "train.epochs=3"]
    processes = [start_forked(*args), start_forked(*args)]
    results = [finish_process(process) for process in processes]
    codes = sorted(result.returncode for result in results)
    assert codes in ([0, 0], [0, 1]), [result.stderr for result in results]  # one after the other, or one refused
    for result in results:
        if result.returncode == 1:
            assert_one_line_error(result, 1, "another mnist-ffn process")
    identity = RunFolder(out).config_run_id()
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(out / name)["run_id"] == identity
    summary = RunFolder(out).read_summary()
    assert summary["run_id"] == identity


def test_a_failed_start_in_a_new_folder_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new-run"
    result = run_cli("train", "--data-dir", tmp_path / "no-data", "--out", out, "--set", "data.download=false")
    assert_one_line_error(result, 1, "MNIST not found")
    assert not out.exists()


# -- temp files ------------------------------------------------------------------------------------------------


def test_force_and_resume_remove_only_mnist_ffns_own_temp_files(tiny_run, tiny_data):
    users_files = [".notes.partial", ".last.pt.mine.partial", ".summary.json.backup"]
    for name in users_files:
        (tiny_run / name).write_text("a file of the user's")
    leftover = tiny_run / ".last.pt.x1y2z3.mnist-ffn-partial"
    leftover.write_bytes(b"half a checkpoint")
    resumed = run_cli("train", "--resume", tiny_run, "--data-dir", tiny_data, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not leftover.exists()
    leftover.write_bytes(b"half a checkpoint")
    forced = run_cli("train", "--data-dir", tiny_data, "--out", tiny_run, "--force", "--quiet", *TINY_FLAGS)
    assert forced.returncode == 0, forced.stderr
    assert not leftover.exists()
    for name in users_files:
        assert (tiny_run / name).read_text() == "a file of the user's"


# -- run identity ----------------------------------------------------------------------------------------------


@pytest.fixture
def two_runs(tiny_data, tmp_path):
    runs = []
    for name, seed in (("one", 1), ("two", 2)):
        out = tmp_path / name
        result = run_cli("train", "--data-dir", tiny_data, "--out", out, "--quiet", *TINY_FLAGS,
                         "--set", f"train.seed={seed}", "--set", "train.epochs=2")  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs.append(out)
    return runs


@pytest.mark.parametrize(
    ("copied", "fragment"),
    [
        (["last.pt"], "last.pt belongs to another run than config.toml"),
        (["last.pt", "config.toml"], "best.pt belongs to another run than last.pt"),
    ],
)
def test_a_checkpoint_copied_in_from_another_run_is_refused(tiny_data, two_runs, copied, fragment):
    one, two = two_runs
    for name in copied:
        shutil.copy(two / name, one / name)
    before = snapshot(one)
    result = run_cli("train", "--resume", one, "--data-dir", tiny_data)
    assert_one_line_error(result, 1, f"--resume {one}", fragment, "refusing to mix two runs")
    assert snapshot(one) == before


def test_an_edited_config_toml_is_refused_on_resume(tiny_data, tiny_run):
    config = tiny_run / "config.toml"
    config.write_text(config.read_text().replace("epochs = 3", "epochs = 30"))
    result = run_cli("train", "--resume", tiny_run, "--data-dir", tiny_data)
    assert_one_line_error(result, 1, "last.pt belongs to another run than config.toml")


def test_config_toml_names_the_run_and_still_loads_as_a_config(tiny_run):
    identity = RunFolder(tiny_run).config_run_id()
    assert identity and len(identity) == 32
    assert load_config(tiny_run / "config.toml").train.epochs == 3
    assert load_checkpoint(tiny_run / "last.pt")["run_id"] == identity


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


def test_ctrl_c_and_sigterm_during_eval_give_a_line(tiny_run, tiny_data):
    signals = {signal.SIGINT: 130, signal.SIGTERM: 143}
    processes = {number: start_process("eval", tiny_run / "best.pt", "--data-dir", tiny_data) for number in signals}
    time.sleep(1.0)  # inside the import of torch or the evaluation
    for number, process in processes.items():
        process.send_signal(number)
    for number, process in processes.items():
        result = finish_process(process)
        if result.returncode != 0:  # 0: it finished before the signal came, nothing to check
            assert_one_line_error(result, signals[number], signal.Signals(number).name)


# -- stdout that closes or fills -------------------------------------------------------------------------------


def test_stdout_that_closes_or_fills_does_not_stop_training(tiny_data, tmp_path):
    flags = [*TINY_FLAGS, "--set", "train.epochs=3"]
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -1` does: the reader is gone before the first epoch line
    with open("/dev/full", "w") as full:
        closed = start_process("train", "--data-dir", tiny_data, "--out", tmp_path / "closed", *flags, stdout=write_end)
        filled = start_process("train", "--data-dir", tiny_data, "--out", tmp_path / "filled", *flags, stdout=full)
    os.close(write_end)
    closed, filled = finish_process(closed), finish_process(filled)
    assert_one_line_error(closed, 0, "stdout was closed")
    assert_one_line_error(filled, 1, "cannot write to stdout", "No space left on device")
    for name in ("closed", "filled"):
        assert RunFolder(tmp_path / name).read_summary()["epochs"] == 3, name


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


def test_the_lock_file_is_gone_after_a_run_and_not_part_of_it(tiny_run):
    assert not (tiny_run / LOCK_FILE).exists()
    assert LOCK_FILE not in RunFolder(tiny_run).written_names()


# -- permissions the operating system refuses ------------------------------------------------------------------


def without_root_powers(*args) -> subprocess.Popen:
    """Start `python -m mnist_ffn ARGS` obeying file permissions even when the tests run as root (as CI does)."""
    command = [sys.executable, "-m", "mnist_ffn", *map(str, args)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: root ignores file permissions")
        drop = "-dac_override,-dac_read_search"
        command = ["setpriv", "--bounding-set", drop, "--inh-caps", drop, *command]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_unwritable_folders_and_unreadable_files_are_one_line_and_destroy_nothing(tiny_data, tiny_run, tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o555)
    images = tiny_data / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    images.chmod(0o000)
    before = snapshot(tiny_run)
    try:  # both at once: one per core
        unwritable = without_root_powers("train", "--data-dir", tiny_data, "--out", parent / "run", *TINY_FLAGS)
        unreadable = without_root_powers("train", "--data-dir", tiny_data, "--out", tiny_run, "--force", *TINY_FLAGS)
        unwritable, unreadable = finish_process(unwritable), finish_process(unreadable)
    finally:
        parent.chmod(0o755)
        images.chmod(0o644)
    assert_one_line_error(unwritable, 1, f"--out {parent / 'run'}: cannot create the folder", "Permission denied")
    assert list(parent.iterdir()) == []
    assert_one_line_error(unreadable, 1, "train-images-idx3-ubyte.gz: cannot read it", "Permission denied")
    assert snapshot(tiny_run) == before
