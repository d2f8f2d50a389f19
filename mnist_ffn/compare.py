"""The lesson, measured: train one architecture and budget once per activation and compare.

Without an activation (identity) the stacked layers collapse into one linear map and land
near a linear classifier; every non-linear activation should clear it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

from mnist_ffn.atomic import write_text_atomically
from mnist_ffn.config import ACTIVATIONS, Config
from mnist_ffn.errors import ConfigError, UsageError
from mnist_ffn.model import architecture, layer_widths
from mnist_ffn.run_folder import COMPARISON_FILE
from mnist_ffn.train import train

DEFAULT_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
COLUMNS = ("activation", "test_accuracy", "test_loss", "final_train_loss", "best_val_accuracy", "seconds")


def parse_activations(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in ACTIVATIONS]
    if unknown or not names:
        raise ConfigError(
            [f"--activations: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(ACTIVATIONS)}"]
        )
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
    if (out / COMPARISON_FILE).exists() and not force:
        raise UsageError(f"--out {out}: already holds a comparison; replace it with --force")
    results = []
    for activation in activations:
        config = dataclasses.replace(base, model=dataclasses.replace(base.model, activation=activation))
        summary = train(
            config,
            data_dir=data_dir,
            out=out / activation,
            device=device,
            force=force,
            log=None,
            progress_bars=progress_bars,
        )
        row = {
            "activation": activation,
            "test_accuracy": summary["test_accuracy"],
            "test_loss": summary["test_loss"],
            "final_train_loss": summary["final_train_loss"],
            "best_val_accuracy": summary["best_val_accuracy"],
            "seconds": summary["wall_seconds"],
        }
        results.append(row)
        if log:
            log(
                f"{activation:>10}: test accuracy {row['test_accuracy']:.2%}, "
                f"final train loss {row['final_train_loss']:.4f}, {row['seconds']:.1f} s"
            )
    comparison = {
        "dataset": base.data.dataset,
        "hidden": base.model.hidden,
        # the activation varies per row, so name the network by its widths alone
        "architecture": layer_widths(base.model) if base.model.hidden else architecture(base.model),
        "epochs": base.train.epochs,
        "seed": base.train.seed,
        "results": results,
    }
    write_text_atomically(out / COMPARISON_FILE, json.dumps(comparison, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(results)
    write_text_atomically(out / "compare.csv", buffer.getvalue())
    return comparison
