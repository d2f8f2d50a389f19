"""Presets and sweep specs by name: what the package ships, `mnist-ffn configs`, and the lookup rules.

Every file is read through the installed package (importlib.resources), as a wheel's user reads it;
the first test ties that to the repository's folders, so a file the build leaves out fails here.
"""

import re

import pytest

from mnist_ffn.config import load_config
from mnist_ffn.errors import ConfigError
from mnist_ffn.experiments.spec import load_spec
from mnist_ffn.presets import resolve, shipped
from tests.helpers import PROJECT_ROOT, assert_one_line_error, run_cli


@pytest.mark.parametrize(("kind", "folder"), [("preset", "configs"), ("sweep spec", "sweeps")])
def test_the_package_ships_every_file_of_its_folder_and_nothing_else(kind, folder):
    in_repository = sorted(path.stem for path in (PROJECT_ROOT / folder).glob("*.toml"))
    assert sorted(shipped(kind)) == in_repository
    for item in shipped(kind).values():
        assert item.path.read_bytes() == (PROJECT_ROOT / folder / f"{item.name}.toml").read_bytes()


def test_configs_lists_every_preset_and_spec_with_the_first_line_of_its_header():
    result = run_cli("configs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for kind in ("preset", "sweep spec"):
        for name, item in shipped(kind).items():
            first = next(line for line in item.path.read_text().splitlines() if line.strip("# "))
            summary = first.lstrip("# ").removeprefix(f"{name}: ")
            assert item.summary == summary and summary
            assert any(line.split() == [name, *summary.split()] for line in lines), (name, result.stdout)
    assert "%" in shipped("preset")["best"].summary, "the first line says what the preset reached"


@pytest.mark.parametrize("name", sorted(shipped("preset")))
def test_every_presets_header_states_its_seeds_accuracy_time_and_machine(name):
    """A preset is chosen by measurement: its header says what it reached, on which seeds, in how long, where."""
    header = shipped("preset")[name].path.read_text().split("\n\n")[0]
    measured = " ".join(line.lstrip("# ") for line in header.splitlines() if line.startswith("#"))
    assert re.search(r"\b\d{2}\.\d{1,2}%", measured), f"{name}: no accuracy in its header"
    assert re.search(r"\bseeds? \d", measured), f"{name}: no seed in its header"
    assert re.search(r"\b\d+(\.\d+)? (s|min)\b", measured), f"{name}: no time in its header"
    assert re.search(r"\b\d-core\b.*\b(CPU|GPU)\b", measured), f"{name}: no machine in its header"


def test_configs_show_prints_the_file():
    shown = run_cli("configs", "show", "smoke")
    assert shown.returncode == 0 and shown.stdout == shipped("preset")["smoke"].path.read_text()
    assert run_cli("configs", "show", "sweeps/lesson").stdout == shipped("sweep spec")["lesson"].path.read_text()
    assert run_cli("configs", "show", "configs/fashion.toml").stdout == shipped("preset")["fashion"].path.read_text()
    assert_one_line_error(run_cli("configs", "show", "bets"), 2, "bets", "did you mean best?")


def test_every_name_that_configs_lists_works_wherever_the_readme_shows_a_name(tmp_path):
    """No preset shares a name with a sweep spec, so each name `mnist-ffn configs` lists is one file: `configs show
    NAME`, `configs copy NAME FILE` and `train --config NAME` or `sweep NAME` all take it as it is."""
    presets, specs = shipped("preset"), shipped("sweep spec")
    assert not set(presets) & set(specs), "a preset and a sweep spec share a name"
    listed = run_cli("configs").stdout
    for name, item in {**presets, **specs}.items():
        assert f"  {name} " in listed, name
        shown = run_cli("configs", "show", name)
        assert shown.returncode == 0 and shown.stdout == item.path.read_text(), (name, shown.stderr)
        copied = run_cli("configs", "copy", name, tmp_path / f"{name}-copy.toml")
        assert copied.returncode == 0 and (tmp_path / f"{name}-copy.toml").read_bytes() == item.path.read_bytes()
        command = "train --config" if item.kind == "preset" else "sweep"
        assert f"mnist-ffn {command} {tmp_path / f'{name}-copy.toml'}" in copied.stdout, copied.stdout


def test_configs_copy_writes_a_file_to_edit_and_never_overwrites_without_force(tmp_path):
    copied = run_cli("configs", "copy", "configs/best", tmp_path)  # a folder: the file keeps its name
    assert copied.returncode == 0, copied.stderr
    target = tmp_path / "best.toml"
    assert target.read_bytes() == shipped("preset")["best"].path.read_bytes()
    assert f"mnist-ffn train --config {target}" in copied.stdout
    target.write_text("# mine\n")
    assert_one_line_error(run_cli("configs", "copy", "configs/best", tmp_path), 2, "exists", "--force")
    assert_one_line_error(run_cli("configs", "copy", "smoke", target), 2, "exists", "--force")
    assert target.read_text() == "# mine\n", "an existing file is left alone"
    assert run_cli("configs", "copy", "smoke", target, "--force").returncode == 0
    assert target.read_bytes() == shipped("preset")["smoke"].path.read_bytes()
    spec = tmp_path / "my sweep.toml"
    copied = run_cli("configs", "copy", "sweeps/lesson", spec)
    assert copied.returncode == 0 and "mnist-ffn sweep 'my sweep.toml'" in copied.stdout.replace(
        str(tmp_path) + "/", ""
    )
    assert_one_line_error(run_cli("configs", "copy", "lesson", tmp_path / "no" / "x.toml"), 2, "no such folder")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.toml", "my sweep.toml"], "no temp files"


def test_a_path_that_exists_wins_over_a_name_and_a_bare_name_finds_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("best", "preset", option="--config") == shipped("preset")["best"].path
    assert resolve("best.toml", "preset", option="--config") == shipped("preset")["best"].path
    (tmp_path / "smoke").mkdir()  # a run folder named like a preset does not hide the preset
    assert resolve("smoke", "preset", option="--config") == shipped("preset")["smoke"].path
    (tmp_path / "best").write_text("[train]\nepochs = 1\n")
    assert load_config(resolve("best", "preset", option="--config")).train.epochs == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--config", "bets"], ["--config bets", "presets: best, default", "did you mean best?"]),
        (["train", "--config", "configs/nothing.toml"], ["--config configs/nothing.toml: config file not found"]),
        (["sweep", "./lesson"], ["./lesson: sweep spec not found"]),
        (["compare", "--config", "smok"], ["did you mean smoke?"]),
        (
            ["sweep", "lesso"],
            ["lesso", "sweep specs: lesson, tune-best, tune-default, tune-fashion, tune-fast", "did you mean lesson?"],
        ),
    ],
)
def test_an_unknown_name_is_one_line_with_the_names(args, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli(*args), 2, *expected)
    assert list(tmp_path.iterdir()) == [], "nothing is written"


def test_a_spec_anywhere_names_its_base_by_preset_or_by_a_path_beside_it(tmp_path):
    spec = tmp_path / "mine.toml"
    spec.write_text('[base]\nconfig = "smoke"\n\n[space]\noptim.lr = [0.1]\n')
    assert load_spec(spec).base == load_config(shipped("preset")["smoke"].path)
    spec.write_text('[base]\nconfig = "smoke.toml"\n\n[space]\noptim.lr = [0.1]\n')
    assert load_spec(spec).base == load_config(shipped("preset")["smoke"].path)
    (tmp_path / "smoke.toml").write_text("[train]\nepochs = 1\nval_size = 100\n")  # beside the spec: the file wins
    assert load_spec(spec).base.train.epochs == 1
    spec.write_text('[base]\nconfig = "smoky"\n\n[space]\noptim.lr = [0.1]\n')
    with pytest.raises(ConfigError, match="did you mean smoke"):
        load_spec(spec)


def test_sweep_set_overrides_the_base_the_settings_and_the_space():
    lesson = shipped("sweep spec")["lesson"].path
    spec = load_spec(lesson, ["train.epochs=1", "sweep.seeds=[0]", 'space.model.activation=["relu"]'])
    assert spec.base.train.epochs == 1 and spec.seeds == [0]
    assert len(spec.grid()) == 4  # one activation x the file's four depths
    with pytest.raises(ConfigError) as raised:
        load_spec(lesson, ["train.epoch=1", "sweep.seed=[0]", "space.optim.nope=[1]", "nodot=1"])
    problems = " ".join(raised.value.problems)
    for fragment in ("epoch", "sweep.seed", "optim.nope", "nodot"):
        assert fragment in problems, problems


def test_configs_copy_into_a_folder_that_is_not_there_writes_nothing(tmp_path, monkeypatch):
    """`configs copy NAME newdir/` names a folder: a missing one is refused, never written as a file `newdir`."""
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli("configs", "copy", "smoke", "newdir/"), 2, "newdir/: no such folder")
    assert not (tmp_path / "newdir").exists()
    (tmp_path / "newdir").mkdir()
    copied = run_cli("configs", "copy", "smoke", "newdir/")
    assert copied.returncode == 0 and (tmp_path / "newdir" / "smoke.toml").is_file()


def test_configs_copy_writes_a_file_only_and_quotes_a_name_short(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli("configs", "copy", "smoke", "newdir/."), 2, "no such folder")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_one_line_error(run_cli("configs", "copy", "smoke", fifo, "--force"), 2, "not a regular file")
    assert fifo.is_fifo() and sorted(path.name for path in tmp_path.iterdir()) == ["pipe"]
    long = run_cli("configs", "show", "a" * 100_000)
    assert_one_line_error(long, 2, "no preset or sweep spec of that name")
    assert len(long.stderr) < 300
