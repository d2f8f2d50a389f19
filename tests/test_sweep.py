"""`mnist-ffn sweep`: exactly-once grids over worker processes, TPE, pruning, kill -9 and Ctrl-C with resume, reports
and plots, and a sweep that survives what a run survives (damaged trial folders, full disks, missing data)."""

import csv
import json
import shutil
import statistics
import sys
import time

import pytest
import torch

from mnist_ffn.experiments.spec import load_spec
from tests.helpers import (
    assert_one_line_error,
    closed_port,
    finish_process,
    run_cli,
    start_forked,
)
from tests.sweeps import (
    GRID,
    TWO_POINTS,
    assert_finished_once,
    complete_points,
    group_alive,
    grow,
    interrupted_sweep,
    kill_9_with_every_running_trial_named,
    running_with_checkpoint,
    spec_with,
    stderr_lines,
    trials_of,
    write_spec,
)

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")


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
    while not any(out.glob("trials/*/summary.json")) or not running_with_checkpoint(out):
        assert process.poll() is None, finish_process(process)
        assert time.monotonic() < deadline, "no trial finished and another running within 120 s"
        time.sleep(0.05)
    interrupted = kill_9_with_every_running_trial_named(process.pid, out)  # the machine's share dies at once
    process.wait()
    while group_alive(process.pid):  # workers inside an fsync die when it returns
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
    for extra in (["--storage", "postgresql://me@127.0.0.1:1/x"], ["--study", "other"], ["--trials", "3"], [spec]):
        given = run_cli("sweep", "--report", tmp_path, *extra)  # a choice --report would ignore: refused, named
        assert_one_line_error(
            given, 2, "--report reads the sweep as it ran", f"drop {extra[0] if len(extra) > 1 else 'a spec'}"
        )
    assert_one_line_error(run_cli("sweep"), 2, "give a sweep spec")


def test_without_optuna_the_sweep_says_how_to_install_it(tmp_path, monkeypatch):

    spec = write_spec(tmp_path, GRID)
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert_one_line_error(run_cli("sweep", spec, "--out", tmp_path / "out"), 1, "pip install 'mnist-ffn[sweep]'")


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


def test_a_point_with_a_pruned_seed_is_listed_as_partial_below_every_whole_point(tmp_path):
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from mnist_ffn.experiments.results import collect_results

    spec = load_spec(spec_with(tmp_path, "seeds = [0, 1, 2]", "optim.lr = [0.1, 0.5]"))
    study = optuna.create_study(direction="maximize")
    distribution = {"optim.lr": CategoricalDistribution(["0.1", "0.5"])}
    for lr, seed, state, value in [(0.1, s, TrialState.COMPLETE, 0.90) for s in range(3)] + [
        (0.5, 0, TrialState.COMPLETE, 0.99),
        (0.5, 1, TrialState.PRUNED, None),
        (0.5, 2, TrialState.PRUNED, None),
    ]:
        attrs = {"point": {"optim.lr": lr}, "seed": seed, "run_folder": f"{lr}-{seed}", "test_accuracy": 0.9}
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"optim.lr": str(lr)},
                distributions=distribution,
                user_attrs={**attrs, "seconds": 1.0},
            )
        )
    rows = collect_results(study, spec)["points"]
    assert [(row["point"], row["complete"], row["seeds"]) for row in rows] == [
        ("lr=0.1", True, 3),
        ("lr=0.5", False, 1),
    ], "ranked by its one unpruned seed, lr=0.5 would come first"


def test_a_damaged_last_pt_fails_its_trial_with_the_reason_and_a_rerun_after_removing_it_finishes(tiny_data, tmp_path):
    args, out, stopped = interrupted_sweep(tiny_data, tmp_path)
    assert stopped.returncode == 130, stopped.stderr
    (saved,) = out.glob("trials/*/last.pt")
    saved.write_bytes(b"not a checkpoint any more")

    for _ in range(2):  # a rerun retries it, and says so again while the file is still damaged
        failed = run_cli(*args)
        assert failed.returncode == 1, failed.stderr
        lines = stderr_lines(failed.stderr)
        assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert str(saved) in lines[0] and "a rerun tries it again" in lines[0], lines
    saved.unlink()
    finished = run_cli(*args, "--json")
    assert finished.returncode == 0, finished.stderr
    assert_finished_once(out, 2)
    for row in json.loads(finished.stdout)["points"]:
        (folder,) = row["run_folders"]
        summary = json.loads((out / folder / "summary.json").read_text())
        assert row["seconds_mean"] == summary["wall_seconds"], "the whole training time, not the last process's"


def test_a_full_disk_fails_each_trial_with_its_reason_and_the_rerun_after_freeing_space_runs_them(
    tiny_data, tmp_path, small_disk
):
    # checkpoints of a 784-512-10 network take 3.2 MB, on a 1 MiB disk
    spec = write_spec(tmp_path, TWO_POINTS.replace("[[8], [12]]", "[[512], [400]]"), epochs=1)
    out = small_disk / "sweep"
    args = ["sweep", spec, "--out", out, "--data-dir", tiny_data, "--quiet"]
    full = run_cli(*args)
    assert full.returncode == 1, full.stderr
    lines = stderr_lines(full.stderr)
    assert len(lines) == 4 and "Traceback" not in full.stderr, full.stderr
    assert all("No space left on device" in line and "a rerun tries it again" in line for line in lines), lines
    grow(small_disk)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert_finished_once(out)


def test_data_that_every_trial_would_miss_is_one_line_before_anything_is_queued(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[base]\ndata.download = false\n\n[space]\nmodel.activation = ["identity", "relu"]\n\n'
                    "[sweep]\nseeds = [0, 1]\n")  # fmt: skip
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", tmp_path / "no-data")
    assert_one_line_error(result, 1, "MNIST not found", "no-data")
    assert not out.exists(), "nothing queued, nothing written"
