"""PNG plots of a run folder (loss, accuracy, confusion matrix; a 2-D set's boundary) or of a `compare` folder.

matplotlib is an optional extra (`pip install 'mnist-ffn[plot]'`): nothing else needs it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from mnist_ffn.cli.boundaries import is_plane_run, plot_boundaries, plot_boundary
from mnist_ffn.cli.figures import pyplot, save
from mnist_ffn.errors import DamagedFile, MnistFfnError, UsageError
from mnist_ffn.experiments.results import RESULTS_JSON
from mnist_ffn.training.run_folder import COMPARISON_FILE, RunFolder, gradient_layers, gradient_means


def plot_folder(folder: Path) -> list[Path]:
    """Write the plots for a run folder or a compare folder into it; returns the files written."""
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    if (folder / COMPARISON_FILE).is_file():
        written = [plot_comparison(folder)]
        rows = read_comparison(folder)
        if is_plane_run(RunFolder(folder / rows[0]["activation"])):
            written.append(plot_boundaries(folder, rows, pyplot()))
        return written
    if (folder / RESULTS_JSON).is_file():
        return [plot_sweep(folder)]
    run = RunFolder(folder)
    if not run.metrics.is_file():
        raise MnistFfnError(f"{folder}: no metrics.csv or {COMPARISON_FILE}: not a run or compare folder")
    written = plot_curves(run)
    if run.summary.is_file():
        written.append(plot_confusion(run))
    if is_plane_run(run):
        written += plot_boundary(run, pyplot())
    return written


def plot_curves(run: RunFolder) -> list[Path]:
    rows = run.read_metrics()
    plt = pyplot()
    epochs = [int(row["epoch"]) for row in rows]
    written = []
    for name, title, scale in (("loss", "Cross-entropy loss", 1.0), ("acc", "Accuracy (%)", 100.0)):
        figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        axes.plot(epochs, [row[f"train_{name}"] * scale for row in rows], marker="o", label="train")
        validation = [
            (epoch, row[f"val_{name}"]) for epoch, row in zip(epochs, rows, strict=True) if row[f"val_{name}"]
        ]
        if validation:
            axes.plot([e for e, _ in validation], [v * scale for _, v in validation], marker="o", label="validation")
        axes.set(xlabel="epoch", ylabel=title, title=f"{title} per epoch: {run.path.name}")
        if name == "loss":
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend()
        written.append(save(figure, run.path / ("loss.png" if name == "loss" else "accuracy.png")))
        plt.close(figure)
    layers = gradient_layers(rows)
    if layers:
        written.append(plot_gradients(run, rows, layers, plt))
    return written


def plot_gradients(run: RunFolder, rows: list[dict], layers: int, plt) -> Path:
    """Each layer's ||dL/dz|| and update-to-weight ratio per epoch, on log scales: the gradient flow."""
    epochs = [int(row["epoch"]) for row in rows]
    figure, (norms, ratios) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    colours = plt.cm.viridis([k / max(1, layers - 1) for k in range(layers)])
    for k in range(1, layers + 1):
        label = f"layer {k}" + (" (output)" if k == layers else " (lowest)" if k == 1 else "")
        for axes, key in ((norms, "grad_norm_"), (ratios, "update_ratio_")):
            points = [(e, row[f"{key}{k}"]) for e, row in zip(epochs, rows, strict=True) if row.get(f"{key}{k}")]
            axes.plot([e for e, _ in points], [v for _, v in points], marker="o", color=colours[k - 1], label=label)
    norms.set(xlabel="epoch", ylabel="||dL/dz||, mean over the epoch's steps", title="Gradient norm per layer")
    ratios.set(xlabel="epoch", ylabel="||W(end) - W(start)|| / ||W(start)||", title="Update-to-weight ratio per epoch")
    for axes in (norms, ratios):
        axes.set_yscale("log")
        axes.grid(alpha=0.3)
    norms.legend(fontsize=8)
    figure.suptitle(f"Gradient flow: {run.path.name}")
    figure.tight_layout()
    path = save(figure, run.path / "gradients.png")
    plt.close(figure)
    return path


def plot_confusion(run: RunFolder) -> Path:
    plt = pyplot()
    summary = run.read_summary()
    matrix, classes = summary["test_confusion_matrix"], summary["classes"]
    square = isinstance(classes, list) and isinstance(matrix, list) and len(matrix) == len(classes) > 0
    if not square or not all(
        isinstance(row, list) and len(row) == len(classes) and all(_is_count(count) for count in row) for row in matrix
    ):
        raise DamagedFile(f"{run.summary}: damaged: test_confusion_matrix is not a {len(classes)}x{len(classes)} table")
    figure, axes = plt.subplots(figsize=(7.5, 6.5), dpi=120)
    # Log-like colour scale: the diagonal holds ~1000 per class, the mistakes a handful.
    shown = [[count**0.5 for count in row] for row in matrix]
    image = axes.imshow(shown, cmap="Blues")
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            if count:
                dark = shown[row][column] > 0.6 * max(map(max, shown))
                axes.text(
                    column, row, str(count), ha="center", va="center", fontsize=7, color="white" if dark else "black"
                )
    ticks = range(len(classes))
    axes.set_xticks(ticks, classes, rotation=45 if len(max(classes, key=len)) > 2 else 0, ha="right")
    axes.set_yticks(ticks, classes)
    axes.set(
        xlabel="predicted class",
        ylabel="true class",
        title=f"Test confusion matrix: {summary['test_accuracy']:.2%} ({summary['test_checkpoint']})",
    )
    figure.colorbar(image, ax=axes, label="sqrt(count)")
    figure.tight_layout()
    path = save(figure, run.path / "confusion.png")
    plt.close(figure)
    return path


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_comparison(folder: Path) -> list[dict]:
    """compare.json's rows, checked: each names an activation with its test accuracy and its run folder."""
    path = folder / COMPARISON_FILE
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["results"]
        for row in rows:
            if not (isinstance(row["activation"], str) and isinstance(row["test_accuracy"], int | float)):
                raise ValueError("a row lacks its activation or test accuracy")
        if not rows:
            raise ValueError("no results")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path}: damaged, not the {COMPARISON_FILE} mnist-ffn writes ({exc})") from None
    return rows


def plot_comparison(folder: Path) -> Path:
    rows = read_comparison(folder)
    histories = {row["activation"]: RunFolder(folder / row["activation"]).read_metrics() for row in rows}
    plt = pyplot()
    layers = min(gradient_layers(history) for history in histories.values())
    panels = 3 if layers > 1 else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), dpi=120)
    bars, curves = axes[0], axes[1]
    names = [row["activation"] for row in rows]
    accuracies = [row["test_accuracy"] * 100 for row in rows]
    bars.bar(names, accuracies, color="tab:blue")
    for index, accuracy in enumerate(accuracies):
        bars.text(index, accuracy, f"{accuracy:.2f}", ha="center", va="bottom", fontsize=8)
    bars.set_ylim(min(accuracies) - 2, 100)
    bars.set(ylabel="test accuracy (%)", title="Same network and budget, one activation each")
    for row in rows:
        history = histories[row["activation"]]
        key = "val_acc" if history[0]["val_acc"] is not None else "train_acc"
        curves.plot([r["epoch"] for r in history], [r[key] * 100 for r in history], marker="o", label=row["activation"])
    curves.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves")
    curves.grid(alpha=0.3)
    curves.legend()
    if panels == 3:  # why some learn slowly: how much gradient reaches each layer
        flow = axes[2]
        for row in rows:
            history = histories[row["activation"]]
            means = [math.nan if mean is None else mean for mean in gradient_means(history)[:layers]]
            flow.plot(range(1, layers + 1), means, marker="o", label=row["activation"])
        flow.set_yscale("log")
        flow.set_xticks(range(1, layers + 1))
        flow.set(xlabel="layer (1: the lowest)", ylabel="||dL/dz||, mean over all epochs", title="Gradient per layer")
        flow.grid(alpha=0.3)
        flow.legend()
    figure.tight_layout()
    path = save(figure, folder / "compare.png")
    plt.close(figure)
    return path


def plot_sweep(folder: Path) -> Path:
    """Test accuracy (mean, with error bars of one standard deviation over seeds) against each swept key,
    one line for each combination of the other keys."""
    path = folder / RESULTS_JSON
    try:
        points = json.loads(path.read_text(encoding="utf-8"))["points"]
        keys = list(points[0]["params"])
        for point in points:
            if list(point["params"]) != keys or not isinstance(point["test_mean"], int | float):
                raise ValueError("points with different keys")
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path}: damaged, not the {RESULTS_JSON} mnist-ffn writes ({exc})") from None
    plt = pyplot()
    figure, axes_row = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2), dpi=120, squeeze=False)
    for key, axes in zip(keys, axes_row[0], strict=True):
        values = list(dict.fromkeys(json.dumps(point["params"][key]) for point in points))
        others = [other for other in keys if other != key]
        lines: dict[str, list] = {}
        for point in points:
            label = ", ".join(f"{other.rpartition('.')[2]}={json.dumps(point['params'][other])}" for other in others)
            lines.setdefault(label, []).append(point)
        for label, members in lines.items():
            members.sort(key=lambda point: values.index(json.dumps(point["params"][key])))
            axes.errorbar(
                [values.index(json.dumps(point["params"][key])) for point in members],
                [point["test_mean"] * 100 for point in members],
                yerr=[(point["test_std"] or 0) * 100 for point in members],
                marker="o",
                capsize=3,
                label=label or None,
            )
        axes.set_xticks(range(len(values)), values, rotation=30 if len(values) > 4 else 0)
        axes.set(xlabel=key, ylabel="test accuracy (%), mean ± std over seeds")
        axes.grid(alpha=0.3)
        if others:
            axes.legend(fontsize=7)
    figure.suptitle(f"Sweep {folder.name}")
    figure.tight_layout()
    saved = save(figure, folder / "sweep.png")
    plt.close(figure)
    return saved
