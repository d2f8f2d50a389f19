"""What the sweep tests share: tiny specs, the study a sweep folder holds, a throwaway PostgreSQL server, and ways to
catch a sweep in the middle of its work (held still with SIGSTOP, so that what the test reads is what a kill leaves,
however fast the machine)."""

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import (
    free_port,
    run_cli,
)

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")


TINY_BASE = """
[base]
data.verify_checksums = false
train.val_size = 100
train.epochs = {epochs}
train.checkpoint_every = {checkpoint_every}
"""


def write_spec(folder: Path, body: str, epochs: int = 2, name: str = "spec.toml", checkpoint_every: int = 0) -> Path:
    path = folder / name
    path.write_text(TINY_BASE.format(epochs=epochs, checkpoint_every=checkpoint_every) + body)
    return path


GRID = """
[space]
model.activation = ["identity", "relu"]
model.hidden = [[16], [32, 16]]

[sweep]
seeds = [0, 1]
pruner = "none"
"""


def trials_of(out: Path) -> list:
    study = json.loads((out / "sweep.json").read_text())["study"]
    from mnist_ffn.experiments.sweep import open_storage

    return optuna.load_study(study_name=study, storage=open_storage(None, out)).get_trials()


def complete_points(trials) -> list:
    return sorted(
        (json.dumps(trial.user_attrs["point"], sort_keys=True), trial.user_attrs["seed"])
        for trial in trials
        if trial.state == optuna.trial.TrialState.COMPLETE
    )


def spec_with(tmp_path, sweep_lines: str, space: str = 'model.activation = ["relu", "tanh"]') -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(f"[base]\ntrain.epochs = 1\n\n[space]\n{space}\n\n[sweep]\n{sweep_lines}\n")
    return path


def interrupted_sweep(tiny_data, tmp_path) -> tuple[list, Path, subprocess.CompletedProcess]:
    """A 2-point sweep of 30 epochs run in this process and stopped by SIGINT (as Ctrl-C does) once a trial has
    saved its last.pt: (its arguments, its folder, what the stopped command gave)."""
    spec = write_spec(
        tmp_path, '[space]\nmodel.hidden = [[16], [24]]\n[sweep]\nseeds = [0]\npruner = "none"\n', epochs=30
    )
    out = tmp_path / "sweep"
    args = ["sweep", spec, "--out", out, "--data-dir", tiny_data, "--quiet"]

    def interrupt_once_a_run_has_saved():
        deadline = time.monotonic() + 60
        while not any(out.glob("trials/*/last.pt")) and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=interrupt_once_a_run_has_saved)
    watcher.start()
    stopped = run_cli(*args)
    watcher.join()
    return args, out, stopped


def kill_9_with_every_running_trial_named(group: int, out: Path) -> list[Path]:
    """SIGKILL the process group at an instant when no worker is between drawing a trial and naming itself in it,
    and a trial is running with a checkpoint to resume from; returns those trials' folders.

    A trial killed in that instant (milliseconds, right after a worker finishes a trial) is recovered only
    after sweep_storage.GRACE_SECONDS, as its worker could be on another machine: a 30 s wait this test is not about.
    SIGSTOP holds every process still while the study and the folders are read, so what is read is what the kill
    leaves, however fast the trials run."""
    while True:
        os.killpg(group, signal.SIGSTOP)
        running = [trial for trial in trials_of(out) if trial.state == optuna.trial.TrialState.RUNNING]
        interrupted = running_with_checkpoint(out)
        if interrupted and all("worker" in trial.user_attrs for trial in running):
            os.killpg(group, signal.SIGKILL)
            return interrupted
        os.killpg(group, signal.SIGCONT)
        time.sleep(0.005)


def group_alive(group: int) -> bool:
    """Whether a process of the group still runs. A zombie does not: a killed worker whose parent died too
    waits for PID 1 to reap it, which some containers' PID 1 does only every several seconds."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):  # gone while we looked
            continue
        if int(process_group) == group and state not in ("Z", "X"):
            return True
    return False


def running_with_checkpoint(out: Path) -> list[Path]:
    return [path.parent for path in out.glob("trials/*/last.pt") if not (path.parent / "summary.json").exists()]


class PostgresServer:
    """A throwaway PostgreSQL server in a temp folder, on a free loopback port; stop() and start() it again.
    `settings`: postgresql.conf's, e.g. {"max_connections": 20}."""

    def __init__(self, settings: dict | None = None):
        self.settings = "".join(f" -c {key}={value}" for key, value in (settings or {}).items())
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not binaries:
            message = "PostgreSQL's server binaries are not installed (Debian package postgresql)"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{message}; CI must have them")
            pytest.skip(message)
        self.bin_dir = Path(binaries[-1])
        self.root = Path(tempfile.mkdtemp(prefix="mnist-ffn-pg-"))
        self.as_postgres: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.root, "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.root / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/sweeps"
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", "sweeps")

    def _run(self, program: str, *arguments) -> None:
        command = [*self.as_postgres, str(self.bin_dir / program), *map(str, arguments)]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1{self.settings}"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "log", "-w", "start")

    def stop(self) -> None:
        """As a crash would: no clean shutdown, open connections cut."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


TWO_POINTS = '[space]\nmodel.hidden = [[8], [12]]\n[sweep]\nseeds = [0, 1]\npruner = "none"\n'


def stamps(out: Path) -> dict[str, int]:
    return {path.parent.name: path.stat().st_mtime_ns for path in out.glob("trials/*/best.pt")}


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_finished_once(out: Path, count: int = 4) -> None:
    done = complete_points(trials_of(out))
    assert len(done) == count == len(set(done)), done


def grow(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", mount], check=True)


LOST_TRIAL = {"point": {"optim.lr": 0.1}, "seed": 0, "run_folder": "trials/0000"}


def trial_of_a_lost_machine(study):
    """A queued trial drawn by a worker on another machine (its pid says nothing here): (the trial, its attrs)."""
    study.enqueue_trial({"optim.lr": 0.1}, user_attrs=LOST_TRIAL)
    trial = study.ask()
    trial.set_user_attr("worker", "another-machine:4242")
    return trial


def assert_found_dead_once_its_beats_stop(study, grace: float) -> None:
    """Right after its last beat it may still run; once `grace` seconds have passed since that beat it is failed
    and queued again with its run folder: polled until it is, however fast or slow the machine."""
    from mnist_ffn.experiments import sweep

    last_beat = time.monotonic()  # the caller's Heartbeat has just stopped
    sweep._recover_dead_trials(study)
    if time.monotonic() - last_beat < grace:  # (a machine slow enough to take the whole grace period proves nothing)
        assert study.get_trials()[0].state == optuna.trial.TrialState.RUNNING
    deadline = last_beat + grace + 60
    while study.get_trials()[0].state == optuna.trial.TrialState.RUNNING:
        assert time.monotonic() < deadline, "not found dead a minute after the grace period"
        time.sleep(0.1)
        sweep._recover_dead_trials(study)
    trials = study.get_trials()
    states = optuna.trial.TrialState
    assert [trial.state for trial in trials] == [states.FAIL, states.WAITING], "failed, and queued again"
    assert {key: trials[1].user_attrs[key] for key in LOST_TRIAL} == LOST_TRIAL, "queued again with its run folder"
