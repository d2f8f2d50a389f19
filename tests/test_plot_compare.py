"""`plot` and `compare`: curves, a confusion-matrix heatmap, and the activation comparison."""

import csv
import importlib.util
import json
import shutil
import sys

import pytest
from PIL import Image

from mnist_ffn.errors import MnistFfnError
from tests.helpers import TINY_FLAGS, assert_one_line_error, real_data_dir, run_cli

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="needs the plot extra (matplotlib)")


def assert_png(path, min_side=300):
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side


@needs_matplotlib
def test_plot_writes_curves_and_a_confusion_heatmap(tiny_run):
    result = run_cli("plot", tiny_run)
    assert result.returncode == 0, result.stderr
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert f"wrote {tiny_run / name}" in result.stdout
        assert_png(tiny_run / name)


def test_plot_without_matplotlib_says_how_to_install_it(tiny_run, monkeypatch):
    from mnist_ffn.cli.plots import plot_folder

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    with pytest.raises(MnistFfnError, match=r"pip install 'mnist-ffn\[plot\]'"):
        plot_folder(tiny_run)


def test_plot_of_a_folder_that_is_no_run(tmp_path):
    assert_one_line_error(run_cli("plot", tmp_path), 1, "not a run or compare folder")


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda run: (run / "metrics.csv").write_text("this,is\nnot,metrics\n"), "metrics.csv: damaged"),
        (lambda run: (run / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage"), "metrics.csv: damaged"),
        (lambda run: (run / "summary.json").write_text("{not json"), "summary.json: damaged"),
        (lambda run: (run / "summary.json").write_text('{"classes": 3}'), "summary.json: damaged"),
        (lambda run: (run / "loss.png").mkdir(), "loss.png: Is a directory"),
    ],
    ids=["metrics-columns", "metrics-bytes", "summary-json", "summary-keys", "output-is-a-folder"],
)
def test_plot_of_a_damaged_run_folder_is_one_line(tiny_run, damage, fragment):
    damage(tiny_run)
    assert_one_line_error(run_cli("plot", tiny_run), 1, fragment)


def test_plot_of_a_summary_with_a_broken_confusion_matrix(tiny_run):
    summary = json.loads((tiny_run / "summary.json").read_text())
    summary["test_confusion_matrix"] = [[1, 2], [3]]
    (tiny_run / "summary.json").write_text(json.dumps(summary))
    assert_one_line_error(run_cli("plot", tiny_run), 1, "test_confusion_matrix is not a 10x10 table")


@pytest.fixture
def small_comparison(tiny_data, tmp_path):
    out = tmp_path / "compare"
    args = ["compare", "--activations", "identity,relu", "--epochs", "2", "--data-dir", tiny_data, "--out", out,
            "--quiet", *TINY_FLAGS]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return out, args


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda out: (out / "compare.json").write_text("[]"), "compare.json: damaged"),
        (lambda out: (out / "compare.json").write_text('{"results": [{"activation": 3}]}'), "compare.json: damaged"),
        (lambda out: shutil.rmtree(out / "relu"), "relu/metrics.csv: missing"),
    ],
    ids=["not-a-table", "bad-row", "missing-trial-folder"],
)
def test_plot_of_a_damaged_compare_folder_is_one_line(small_comparison, damage, fragment):
    out, _ = small_comparison
    damage(out)
    assert_one_line_error(run_cli("plot", out), 1, fragment)


def test_an_interrupted_compare_is_continued_by_rerunning_it(small_comparison):
    out, args = small_comparison
    kept = (out / "identity" / "best.pt").stat().st_mtime_ns
    expected = json.loads((out / "compare.json").read_text())
    # as if killed after identity finished and relu's last epoch was saved, but before its summary
    (out / "compare.json").unlink()
    (out / "compare.csv").unlink()
    (out / "relu" / "summary.json").unlink()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert (out / "identity" / "best.pt").stat().st_mtime_ns == kept, "a finished run was trained again"
    results = json.loads((out / "compare.json").read_text())["results"]
    assert [row["activation"] for row in results] == ["identity", "relu"]
    for before, after in zip(expected["results"], results, strict=True):
        assert after["test_accuracy"] == before["test_accuracy"]


def test_a_compare_folder_of_another_config_is_refused_without_force(small_comparison):
    out, args = small_comparison
    before = (out / "relu" / "config.toml").read_text()
    changed = [arg if arg != "2" else "3" for arg in args]  # --epochs 3
    assert_one_line_error(run_cli(*changed), 2, "identity/ holds a run with another config", "--force")
    assert (out / "relu" / "config.toml").read_text() == before
    forced = run_cli(*changed, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads((out / "compare.json").read_text())["epochs"] == 3


def test_compare_trains_one_run_per_activation_and_writes_a_table(tiny_data, tmp_path):
    out = tmp_path / "compare"
    result = run_cli(
        "compare", "--activations", "identity,relu", "--epochs", "2", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS
    )
    assert result.returncode == 0, result.stderr
    assert "identity" in result.stdout and "relu" in result.stdout and "test accuracy" in result.stdout
    comparison = json.loads((out / "compare.json").read_text())
    assert [row["activation"] for row in comparison["results"]] == ["identity", "relu"]
    assert comparison["epochs"] == 2
    with open(out / "compare.csv") as file:
        rows = list(csv.DictReader(file))
    assert [row["activation"] for row in rows] == ["identity", "relu"]
    for activation in ("identity", "relu"):
        assert (out / activation / "summary.json").is_file()
        config = (out / activation / "config.toml").read_text()
        assert f'activation = "{activation}"' in config and "epochs = 2" in config
    if HAS_MATPLOTLIB:
        plotted = run_cli("plot", out)
        assert plotted.returncode == 0, plotted.stderr
        assert_png(out / "compare.png")


def test_compare_needs_no_optuna(tiny_data, tmp_path, monkeypatch):
    """The students' command runs on the core packages alone: the sweep extra made unimportable."""
    for module in ("optuna", "psycopg", "mnist_ffn.experiments.sweep", "mnist_ffn.experiments.storage"):
        monkeypatch.setitem(sys.modules, module, None)  # `import optuna` now raises ImportError
    out = tmp_path / "compare"
    result = run_cli("compare", "--activations", "identity,relu", "--epochs", "1", "--data-dir", tiny_data,
                     "--out", out, "--quiet", *TINY_FLAGS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads((out / "compare.json").read_text())["results"]
    assert [row["activation"] for row in rows] == ["identity", "relu"]
    for row in rows:
        summary = json.loads((out / row["activation"] / "summary.json").read_text())
        assert row["test_accuracy"] == summary["test_accuracy"]
    assert sorted(path.name for path in out.iterdir()) == ["compare.csv", "compare.json", "identity", "relu"]


def test_compare_json_output(tiny_data, tmp_path):
    result = run_cli(
        "compare", "--activations", "tanh", "--epochs", "1", "--data-dir", tiny_data, "--out", tmp_path / "c", "--json",
        *TINY_FLAGS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["activation"] == "tanh"


def test_compare_rejects_unknown_activations(tmp_path):
    assert_one_line_error(run_cli("compare", "--activations", "relu,wiggle"), 2, "wiggle", "choose from")


@pytest.mark.real_data
@pytest.mark.slow
def test_compare_reproduces_the_lesson_on_real_mnist(tmp_path):
    """Identity lands near a linear classifier, every non-linearity clearly above it.

    One hidden layer of 100 for 3 epochs keeps CI fast (6.5 s for the whole command; 2-core Xeon, seed 0:
    identity 91.59%, sigmoid 96.08%, tanh 97.36%, relu 97.84%); the README's tables hold the default network
    and budget and, from the sweep spec lesson, every depth with error bars.
    """
    out = tmp_path / "lesson"
    result = run_cli("compare", "--data-dir", real_data_dir(), "--out", out, "--quiet", "--epochs", "3",
                     "--set", "model.hidden=[100]")  # fmt: skip
    assert result.returncode == 0, result.stderr
    accuracy = {
        row["activation"]: row["test_accuracy"] for row in json.loads((out / "compare.json").read_text())["results"]
    }
    assert set(accuracy) == {"identity", "sigmoid", "tanh", "relu"}
    assert 0.90 <= accuracy["identity"] <= 0.935, accuracy
    for activation in ("sigmoid", "tanh", "relu"):
        assert accuracy[activation] >= accuracy["identity"] + 0.03, accuracy
