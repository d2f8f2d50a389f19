"""What people read in a terminal: rich tables for summaries, evaluations, predictions, comparisons, sweeps, and
the commands to paste after them."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mnist_ffn.catalog import DATASETS
from mnist_ffn.quoting import command_line

console = Console()


TITLES = {info.title for info in DATASETS.values()}


def _unit(dataset: str) -> str:
    """What a data set's items are called: images, or a 2-D set's points (`dataset` is a name or a title)."""
    return "images" if dataset in DATASETS or dataset in TITLES else "points"


def print_train_summary(summary: dict, run_dir: Path) -> None:
    table = Table(title="Run summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long run folder is shown whole, on several lines, never cut
    memory = summary.get("peak_memory_bytes")
    rows = [
        (
            "test accuracy",
            f"{summary['test_accuracy']:.2%}  ({summary['test_checkpoint']}, "
            f"{summary['test_n']:,} {_unit(summary['dataset'])})",
        ),
        ("test loss", f"{summary['test_loss']:.4f}"),
        (
            "best epoch",
            f"{summary['best_epoch']} of {summary['epochs']}  (val accuracy {_percent(summary['best_val_accuracy'])})",
        ),
        ("model", f"{summary['architecture']}, {summary['parameters']:,} parameters"),
        (
            "data",
            f"{summary['dataset']}: {summary['train_images']:,} train / {summary['val_images']:,} val "
            f"{_unit(summary['dataset'])}",
        ),
        (
            "speed",
            f"{summary['train_samples_per_second']:,.0f} training samples/s "
            f"on {summary['device']} ({summary['device_name']})",
        ),
        ("time", f"{summary['wall_seconds']:.1f} s training, best after {summary['time_to_best_seconds']:.1f} s"),
        ("peak memory", f"{memory / 2**20:,.0f} MiB ({summary['peak_memory_kind']})" if memory else "unknown"),
        ("run folder", str(run_dir)),
    ]
    for name, value in rows:
        table.add_row(name, escape(value))
    console.print(table)


def print_evaluation(report: dict) -> None:
    classes = report["classes"]
    console.print(
        f"[bold]{escape(report['checkpoint'])}[/bold] on the {report['split']} split of {report['dataset']} "
        f"({report['n']:,} {_unit(report['dataset'])}, {report['architecture']})"
    )
    console.print(f"accuracy [bold]{report['accuracy']:.2%}[/bold]   loss {report['loss']:.4f}")
    per_class = Table(title="Per-class accuracy", title_justify="left")
    per_class.add_column("class")
    per_class.add_column(_unit(report["dataset"]), justify="right")
    per_class.add_column("accuracy", justify="right")
    for name, row, accuracy in zip(classes, report["confusion_matrix"], report["per_class_accuracy"], strict=True):
        per_class.add_row(name, f"{sum(row):,}", f"{accuracy:.2%}")
    console.print(per_class)
    console.print(confusion_table(report["confusion_matrix"], classes))


def print_predictions(report: dict) -> None:
    table = Table(
        title=f"Predictions of {escape(report['checkpoint'])} ({report['dataset_title']})", title_justify="left"
    )
    table.add_column("image", overflow="fold")
    for rank in ("best", "second", "third"):
        table.add_column(rank)
    for prediction in report["predictions"]:
        if "error" in prediction:
            table.add_row(escape(prediction["image"]), f"[red]error: {escape(prediction['error'])}[/red]", "", "")
            continue
        cells = [f"{guess['class']}  {guess['probability']:.1%}" for guess in prediction["top"]]
        cells[0] = f"[bold]{cells[0]}[/bold]"
        table.add_row(escape(prediction["image"]), *cells)
    console.print(table)


def print_comparison(comparison: dict, folder: Path) -> None:
    table = Table(
        title=f"Activations compared: {comparison['architecture']}, {comparison['epochs']} epochs, "
        f"{comparison['dataset']}",
        title_justify="left",
        caption=f"written to {escape(str(folder))}/compare.csv and compare.json",
        caption_justify="left",
    )
    for column, justify in (
        ("activation", "left"),
        ("test accuracy", "right"),
        ("final train loss", "right"),
        ("gradient, lowest / top layer", "right"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify)
    best = max(row["test_accuracy"] for row in comparison["results"])
    for row in comparison["results"]:
        accuracy = f"{row['test_accuracy']:.2%}"
        ratio = row.get("gradient_lowest_over_top")  # None: no hidden layer, or a comparison from before
        table.add_row(
            row["activation"],
            f"[bold green]{accuracy}[/]" if row["test_accuracy"] == best else accuracy,
            f"{row['final_train_loss']:.4f}",
            "-" if ratio is None else f"{ratio:.2g}",
            f"{row['seconds']:.1f}",
        )
    console.print(table)
    print_command("plot with:", "mnist-ffn", "plot", folder)


def print_sweep(results: dict, folder: Path) -> None:
    """One row per point of the space: mean +- std over its seeds, best validation accuracy first, then the
    points some of whose seeds were pruned, failed or have not run."""
    counts = ", ".join(f"{count} {state.lower()}" for state, count in results["trials"].items())
    table = Table(
        title=f"Sweep {escape(results['study'])} ({results['sampler']}, seeds {results['seeds']}): {counts}",
        title_justify="left",
        caption=f"written to {escape(str(folder))}/results.csv",
        caption_justify="left",
    )
    for column, justify in (
        ("point", "left"),
        ("seeds", "right"),
        ("val accuracy", "right"),
        ("test accuracy", "right"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")
    for row in results["points"]:
        partial = not row.get("complete", True)  # a point ranks once each of its seeds has finished
        table.add_row(
            escape(row["point"]) + (" [dim](partial: not ranked)[/dim]" if partial else ""),
            f"{row['seeds']} of {len(results['seeds'])}" if partial else str(row["seeds"]),
            f"{row['val_mean']:.2%} ± {row['val_std']:.2%}",
            f"{row['test_mean']:.2%} ± {row['test_std']:.2%}",
            f"{row['seconds_mean']:.1f}",
        )
    console.print(table)
    for name, importance in results.get("importances", {}).items():
        console.print(f"importance of {name}: {importance:.2f}")
    print_command("plot with:", "mnist-ffn", "plot", folder)


def print_shipped(presets: dict, specs: dict) -> None:
    """`mnist-ffn configs`: each shipped file with its header's first line, one per line (never wrapped:
    a name must stay on the line that describes it)."""
    width = max(len(name) for name in [*presets, *specs])
    for title, items in (
        ("Presets (mnist-ffn train --config NAME)", presets),
        ("Sweep specs (mnist-ffn sweep NAME)", specs),
    ):
        print(title)
        for name, item in items.items():
            print(f"  {name:<{width}}  {item.summary}")
    print("Show one: mnist-ffn configs show NAME    Copy one to edit: mnist-ffn configs copy NAME FILE")


def print_command(lead: str, *arguments: object) -> None:
    """A command to paste, on a line of its own and quoted for the shell: a table's caption would wrap it."""
    print(f"{lead} {command_line(*arguments)}")


def confusion_table(matrix: list[list[int]], classes: list[str]) -> Table:
    table = Table(
        title="Confusion matrix (rows: true class, columns: predicted)",
        title_justify="left",
        caption=None if classes == [str(i) for i in range(len(classes))] else _legend(classes),
        caption_justify="left",
    )
    table.add_column("true", style="bold")
    for index in range(len(classes)):
        table.add_column(str(index), justify="right")
    for index, (name, row) in enumerate(zip(classes, matrix, strict=True)):
        cells = [
            f"[bold green]{count}[/]" if column == index else (f"[red]{count}[/]" if count else "[dim]0[/]")
            for column, count in enumerate(row)
        ]
        label = name if name == str(index) else f"{index} {name}"
        table.add_row(label, *cells)
    return table


def _legend(classes: list[str]) -> str:
    return "columns: " + ", ".join(f"{index} {name}" for index, name in enumerate(classes))


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2%}"
