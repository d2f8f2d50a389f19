"""The files of one training run, every one written atomically.

config.toml   the resolved config (defaults < --config < --set)
metrics.csv   one row per epoch
last.pt       the latest state, for --resume
best.pt       the weights with the best validation accuracy
summary.json  test accuracy of best.pt, timings, device, versions
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from mnist_ffn.atomic import remove_leftover_temp_files, write_text_atomically
from mnist_ffn.config import Config, to_toml
from mnist_ffn.errors import UsageError

COMPARISON_FILE = "compare.json"  # what `mnist-ffn compare` writes beside one run folder per activation
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


class RunFolder:
    def __init__(self, path: Path):
        self.path = path
        self.config = path / "config.toml"
        self.metrics = path / "metrics.csv"
        self.last_checkpoint = path / "last.pt"
        self.best_checkpoint = path / "best.pt"
        self.summary = path / "summary.json"

    def run_files(self) -> list[Path]:
        return [self.config, self.metrics, self.last_checkpoint, self.best_checkpoint, self.summary]

    def holds_a_run(self) -> bool:
        return any(path.exists() for path in self.run_files())

    def check_can_create(self, *, force: bool) -> None:
        """Refuse, before anything is written, to start a new run over an existing one unless forced."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path}: exists and is not a folder")
        if self.holds_a_run() and not force:
            raise UsageError(
                f"--out {self.path}: already holds a run; continue it with --resume {self.path}, "
                "or replace it with --force"
            )

    def create(self, *, force: bool) -> None:
        """Make the folder for a new run; with `force`, the files of the run already there are removed."""
        self.check_can_create(force=force)
        for path in self.run_files():
            path.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_leftover_temp_files(self.path)

    def open_for_resume(self) -> None:
        if not self.last_checkpoint.is_file():
            raise UsageError(f"--resume {self.path}: no last.pt there to resume from")
        remove_leftover_temp_files(self.path)

    def write_config(self, config: Config) -> None:
        write_text_atomically(self.config, to_toml(config))

    def write_metrics(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _csv_value(row[key]) for key in METRIC_COLUMNS} for row in rows)
        write_text_atomically(self.metrics, buffer.getvalue())

    def write_summary(self, summary: dict) -> None:
        write_text_atomically(self.summary, json.dumps(summary, indent=2) + "\n")

    def read_metrics(self) -> list[dict]:
        with open(self.metrics, newline="") as file:
            return [
                {key: (float(value) if value else None) for key, value in row.items()} for row in csv.DictReader(file)
            ]

    def read_summary(self) -> dict:
        return json.loads(self.summary.read_text())


def _csv_value(value: object) -> object:
    if value is None:
        return ""  # no validation split: the val columns stay empty
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
