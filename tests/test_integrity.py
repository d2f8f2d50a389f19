"""One run per folder, whole: the lock, temp files, run identity, stdout, permissions.

Where the process itself is the subject (two processes at once, a closed pipe), the tests start real
processes; everything else runs in-process.
"""

import os
import shutil
import subprocess
import sys

import pytest

from mnist_ffn.config import load_config
from mnist_ffn.training.checkpoint import load_checkpoint
from mnist_ffn.training.run_folder import LOCK_FILE, RunFolder
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
)

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


# -- the lock and permissions ---------------------------------------------------------------------------------------


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


def test_an_atomic_write_replaces_files_only(tmp_path):
    """A FIFO, a socket or a device where a file is to be written is refused, not swapped for a file (as root, a
    --out of /dev/null would otherwise lose the device); a folder there says so."""
    import os
    import socket

    from mnist_ffn.errors import WriteError
    from mnist_ffn.files import write_text_atomically

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock"))
        for target in (fifo, tmp_path / "sock"):
            with pytest.raises(WriteError, match="not a regular file"):
                write_text_atomically(target, "x")
        assert fifo.is_fifo() and (tmp_path / "sock").is_socket()
    (tmp_path / "folder").mkdir()
    with pytest.raises(WriteError, match="Is a directory"):
        write_text_atomically(tmp_path / "folder", "x")
    write_text_atomically(tmp_path / "file", "x")
    write_text_atomically(tmp_path / "file", "y")
    assert (tmp_path / "file").read_text() == "y" and sorted(p.name for p in tmp_path.iterdir()) == [
        "file", "folder", "pipe", "sock"
    ]  # fmt: skip
