"""The lesson, measured: train one architecture and budget once per activation and compare.

Without an activation (identity) the stacked layers collapse into one linear map and land
near a linear classifier; every non-linear activation should clear it.

Each activation's run is an ordinary run folder OUT/<activation>/, trained one after another in this
process by `train_into`, the sweep's own rule: rerunning the same command continues an interrupted
comparison (finished runs are kept, interrupted ones resumed from their last.pt), and compare.json is
written once all are done. No Optuna: this is the students' command, and needs only the core packages.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

from mnist_ffn.catalog import POINTS
from mnist_ffn.config import ACTIVATIONS, Config, activation_function, same_but_threads
from mnist_ffn.errors import ConfigError, TrainingInterrupted, UsageError
from mnist_ffn.experiments.run_once import check_trained_on, train_into
from mnist_ffn.files import write_text_atomically
from mnist_ffn.points_csv import file_digest
from mnist_ffn.training.run_folder import COMPARISON_FILE, RunFolder, gradient_means

COLUMNS = (
    "activation", "test_accuracy", "test_loss", "final_train_loss", "best_val_accuracy", "seconds",
    "gradient_lowest_over_top",
)  # fmt: skip


def parse_activations(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ACTIVATIONS]
    if unknown or not names:
        raise ConfigError(
            [f"--activations: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(ACTIVATIONS)}"]
        )
    seen: dict[str, str] = {}
    for name in names:
        same = activation_function(name)
        if same in seen:
            twice = name if seen[same] == name else f"{seen[same]} and {name} (the same function)"
            raise ConfigError([f"--activations: {twice} listed twice; each activation is trained once"])
        seen[same] = name
    return names


def compare(
    base: Config,
    activations: list[str],
    *,
    data_dir: Path,
    out: Path,
    device: str = "auto",
    force: bool = False,
    log=print,
    progress_bars: bool = True,
) -> dict:
    configs = {
        activation: dataclasses.replace(base, model=dataclasses.replace(base.model, activation=activation))
        for activation in activations
    }
    if base.train.val_size == 0:
        raise ConfigError(["train.val_size: compare reports each run's validation accuracy; must be > 0"])
    # every activation on the same points: the file as it is now, held to its fingerprint run by run
    digest = file_digest(Path(base.data.points)) if base.data.dataset == POINTS else ""
    results = []
    with RunFolder(out).locked("--out"):
        # every folder is judged before any is touched, so a folder of another comparison is refused whole
        replace = [
            activation
            for activation, config in configs.items()
            if _must_replace(out, activation, config, force, digest)
        ]
        for activation in replace:  # --force: start that run anew; train_into keeps or resumes the others
            for path in RunFolder(out / activation).run_files():
                path.unlink(missing_ok=True)
        for activation, config in configs.items():
            folder = out / activation
            try:
                trained = train_into(
                    folder, config, data_dir=data_dir, device=device, progress_bars=progress_bars,
                    points_digest=digest, another_file="restore it, or replace the comparison with --force",
                )  # fmt: skip
            except TrainingInterrupted as exc:  # the comparison goes on where it stopped, not this one run
                message = f"{exc.stopped}; rerun the same command to continue the comparison"
                raise TrainingInterrupted(message, exc.signal_number) from None
            summary = trained.summary
            row = {
                "activation": activation,
                "test_accuracy": summary["test_accuracy"],
                "test_loss": summary["test_loss"],
                "final_train_loss": summary["final_train_loss"],
                "best_val_accuracy": summary["best_val_accuracy"],
                "seconds": summary["wall_seconds"],
                "gradient_lowest_over_top": lowest_over_top(RunFolder(folder).read_metrics()),
            }
            results.append(row)
            if log:
                kept = " (kept from an earlier run)" if trained.how == "kept" else ""
                log(
                    f"{activation:>10}: test accuracy {row['test_accuracy']:.2%}, "
                    f"final train loss {row['final_train_loss']:.4f}, {row['seconds']:.1f} s{kept}"
                )
        comparison = {
            "dataset": base.data.dataset,
            "hidden": base.model.hidden,
            "architecture": _widths(summary["architecture"], base.model.hidden),  # the same widths in every run
            "epochs": base.train.epochs,
            "seed": base.train.seed,
            "results": results,
        }
        write_text_atomically(out / COMPARISON_FILE, json.dumps(comparison, indent=2, allow_nan=False) + "\n")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(results)
        write_text_atomically(out / "compare.csv", buffer.getvalue())
    return comparison


def lowest_over_top(rows: list[dict]) -> float | None:
    """How much of the output layer's gradient reaches the lowest layer: the mean over all epochs of ||dL/dz_1||
    over that of ||dL/dz_L||. Far below 1 where the activation's f'(z) shrinks the gradient at every layer (sigmoid's
    is at most 1/4); None without hidden layers or without recorded norms."""
    means = gradient_means(rows)
    if len(means) < 2 or means[0] is None or not means[-1]:
        return None
    return means[0] / means[-1]


def _must_replace(out: Path, activation: str, config: Config, force: bool, points_digest: str) -> bool:
    """Whether --force replaces the run in this activation's folder; a run of another config there, or one that
    finished on other points than the CSV holds now, without --force, is refused (UsageError, DataError)."""
    run = RunFolder(out / activation)
    if not run.holds_a_run():
        return False
    if force:
        return True
    saved = run.saved_config()
    if saved is None or not same_but_threads(saved, config):  # the thread count alone may differ
        raise UsageError(
            f"--out {out}: {activation}/ holds a run with another config; replace the comparison with --force"
        )
    if run.best_checkpoint.is_file():
        check_trained_on(run, config, points_digest, "restore it, or replace the comparison with --force")
    return False


def _widths(architecture: str, hidden: list[int]) -> str:
    """'2-16-16-2 relu' -> '2-16-16-2': the activation varies per row, so the network is named by its widths
    (softmax regression has no activation to vary: its name stays whole)."""
    return architecture.split()[0] if hidden else architecture
