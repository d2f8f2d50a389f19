"""`mnist-ffn plot`: curves, a confusion-matrix heatmap, a comparison's and a sweep's figures; a damaged folder is one
line."""

import json
import shutil
import sys

import pytest

from mnist_ffn.errors import MnistFfnError
from tests.helpers import assert_one_line_error, assert_png, needs_matplotlib, run_cli


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
