"""`mnist-ffn sweep`: specs, exactly-once grids over worker processes, kill -9 and resume, PostgreSQL, pruning."""

import contextlib
import csv
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch

from mnist_ffn.errors import ConfigError
from mnist_ffn.experiments.spec import load_spec
from mnist_ffn.presets import shipped
from tests.helpers import (
    PROJECT_ROOT,
    assert_one_line_error,
    closed_port,
    finish_process,
    free_port,
    run_cli,
    start_forked,
)

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")

SPECS = [item.path for item in shipped("sweep spec").values()]  # read from the installed package
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


# -- specs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", SPECS, ids=lambda path: path.name)
def test_every_shipped_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.space and spec.seeds


def test_the_lesson_spec_is_16_points_times_3_seeds():
    spec = load_spec(shipped("sweep spec")["lesson"].path)
    assert len(spec.grid()) == 16 and spec.seeds == [0, 1, 2]


def test_every_problem_in_a_spec_is_reported_at_once(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        """
[base]
train.epochz = 3

[space]
model.activation = ["relu", "wobbly"]
optim.lr = { low = 0.5, high = 0.1 }
model.hiden = [[10]]
train.seed = [1, 2]

[sweep]
sampler = "random"
seeds = [0, 0]
pruner = "always"
colour = "blue"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_spec(path)
    text = str(caught.value)
    for fragment in (
        "train.epochz: unknown key",
        "space.model.activation",
        "wobbly",
        "space.optim.lr: low must be below high",
        "space.model.hiden: unknown config key",
        "space.train.seed: seeds are set by [sweep] seeds",
        "sweep.sampler: must be one of grid, tpe",
        "sweep.seeds: a seed is listed twice",
        "sweep.pruner",
        "sweep.colour: unknown key",
    ):
        assert fragment in text, fragment
    result = run_cli("sweep", path, "--out", tmp_path / "out")
    assert_one_line_error(result, 2, "train.epochz", "sweep.colour")
    assert not (tmp_path / "out").exists()


def test_a_grid_spec_refuses_ranges_and_tpe_needs_trials(tmp_path):
    grid = write_spec(tmp_path, "[space]\noptim.lr = { low = 0.01, high = 0.1, log = true }\n", name="grid.toml")
    with pytest.raises(ConfigError, match="the grid sampler needs a list"):
        load_spec(grid)
    tpe = write_spec(tmp_path, '[space]\noptim.lr = { low = 0.01, high = 0.1 }\n[sweep]\nsampler = "tpe"\n')
    with pytest.raises(ConfigError, match="the tpe sampler needs a number of trials"):
        load_spec(tpe)


# -- a grid on one machine ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_grid(tiny_template, tmp_path_factory):
    """One grid sweep (2 activations x 2 depths x 2 seeds) run by two workers, shared by the tests below."""
    folder = tmp_path_factory.mktemp("grid")
    data = shutil.copytree(tiny_template[0], folder / "data")
    spec = write_spec(folder, GRID)
    args = ["sweep", spec, "--out", folder / "sweep", "--data-dir", data]
    result = run_cli(*args, "--workers", "2", "--json")
    assert result.returncode == 0, result.stderr
    return folder / "sweep", args, json.loads(result.stdout)


def test_a_grid_with_two_workers_runs_every_point_and_seed_exactly_once(finished_grid):
    out, _, report = finished_grid
    trials = trials_of(out)
    assert complete_points(trials) == sorted(set(complete_points(trials)))  # no point x seed twice
    assert len(complete_points(trials)) == 4 * 2
    assert len(list((out / "trials").iterdir())) == 8
    # which worker draws which trial (and whether one draws them all) is the machine's timing, not a promise
    assert 1 <= len({trial.user_attrs["worker"] for trial in trials}) <= 2

    # results.csv and the table agree with the run folders' own summary.json files
    summaries: dict[str, list] = {}
    for trial in trials:
        summary = json.loads((out / trial.user_attrs["run_folder"] / "summary.json").read_text())
        summaries.setdefault(json.dumps(trial.user_attrs["point"], sort_keys=True), []).append(summary)
    with open(out / "results.csv") as file:
        rows = {row["point"]: row for row in csv.DictReader(file)}
    assert len(rows) == 4 == len(report["points"])
    for row in report["points"]:
        runs = summaries[json.dumps(row["params"], sort_keys=True)]
        assert row["seeds"] == 2
        assert row["val_mean"] == pytest.approx(statistics.fmean(run["best_val_accuracy"] for run in runs))
        assert row["test_mean"] == pytest.approx(statistics.fmean(run["test_accuracy"] for run in runs))
        assert row["test_std"] == pytest.approx(statistics.stdev(run["test_accuracy"] for run in runs))
        assert float(rows[row["point"]]["val_mean"]) == pytest.approx(row["val_mean"], rel=1e-5)
        assert float(rows[row["point"]]["test_std"]) == pytest.approx(row["test_std"], rel=1e-5, abs=1e-9)
    means = [row["val_mean"] for row in report["points"]]
    assert means == sorted(means, reverse=True), "best validation accuracy first"


def test_report_and_rerun_of_a_finished_sweep_train_nothing_again(finished_grid):
    out, args, report = finished_grid
    stamps = {path: path.stat().st_mtime_ns for path in out.glob("trials/*/best.pt")}
    again = run_cli(*args, "--json")
    assert again.returncode == 0, again.stderr
    assert {path: path.stat().st_mtime_ns for path in out.glob("trials/*/best.pt")} == stamps
    assert json.loads(again.stdout)["points"] == report["points"]
    reported = run_cli("sweep", "--report", out, "--json")
    assert reported.returncode == 0, reported.stderr
    assert json.loads(reported.stdout)["points"] == report["points"]
    table = run_cli("sweep", "--report", out)
    assert "±" in table.stdout and "results.csv" in table.stdout


def test_a_folder_of_another_sweep_is_refused_and_left_as_it_was(finished_grid, tmp_path):
    out, _, _ = finished_grid
    changed = write_spec(tmp_path, GRID.replace("[0, 1]", "[0, 1, 2]"), name="spec.toml")
    before = (out / "journal.log").read_bytes()
    assert_one_line_error(run_cli("sweep", changed, "--out", out), 2, "holds another sweep")
    assert (out / "journal.log").read_bytes() == before


def test_pruning_stops_a_trial_far_below_the_median(tiny_data, tmp_path):
    spec = write_spec(
        tmp_path,
        '[space]\noptim.lr = [0.05, 1e-7]\nmodel.hidden = [[16]]\n[sweep]\nseeds = [0, 1, 2]\npruner = "median"\n',
        epochs=6,
    )
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", tiny_data, "--json")
    assert result.returncode == 0, result.stderr
    states = {}
    for trial in trials_of(out):
        states.setdefault(trial.user_attrs["point"]["optim.lr"], []).append(trial.state.name)
        if trial.state == optuna.trial.TrialState.PRUNED:
            with open(out / trial.user_attrs["run_folder"] / "metrics.csv") as file:
                assert len(list(csv.DictReader(file))) < 6, "a pruned trial stopped before its last epoch"
    assert states[0.05] == ["COMPLETE"] * 3
    assert "PRUNED" in states[1e-7], states


# -- kill -9 -----------------------------------------------------------------------------------------------------


def test_a_process_killed_while_writing_the_journal_leaves_no_lock_to_wait_out(tmp_path):
    """The journal's lock is an flock, which dies with its process: the next writer goes on at once
    (Optuna's own lock file would stand for 30 s after a kill -9)."""
    from mnist_ffn.experiments.storage import JOURNAL_LOCK, JournalLock

    holder = subprocess.Popen(
        [sys.executable, "-c", f"from pathlib import Path; from mnist_ffn.experiments.storage import JournalLock; "
         f"JournalLock(Path({str(tmp_path / JOURNAL_LOCK)!r})).acquire(); print('held', flush=True); "
         f"import time; time.sleep(60)"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    waiting = threading.Thread(target=JournalLock(tmp_path / JOURNAL_LOCK).acquire, daemon=True)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive(), "a writer waits while another holds the lock"
    holder.kill()
    holder.wait()
    waiting.join(5)
    assert not waiting.is_alive(), "the lock died with its holder"


@pytest.mark.machine
def test_kill_9_mid_trial_then_rerun_finishes_without_rerunning_finished_trials(tiny_data, tmp_path):
    spec = write_spec(
        tmp_path,
        '[space]\nmodel.hidden = [[32], [48]]\n[sweep]\nseeds = [0, 1]\npruner = "none"\n',
        epochs=16,
        checkpoint_every=2,
    )
    out = tmp_path / "sweep"
    args = ["sweep", spec, "--out", out, "--workers", "2", "--data-dir", tiny_data, "--quiet"]
    process = start_forked(*args, new_session=True)  # its own process group: the sweep and its workers
    deadline = time.monotonic() + 120
    while not any(out.glob("trials/*/summary.json")) or not _running_with_checkpoint(out):
        assert process.poll() is None, finish_process(process)
        assert time.monotonic() < deadline, "no trial finished and another running within 120 s"
        time.sleep(0.05)
    interrupted = _kill_9_with_every_running_trial_named(process.pid, out)  # the machine's share dies at once
    process.wait()
    while _group_alive(process.pid):  # workers inside an fsync die when it returns
        time.sleep(0.05)
    finished = {path.parent.name: path.stat().st_mtime_ns for path in out.glob("trials/*/summary.json")}

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    for name, stamp in finished.items():
        assert (out / "trials" / name / "summary.json").stat().st_mtime_ns == stamp, f"{name} was trained again"
    trials = trials_of(out)
    assert len(complete_points(trials)) == 4 and len(set(complete_points(trials))) == 4

    # the interrupted trial, resumed from its last.pt, ends exactly where an uninterrupted run ends
    folder = interrupted[0]
    reference = tmp_path / "reference"
    alone = run_cli("train", "--config", folder / "config.toml", "--data-dir", tiny_data, "--out", reference, "--quiet")
    assert alone.returncode == 0, alone.stderr
    resumed = torch.load(folder / "last.pt", weights_only=True)
    uninterrupted = torch.load(reference / "last.pt", weights_only=True)
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


def _kill_9_with_every_running_trial_named(group: int, out: Path) -> list[Path]:
    """SIGKILL the process group at an instant when no worker is between drawing a trial and naming itself in it,
    and a trial is running with a checkpoint to resume from; returns those trials' folders.

    A trial killed in that instant (milliseconds, right after a worker finishes a trial) is recovered only
    after sweep_storage.GRACE_SECONDS, as its worker could be on another machine: a 30 s wait this test is not about.
    SIGSTOP holds every process still while the study and the folders are read, so what is read is what the kill
    leaves, however fast the trials run."""
    while True:
        os.killpg(group, signal.SIGSTOP)
        running = [trial for trial in trials_of(out) if trial.state == optuna.trial.TrialState.RUNNING]
        interrupted = _running_with_checkpoint(out)
        if interrupted and all("worker" in trial.user_attrs for trial in running):
            os.killpg(group, signal.SIGKILL)
            return interrupted
        os.killpg(group, signal.SIGCONT)
        time.sleep(0.005)


def _group_alive(group: int) -> bool:
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


def _running_with_checkpoint(out: Path) -> list[Path]:
    return [path.parent for path in out.glob("trials/*/last.pt") if not (path.parent / "summary.json").exists()]


# -- bad input ---------------------------------------------------------------------------------------------------


def test_bad_sweep_commands_are_one_line_and_create_nothing(tmp_path):
    spec = write_spec(tmp_path, GRID)
    assert_one_line_error(run_cli("sweep", spec, "--workers", "0"), 2, "--workers")
    assert_one_line_error(
        run_cli("sweep", spec, "--out", tmp_path / "a", "--storage", "mysql://me@localhost/db"), 2, "postgresql://"
    )
    with closed_port() as port:
        unreachable = f"postgresql://nobody@127.0.0.1:{port}/none"
        assert_one_line_error(run_cli("sweep", spec, "--out", tmp_path / "b", "--storage", unreachable), 1, "--storage")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    other = tmp_path / "not-a-sweep"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli("sweep", spec, "--out", other), 2, "is not a sweep folder")

    if not torch.cuda.is_available():  # a device this machine lacks: one line, before any folder or trial
        assert_one_line_error(run_cli("sweep", spec, "--out", tmp_path / "c", "--device", "cuda"), 1, "--device cuda")
        assert not (tmp_path / "c").exists()
    assert_one_line_error(run_cli("sweep", "--report", tmp_path), 2, "not a sweep folder")
    assert_one_line_error(run_cli("sweep"), 2, "give a sweep spec")


def test_without_optuna_the_sweep_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    spec = write_spec(tmp_path, GRID)
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert_one_line_error(run_cli("sweep", spec, "--out", tmp_path / "out"), 1, "pip install 'mnist-ffn[sweep]'")


# -- PostgreSQL: two machines on one study ----------------------------------------------------------------------


class PostgresServer:
    """A throwaway PostgreSQL server in a temp folder, on a free loopback port; stop() and start() it again."""

    def __init__(self):
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
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "log", "-w", "start")

    def stop(self) -> None:
        """As a crash would: no clean shutdown, open connections cut."""
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def postgres_server():
    server = PostgresServer()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres(postgres_server):
    """The URL of a throwaway PostgreSQL server's empty database `sweeps`."""
    return postgres_server.url


def test_two_machines_share_one_postgresql_study_without_running_a_point_twice(tiny_data, tmp_path, postgres):
    spec = write_spec(tmp_path, GRID, epochs=1)
    flags = ["--storage", postgres, "--study", "shared", "--data-dir", tiny_data, "--quiet"]
    machines = [start_forked("sweep", spec, "--out", tmp_path / name, *flags) for name in ("machine-a", "machine-b")]
    results = [finish_process(machine, timeout=300) for machine in machines]
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", "a quiet sweep prints nothing on stderr (no warning from each worker)"
    storage = optuna.storages.RDBStorage(postgres.replace("postgresql://", "postgresql+psycopg://"))
    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    done = complete_points(trials)
    assert len(done) == 8 and len(set(done)) == 8, "every point x seed once, none twice"
    # (how the trials fall between the two machines is their timing: one may find the study done before it starts)
    spec_changed = write_spec(tmp_path, GRID.replace("[0, 1]", "[5]"), name="other.toml")
    refused = run_cli("sweep", spec_changed, "--out", tmp_path / "c", "--storage", postgres, "--study", "shared")
    assert_one_line_error(refused, 2, "--study shared: exists with another spec")
    assert not (tmp_path / "c").exists()


@pytest.mark.machine
@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # Optuna's, for ask() with a heartbeat: see worker_main
def test_a_worker_lost_with_its_machine_is_found_by_its_stopped_heartbeat(postgres, tmp_path, monkeypatch):
    """A worker on another machine cannot be asked by pid: when its heartbeat stops for longer than the grace
    period, its trial is failed and queued again with its run folder, so that any machine resumes it."""
    from mnist_ffn.experiments import storage as sweep_storage
    from mnist_ffn.experiments import sweep

    # 30 s in use; the storage reads it when it is opened. 3 s: the check right after the last beat comes within
    # it even on a loaded machine
    monkeypatch.setattr(sweep_storage, "GRACE_SECONDS", 3)
    study = optuna.create_study(
        study_name="lost", storage=sweep_storage.open_storage(postgres, tmp_path), direction="maximize"
    )
    attrs = {"point": {"optim.lr": 0.1}, "seed": 0, "run_folder": "trials/0000"}
    study.enqueue_trial({"optim.lr": 0.1}, user_attrs=attrs)
    trial = study.ask()
    trial.set_user_attr("worker", "another-machine:4242")  # not this host: its pid says nothing here
    with sweep_storage.Heartbeat(study, trial):  # the worker's own heartbeat, until its machine is lost
        pass

    sweep._recover_dead_trials(study)  # its last beat is within the grace period: it may still be running
    assert study.get_trials()[0].state == optuna.trial.TrialState.RUNNING
    time.sleep(3.5)
    sweep._recover_dead_trials(study)
    trials = study.get_trials()
    states = optuna.trial.TrialState
    assert [trial.state for trial in trials] == [states.FAIL, states.WAITING], "failed, and queued again"
    retry = trials[1]
    assert {key: retry.user_attrs[key] for key in attrs} == attrs, "queued again with its run folder"


def test_plot_of_a_sweep_draws_accuracy_against_each_swept_key(finished_grid):
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    out, _, _ = finished_grid
    result = run_cli("plot", out)
    assert result.returncode == 0, result.stderr
    from PIL import Image

    with Image.open(out / "sweep.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]  # one panel per swept key, side by side


def test_a_tpe_search_samples_points_and_runs_each_once_per_seed(tiny_data, tmp_path):
    spec = write_spec(
        tmp_path,
        "[space]\noptim.lr = { low = 0.01, high = 0.3, log = true }\nmodel.hidden = [[8], [16]]\n"
        '[sweep]\nsampler = "tpe"\ntrials = 3\nseeds = [0, 1]\npruner = "none"\n',
        epochs=1,
    )
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", tiny_data, "--json")
    assert result.returncode == 0, result.stderr
    trials = [trial for trial in trials_of(out) if trial.state == optuna.trial.TrialState.COMPLETE]
    by_point: dict[str, list] = {}
    for trial in trials:
        assert 0.01 <= trial.user_attrs["point"]["optim.lr"] <= 0.3
        by_point.setdefault(json.dumps(trial.user_attrs["point"], sort_keys=True), []).append(trial.user_attrs["seed"])
    assert len(by_point) >= 3
    assert all(sorted(seeds) == [0, 1] for seeds in by_point.values()), by_point
    results = json.loads(result.stdout)
    assert all(row["seeds"] == 2 for row in results["points"])
    importances = results["importances"]  # Optuna's parameter importances, for a tpe search
    assert set(importances) == {"optim.lr", "model.hidden"}
    assert sum(importances.values()) == pytest.approx(1.0)


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


@pytest.mark.machine
def test_ctrl_c_stops_the_sweep_with_its_runs_saved_and_a_rerun_finishes_it(tiny_data, tmp_path):
    args, out, stopped = interrupted_sweep(tiny_data, tmp_path)
    assert_one_line_error(stopped, 130, "stopped by SIGINT", "rerun the same command to continue")
    saved = list(out.glob("trials/*/last.pt"))
    assert saved and all(torch.load(path, weights_only=True)["progress"]["epoch"] < 30 for path in saved)

    finished = run_cli(*args)
    assert finished.returncode == 0, finished.stderr
    assert len(complete_points(trials_of(out))) == 2 == len(set(complete_points(trials_of(out))))
    for path in saved:  # the interrupted trial went on in its own folder
        assert json.loads((path.parent / "summary.json").read_text())["epochs"] == 30


# -- where trials go, and compare as a sweep ---------------------------------------------------------------------


def spec_with(tmp_path, sweep_lines: str, space: str = 'model.activation = ["relu", "tanh"]') -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(f"[base]\ntrain.epochs = 1\n\n[space]\n{space}\n\n[sweep]\n{sweep_lines}\n")
    return path


def test_run_folder_templates_that_could_mix_two_trials_are_refused(tmp_path):
    cases = {
        'run_folder = "{values}"\nseeds = [0, 1]': "needs {seed} when there are several seeds",
        'run_folder = "all-in-one"': "needs {number}, or {point} or {values}",
        'run_folder = "{values}-{colour}"': "may use only {number}, {point}, {values} and {seed}",
        'run_folder = "../{values}"': "must be a folder inside the sweep's folder",
        "run_folder = 3": "must be a string",
    }
    for lines, problem in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_spec(spec_with(tmp_path, lines))
        assert any(f"sweep.run_folder: {problem}" in message for message in caught.value.problems), (lines, caught)


def test_trial_folders_follow_the_template(tmp_path):
    spec = load_spec(spec_with(tmp_path, 'run_folder = "{values}-s{seed}"', "model.hidden = [[100, 100]]"))
    assert spec.trial_folder(7, {"model.hidden": [100, 100]}, 2) == "100x100-s2"
    default = load_spec(spec_with(tmp_path, ""))
    assert default.trial_folder(7, {"model.activation": "relu"}, 0) == "trials/0007-activation=relu-seed0"


def test_a_spec_written_out_reads_back_the_same(tmp_path):
    from mnist_ffn.experiments.spec import spec_toml

    spec = load_spec(spec_with(tmp_path, 'run_folder = "{values}"\npruner = "none"', "model.hidden = [[], [64]]"))
    copy = tmp_path / "copy.toml"
    copy.write_text(spec_toml(spec, "a copy"))
    assert load_spec(copy).fingerprint() == spec.fingerprint()


@pytest.mark.machine
def test_a_database_lost_mid_sweep_is_one_line_and_the_rerun_finishes_it_with_no_password_anywhere(
    tiny_data, tmp_path, postgres_server
):
    """pg_ctl stop -m immediate mid-sweep: one line naming the server, exit 1, every finished trial kept. The
    password given in the URL (the server trusts loopback, so any is accepted) is in no line and no file."""
    password = "s3cret-Pa55"
    url = postgres_server.url.replace("postgres@", f"postgres:{password}@")
    spec = write_spec(
        tmp_path, '[space]\nmodel.hidden = [[16], [24], [32]]\n[sweep]\nseeds = [0]\npruner = "none"\n', epochs=16
    )
    out = tmp_path / "sweep"
    args = ["sweep", spec, "--out", out, "--storage", url, "--data-dir", tiny_data, "--quiet"]
    process = start_forked(*args, new_session=True)  # its own process group, held still while the server stops
    deadline = time.monotonic() + 120
    while not any(out.glob("trials/*/summary.json")):
        assert process.poll() is None, finish_process(process)
        assert time.monotonic() < deadline, "no trial finished within 120 s"
        time.sleep(0.01)
    while True:  # each trial trains 16 epochs, each ending in a checkpoint: many looks while the second runs
        assert process.poll() is None, finish_process(process)
        assert time.monotonic() < deadline, "no second trial running within 120 s"
        os.killpg(process.pid, signal.SIGSTOP)  # still while it looks: what it sees is what the stop finds
        if _running_with_checkpoint(out):
            break
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.005)
    postgres_server.stop()
    os.killpg(process.pid, signal.SIGCONT)
    lost = finish_process(process, timeout=120)
    assert_one_line_error(lost, 1, f"lost the connection to the study's database at 127.0.0.1:{postgres_server.port}")
    finished = {path.parent.name: path.stat().st_mtime_ns for path in out.glob("trials/*/summary.json")}
    assert finished

    postgres_server.start()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    for name, stamp in finished.items():
        assert (out / "trials" / name / "summary.json").stat().st_mtime_ns == stamp, f"{name} was trained again"
    storage = optuna.storages.RDBStorage(postgres_server.url.replace("postgresql://", "postgresql+psycopg://"))
    done = complete_points(optuna.load_study(study_name="spec", storage=storage).get_trials())
    assert len(done) == 3 == len(set(done)), "every point once, none twice"

    assert json.loads((out / "sweep.json").read_text())["storage"] == postgres_server.url, "stored without it"
    assert password not in lost.stderr + rerun.stderr + rerun.stdout
    for path in out.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    with closed_port() as port:
        refused = run_cli(
            "sweep", spec, "--out", tmp_path / "b", "--storage", f"postgresql://me:{password}@127.0.0.1:{port}/none"
        )
    assert_one_line_error(refused, 1, "--storage postgresql://me@127.0.0.1:")
    assert password not in refused.stderr
