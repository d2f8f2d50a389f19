"""A sweep survives what a run survives: damaged journals and records, full disks, damaged files in trial folders,
labels that could collide, grids too big to queue. Each fault is one line, and the same command then finishes the
sweep with every point x seed once."""

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mnist_ffn.experiments.spec import load_spec
from tests.helpers import assert_one_line_error, finish_process, run_cli, start_forked
from tests.test_sweep import complete_points, interrupted_sweep, spec_with, trials_of, write_spec

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")

TWO_POINTS = '[space]\nmodel.hidden = [[8], [12]]\n[sweep]\nseeds = [0, 1]\npruner = "none"\n'


def stamps(out: Path) -> dict[str, int]:
    return {path.parent.name: path.stat().st_mtime_ns for path in out.glob("trials/*/best.pt")}


def stderr_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def finished_sweep(tiny_template, tmp_path_factory):
    """A finished 2-point x 2-seed sweep; each test damages its own copy."""
    folder = tmp_path_factory.mktemp("finished-sweep")
    data = shutil.copytree(tiny_template[0], folder / "data")
    spec = write_spec(folder, TWO_POINTS, epochs=1)
    result = run_cli("sweep", spec, "--out", folder / "sweep", "--data-dir", data, "--quiet")
    assert result.returncode == 0, result.stderr
    return folder


@pytest.fixture
def sweep_copy(finished_sweep, tmp_path):
    """(the command's arguments, its out folder) for this test's own copy of the finished sweep."""
    folder = shutil.copytree(finished_sweep, tmp_path / "copy")
    out = folder / "sweep"
    return ["sweep", folder / "spec.toml", "--out", out, "--data-dir", folder / "data", "--quiet"], out


def assert_finished_once(out: Path, count: int = 4) -> None:
    done = complete_points(trials_of(out))
    assert len(done) == count == len(set(done)), done


# -- a damaged journal or record ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda content: content[:-25], id="truncated-mid-line"),
        pytest.param(lambda content: content + b'{"op_code": 5, "wor\x00\xff garbage\n', id="garbage-at-the-end"),
        pytest.param(lambda content: bytes(range(256)) * 8, id="not-text-at-all"),
    ],
)
def test_a_damaged_journal_is_one_line_and_the_same_command_goes_on_keeping_every_finished_run(sweep_copy, damage):
    args, out = sweep_copy
    journal = out / "journal.log"
    content = journal.read_bytes()
    damaged = damage(content)
    journal.write_bytes(damaged)
    before = stamps(out)

    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    lines = stderr_lines(result.stderr)
    assert len(lines) == 1 and "journal.log: its last" in lines[0] and "set aside in" in lines[0], result.stderr
    aside = Path(lines[0].split("set aside in ")[1].split(", and")[0])
    tail = aside.read_bytes()
    valid = damaged[: len(damaged) - len(tail)]
    assert valid + tail == damaged and tail, "the damaged tail set aside whole"
    assert journal.read_bytes().startswith(valid), "the valid records kept (the rerun appends after them)"
    assert stamps(out) == before, "no finished trial was trained again"
    assert_finished_once(out)
    report = run_cli("sweep", "--report", out, "--json")
    assert report.returncode == 0 and report.stderr == "", report.stderr
    assert [row["seeds"] for row in json.loads(report.stdout)["points"]] == [2, 2]


def test_a_deleted_journal_or_damaged_record_is_one_line_and_the_sweep_goes_on(sweep_copy):
    args, out = sweep_copy
    before = stamps(out)
    (out / "journal.log").unlink()
    missing = run_cli(*args)
    assert missing.returncode == 0, missing.stderr
    assert len(stderr_lines(missing.stderr)) == 1 and "journal.log: missing" in missing.stderr, missing.stderr
    assert stamps(out) == before, "the study was made anew, and found every run folder finished"
    assert_finished_once(out)

    record = out / "sweep.json"
    for damaged in ("[1, 2]", '{"study": "spec"}', "{not json"):
        record.write_text(damaged)
        assert_one_line_error(run_cli("sweep", "--report", out), 1, "sweep.json: damaged")
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr
        assert len(stderr_lines(again.stderr)) == 1 and "sweep.json: damaged" in again.stderr, again.stderr
        assert json.loads(record.read_text())["study"] == "spec", "rewritten"
    assert stamps(out) == before

    held = json.loads(record.read_text())
    held["study"] = "another"
    record.write_text(json.dumps(held))
    assert_one_line_error(run_cli(*args), 2, "holds another sweep (study another)")


def test_report_needs_nothing_outside_the_sweep_folder(sweep_copy):
    args, out = sweep_copy
    Path(args[1]).unlink()  # the spec the sweep was started from
    report = run_cli("sweep", "--report", out, "--json")
    assert report.returncode == 0, report.stderr
    assert len(json.loads(report.stdout)["points"]) == 2


# -- labels, sizes, ranking --------------------------------------------------------------------------------------


def test_values_that_round_alike_get_labels_and_folders_of_their_own(tiny_data, tmp_path):
    spec = write_spec(
        tmp_path, '[space]\noptim.lr = [0.1, 0.1001]\n[sweep]\nrun_folder = "{values}"\npruner = "none"\n'
    )
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", tiny_data, "--json")
    assert result.returncode == 0, result.stderr
    points = {row["point"] for row in json.loads(result.stdout)["points"]}
    assert points == {"lr=0.1", "lr=0.1001"}
    for folder, lr in (("0.1", 0.1), ("0.1001", 0.1001)):
        assert f"lr = {lr}\n" in (out / folder / "config.toml").read_text(), "each point trained with its own value"

    wide = ", ".join(["9"] * 39)  # labels of 90 characters that differ only in their last: cut, they would agree
    long = load_spec(spec_with(tmp_path, 'run_folder = "{values}"', f"model.hidden = [[{wide}, 9], [{wide}, 8]]"))
    folders = [long.trial_folder(number, point, 0) for number, point in enumerate(long.grid())]
    assert len(set(folders)) == 2 and all(len(folder) < 100 for folder in folders), folders


def test_a_grid_too_big_to_queue_is_refused_before_anything_is_written(tmp_path):
    values = ", ".join(str(index / 1000) for index in range(1, 1000))
    huge = spec_with(tmp_path, "seeds = [0]", f"optim.lr = [{values}, 1.0]\ntrain.label_smoothing = [0.0, {values}]")
    result = run_cli("sweep", huge, "--out", tmp_path / "out")
    assert_one_line_error(result, 2, "1,000,000 grid points x 1 seeds = 1,000,000 trials", "at most 10,000")
    assert not (tmp_path / "out").exists()
    tpe = spec_with(tmp_path, f'sampler = "tpe"\ntrials = {10**20}', "optim.lr = { low = 0.01, high = 0.1 }")
    assert_one_line_error(run_cli("sweep", tpe, "--out", tmp_path / "out"), 2, "trials; a sweep runs at most")
    small = spec_with(tmp_path, 'sampler = "tpe"\ntrials = 2', "optim.lr = { low = 0.01, high = 0.1 }")
    assert_one_line_error(run_cli("sweep", small, "--trials", "20000", "--out", tmp_path / "out"), 2, "--trials 20000")
    assert not (tmp_path / "out").exists()


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


# -- trials that fail for a reason outside their config ---------------------------------------------------------


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


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB mounted for the test (root only): a disk that fills up, and is then made larger."""
    if os.geteuid() != 0:
        message = "mounting a tmpfs needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI runs as root")
        pytest.skip(message)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def grow(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", mount], check=True)


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


def test_a_disk_that_fills_while_the_study_is_queued_is_one_line_and_the_rerun_finishes(
    tiny_data, tmp_path, small_disk
):
    filler = small_disk / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as file:
        while True:
            file.write(b"\0" * 4096)
            file.flush()
    filler.write_bytes(b"\0" * (filler.stat().st_size - 3 * 4096))  # sweep.json, spec.toml, and one journal page
    space = "[space]\nmodel.hidden = [[8], [9], [10], [11], [12], [13]]\n[sweep]\nseeds = [0, 1, 2]\npruner = 'none'\n"
    spec = write_spec(tmp_path, space, 1)
    out = small_disk / "sweep"
    args = ["sweep", spec, "--out", out, "--data-dir", tiny_data, "--quiet"]
    full = finish_process(start_forked(*args), timeout=120)  # its own process: it dies as the queue's creator
    assert_one_line_error(full, 1, "cannot write the study's journal", "No space left on device")
    filler.unlink()
    grow(small_disk)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert len(stderr_lines(rerun.stderr)) <= 1, rerun.stderr  # the journal's cut line, if the write stopped mid-line
    assert_finished_once(out, 18)


def test_data_that_every_trial_would_miss_is_one_line_before_anything_is_queued(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('[base]\ndata.download = false\n\n[space]\nmodel.activation = ["identity", "relu"]\n\n'
                    "[sweep]\nseeds = [0, 1]\n")  # fmt: skip
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", tmp_path / "no-data")
    assert_one_line_error(result, 1, "MNIST not found", "no-data")
    assert not out.exists(), "nothing queued, nothing written"
