"""A person's CSV of points (data.points): read whole or refused whole, one line naming the file and the row for
anything wrong, found again from any folder, and never two files mixed in one command.

A run records its CSV by absolute path and its fingerprint (the SHA-256 of every byte): `eval`, `--resume`,
`plot`, `train --config` on its config.toml, a comparison and a sweep all find the file from any folder, and
refuse, with one line, a file that is no longer the one the run trained on.
"""

import json
import shutil

import pytest

import mnist_ffn
from mnist_ffn.config import load_config
from mnist_ffn.errors import PointsError
from tests.helpers import assert_one_line_error, run_cli

QUICK = ["--set", "train.epochs=3"]


def quadrants(count: int = 60, classes: int = 2, offset: int = 0) -> str:
    """`count` rows of x1,x2,label: a pattern a small network learns in a few epochs."""
    rows = []
    for index in range(count):
        x1, x2 = (index * 7 + offset) % 21 - 10, (index * 13 + offset) % 21 - 10
        rows.append(f"{x1},{x2},{(int(x1 > 0) + int(x2 > 0)) % classes}\n")
    return "".join(rows)


def test_a_csv_of_points_alone_selects_them_with_its_own_classes(tmp_path):
    csv = tmp_path / "mine.csv"
    rows = ["x1,x2,label"] + [f"{x},{y},{7 if x * y > 0 else 3}" for x in range(-10, 11) for y in range(-10, 11)]
    csv.write_text("\n".join(rows) + "\n")
    config = load_config(None, [f"data.points={csv}"])
    assert config.data.dataset == "points" and config.model.hidden == [16, 16]
    out = tmp_path / "run"
    result = run_cli("train", "--set", f"data.points={csv}", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == ["3", "7"] and summary["test_accuracy"] >= 0.85


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("1,2,0\n3,,1\n", ["row 2", "numbers"]),
        ("1,2,0\n3,four,1\n", ["row 2", "numbers"]),
        ("1,2,0\n3,4\n", ["row 2", "expected 3 values"]),
        ("1,2,0\n3,4,0\n", ["only label 0", "two classes"]),
        ("1,2,0\n3,4,1.5\n", ["row 2", "whole number"]),
        ("1,2,0\n3,inf,1\n", ["row 2", "finite"]),
        ("".join(f"{i},{i},{i}\n" for i in range(101)), ["101 different labels", "up to 100"]),
        ("x1,x2,label\n", ["no points"]),
        ("1,2,0\n" + "3," + "4" * 200_000 + ",1\n", ["row 2", "not a row of x1,x2,label", "field larger"]),
        ('1,2,0\n3,4,1\n5,"6,0\n', ["row 3", "expected 3 values"]),
        ("1,2,0\n3,4," + "9" * 5_000 + "\n", ["row 2", "whole number", "(5,002 characters)"]),
        ("1,2,0\n" + "x" * 3_000 + ",4,1\n", ["row 2", "numbers", "(3,002 characters)"]),
        ("1,2,0\n3,4," + "1" * 21 + "\n", ["row 2", "whole number"]),
    ],
    ids=[
        "missing",
        "not-a-number",
        "two-values",
        "one-class",
        "fraction",
        "infinite",
        "too-many-classes",
        "empty",
        "field-over-the-csv-limit",
        "unclosed-quote",
        "5000-digit-label",
        "3000-character-x1",
        "label-beyond-64-bits",
    ],
)
def test_a_bad_csv_is_one_line_naming_the_file_and_row_and_exit_2_before_anything_is_made(content, fragments, tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    out = tmp_path / "runs" / "a" / "b" / "run"
    result = run_cli("train", "--set", f"data.points={csv}", "--out", out)
    assert_one_line_error(result, 2, "bad.csv", *fragments)
    assert len(result.stderr) < 400, "what it quotes of the file is cut"
    assert not (tmp_path / "runs").exists(), "no folder made for a refused file, nor its parents"


def test_a_csv_is_read_whole_or_refused_whole_and_its_fingerprint_covers_every_byte(tmp_path, monkeypatch):
    """A class whose rows come last is trained on, not cut; a file one byte over the limit is refused, not cut;
    rows appended after training make `eval` refuse the file."""
    from mnist_ffn import points_csv as points

    monkeypatch.setattr(points, "MAX_CSV_BYTES", 4_000)
    csv = tmp_path / "late class.csv"
    rows = quadrants(120) + "".join(f"{x},{-x},9\n" for x in range(1, 11))  # class 9 only at the end
    assert len(rows.encode()) < 4_000
    csv.write_text(rows)
    out = tmp_path / "run"
    assert run_cli("train", "--set", f"data.points={csv}", *QUICK, "--out", out, "--quiet").returncode == 0
    assert json.loads((out / "summary.json").read_text())["classes"] == ["0", "1", "9"]
    with csv.open("a") as file:
        file.write("0.5,0.5,1\n")  # one row more: not the points it trained on
    assert_one_line_error(run_cli("eval", out / "best.pt"), 1, "late class.csv", "changed", "trained on")
    large = tmp_path / "large.csv"
    large.write_text(rows + "1,1,1\n" * ((4_001 - len(rows.encode())) // 6 + 1))
    assert_one_line_error(run_cli("train", "--set", f"data.points={large}", "--out", tmp_path / "r"), 2,
                          "large.csv", "larger than")  # fmt: skip
    assert not (tmp_path / "r").exists()


def test_a_csv_beyond_the_row_limit_is_refused(tmp_path, monkeypatch):
    from mnist_ffn import points_csv as points

    monkeypatch.setattr(points, "MAX_CSV_ROWS", 50)
    csv = tmp_path / "big.csv"
    csv.write_text("".join(f"{i},{i},{i % 2}\n" for i in range(60)))
    assert_one_line_error(run_cli("train", "--set", f"data.points={csv}", "--out", tmp_path / "r"), 2, "row 51", "50")


def test_a_small_csv_trains_and_a_validation_split_too_large_for_it_names_the_file_and_the_fix(tmp_path):
    """Unless train.val_size is given, a CSV holds out a tenth of its training points (a 10-point file: 5 to test,
    1 to validate, 4 to train); one given too large is refused naming the file and a value that fits."""
    csv = tmp_path / "ten.csv"
    csv.write_text(quadrants(10))
    out = tmp_path / "run"
    trained = run_cli("train", "--set", f"data.points={csv}", "--out", out, "--quiet", *QUICK)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["train_images"], summary["val_images"], summary["test_n"]) == (4, 1, 5)
    result = run_cli("train", "--set", f"data.points={csv}", "--set", "train.val_size=50", "--out", tmp_path / "r")
    assert_one_line_error(result, 1, "train.val_size = 50", "ten.csv", "5 for training", "--set train.val_size=0")
    assert not (tmp_path / "r").exists()


def test_a_relative_csv_is_found_again_from_any_folder(tmp_path, monkeypatch):
    """`--set data.points=FILE` is read from the folder it was typed in, a config file's from that file's folder;
    the run records the absolute path, so eval, --resume, plot and train --config work from anywhere."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    for folder in (here, elsewhere):
        folder.mkdir()
    (here / "points.csv").write_text(quadrants(80))
    (elsewhere / "points.csv").write_text(quadrants(80, offset=5))  # a file of the same name, other points
    monkeypatch.chdir(here)
    out = tmp_path / "run"
    assert run_cli("train", "--set", "data.points=points.csv", *QUICK, "--out", out, "--quiet").returncode == 0
    assert load_config(out / "config.toml").data.points == str(here / "points.csv")
    monkeypatch.chdir(elsewhere)
    evaluated = run_cli("eval", out / "best.pt", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == json.loads((out / "summary.json").read_text())["test_accuracy"]
    again = run_cli("train", "--config", out / "config.toml", "--out", tmp_path / "again", "--quiet")
    assert again.returncode == 0, again.stderr
    assert run_cli("train", "--resume", out, "--quiet").returncode == 0
    config = tmp_path / "conf" / "mine.toml"
    config.parent.mkdir()
    shutil.copy(here / "points.csv", config.parent / "beside.csv")
    config.write_text('[data]\npoints = "beside.csv"\n[train]\nepochs = 2\n')
    assert load_config(config).data.points == str(config.parent / "beside.csv")  # from the file's own folder


def test_a_comparison_never_mixes_two_files(tmp_path, monkeypatch):
    """Rerun from another folder (where data.points names another file) or after the file was edited: refused
    with one line, never "kept from an earlier run" with the old file's numbers beside the new file's."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, offset in ((first, 0), (second, 3)):
        folder.mkdir()
        (folder / "points.csv").write_text(quadrants(80, offset=offset))
    out = tmp_path / "compare"
    command = ["compare", "--activations", "identity,relu", "--set", "data.points=points.csv", "--epochs", "3",
               "--out", out, "--quiet"]  # fmt: skip
    monkeypatch.chdir(first)
    assert run_cli(*command).returncode == 0
    before = (out / "compare.json").read_text()
    monkeypatch.chdir(second)
    assert_one_line_error(run_cli(*command), 2, "holds a run with another config", "--force")
    monkeypatch.chdir(first)
    with (first / "points.csv").open("a") as file:
        file.write("1,1,1\n")  # the same path, other points
    assert_one_line_error(run_cli(*command), 1, "points.csv", "not the points", "trained on", "--force")
    assert (out / "compare.json").read_text() == before, "nothing of the comparison changed"
    replaced = run_cli(*command, "--force")
    assert replaced.returncode == 0, replaced.stderr


def test_a_sweep_reads_its_csv_from_the_specs_folder_and_never_mixes_two_files(tmp_path, monkeypatch):
    pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "points.csv").write_text(quadrants(80))
    spec = specs / "mine.toml"
    spec.write_text('[base]\ndata.points = "points.csv"\ntrain.epochs = 2\n\n[space]\nmodel.hidden = [[4], [8]]\n\n'
                    '[sweep]\nseeds = [0]\npruner = "none"\n')  # fmt: skip
    monkeypatch.chdir(tmp_path)  # not the spec's folder: data.points is read from the spec's, as `config =` is
    out = tmp_path / "sweep"
    first = run_cli("sweep", spec, "--out", out, "--quiet")
    assert first.returncode == 0, first.stderr
    trial = next((out / "trials").iterdir())
    assert load_config(trial / "config.toml").data.points == str(specs / "points.csv")
    with (specs / "points.csv").open("a") as file:
        file.write("1,1,1\n")
    assert_one_line_error(run_cli("sweep", spec, "--out", out, "--quiet"), 1, "points.csv", "has changed since")


def test_the_python_api_reads_a_csv_as_the_cli_does(tmp_path):
    csv = tmp_path / "wide.csv"
    csv.write_text("1,2,0\n3," + "4" * 200_000 + ",1\n")
    with pytest.raises(PointsError, match="row 2: not a row of x1,x2,label"):
        mnist_ffn.train(overrides={"data.points": csv}, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_test_share_that_leaves_nothing_to_train_on_says_so(tmp_path):
    csv = tmp_path / "three.csv"
    csv.write_text("1,1,0\n2,2,1\n3,3,0\n")
    result = run_cli("train", "--set", f"data.points={csv}", "--set", "data.test_share=0.9", "--out", tmp_path / "r")
    assert_one_line_error(result, 1, "data.test_share holds out 3 of the 3 points", "lower data.test_share")
    assert not (tmp_path / "r").exists()


def test_a_sweep_over_csvs_needs_a_base_that_is_one(tmp_path):
    """[space] data.points with a base of MNIST: every other key would take MNIST's defaults, not a CSV's."""
    pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
    for name in ("a", "b"):
        (tmp_path / f"{name}.csv").write_text(quadrants(60))
    spec = tmp_path / "csvs.toml"
    spec.write_text('[space]\ndata.points = ["a.csv", "b.csv"]\n[sweep]\nseeds = [0]\n')
    result = run_cli("sweep", spec, "--out", tmp_path / "s")
    assert_one_line_error(result, 2, "space.data.points", "set [base] data.points")
    spec.write_text('[base]\ndata.points = "a.csv"\ntrain.epochs = 2\n[space]\ndata.points = ["a.csv", "b.csv"]\n'
                    '[sweep]\nseeds = [0]\npruner = "none"\n')  # fmt: skip
    swept = run_cli("sweep", spec, "--out", tmp_path / "s", "--quiet")
    assert swept.returncode == 0, swept.stderr
