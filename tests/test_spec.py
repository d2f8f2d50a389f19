"""A sweep spec (experiments/spec.py): checked whole, every problem at once, before anything runs; the shipped
ones valid; run folders that cannot mix two trials; written out, read back the same."""

import json

import pytest

from mnist_ffn.errors import ConfigError
from mnist_ffn.experiments.spec import load_spec
from mnist_ffn.presets import shipped
from tests.helpers import (
    assert_one_line_error,
    run_cli,
)
from tests.sweeps import (
    spec_with,
    write_spec,
)

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")


SPECS = [item.path for item in shipped("sweep spec").values()]  # read from the installed package


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
