"""The files of one training run, every one written atomically, and the lock held while a process trains there.

config.toml   the resolved config (defaults < --config < --set), headed by the run's identity
metrics.csv   one row per epoch
last.pt       the latest state, for --resume
best.pt       the weights with the best validation accuracy
summary.json  test accuracy of best.pt, timings, device, versions (SUMMARY_KEYS)

Every checkpoint carries the run's identity (a random id made when the run is created, also in
config.toml's first line), so a last.pt or best.pt copied in from another run is refused on resume
instead of mixing two runs in one folder.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

from mnist_ffn.config import Config, load_config, to_toml
from mnist_ffn.errors import ConfigError, DamagedFile, RunFolderBusy, UsageError, WriteError
from mnist_ffn.files import remove_leftover_temp_files, write_text_atomically
from mnist_ffn.quoting import command_line, quote

COMPARISON_FILE = "compare.json"  # what `mnist-ffn compare` writes beside one run folder per activation
LOCK_FILE = ".mnist-ffn.lock"  # flock()ed while a process trains in the folder; empty, removed at the end
METRIC_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
# and per layer K = 1 (the lowest) ... L (the output layer), where recorded (train.grad_norms):
LAYER_COLUMNS = ("grad_norm_", "update_ratio_")  # mean ||dL/dz_K|| over the epoch's steps; ||W_K change|| / ||W_K||
EVENT_FILES = "events.out.tfevents.*"  # TensorBoard's (training.event_log), named as SummaryWriter names them
RUN_ID_HEADER = re.compile(r"^# mnist-ffn run ([0-9a-f]{32})\b")

# summary.json, key by key: what `train` writes and `plot`, `compare` and people read.
SUMMARY_KEYS = {
    "test_accuracy": "accuracy of best.pt on the test split (the only use of the test set)",
    "test_loss": "mean cross-entropy of best.pt on the test split",
    "test_n": "number of test images",
    "test_checkpoint": "the checkpoint judged: best.pt",
    "test_confusion_matrix": "rows: true class, columns: predicted class",
    "classes": "class names, in label order",
    "best_epoch": "the epoch best.pt was saved at (1-based)",
    "best_val_accuracy": "its validation accuracy (null without a validation split)",
    "epochs": "epochs trained",
    "final_train_loss": "mean training loss of the last epoch",
    "final_train_accuracy": "training accuracy of the last epoch",
    "wall_seconds": "training, evaluation and checkpoints, summed over every process that worked on the run",
    "train_seconds": "training steps only",
    "train_samples_per_second": "training images per second of train_seconds",
    "time_to_best_seconds": "wall_seconds when best.pt was saved",
    "peak_memory_bytes": "peak resident memory (CPU) or the CUDA allocator's peak",
    "peak_memory_kind": "rss or cuda_max_allocated",
    "dataset": "mnist or fashion-mnist",
    "train_images": "images trained on",
    "val_images": "images held out for validation",
    "architecture": "e.g. 784-512-256-10 relu",
    "parameters": "number of weights and biases",
    "device": "cpu, cuda or mps",
    "device_name": "the processor or GPU",
    "engine": "what took the SGD steps: backprop (by hand) or autograd (train.engine)",
    "precision": "the matrix products' precision, fp32 or bf16 (train.precision)",
    "precision_why": "why this engine and precision: forced by the config, or what timing them found",
    "threads": "CPU threads torch used",
    "seed": "train.seed",
    "run_id": "the run's identity, as in config.toml and every checkpoint",
    "torch_version": "the torch that trained it",
    "mnist_ffn_version": "the mnist-ffn that trained it",
}
# absent from the summaries of earlier versions, which stay readable
OPTIONAL_SUMMARY_KEYS = {"run_id", "precision", "precision_why"}


def new_run_id() -> str:
    return uuid.uuid4().hex


def resume_command(run_dir: Path, data_dir: Path, device: str = "auto") -> str:
    """The command that continues the run in `run_dir`: printed after a signal and after a failed save."""
    device_flag = () if device == "auto" else ("--device", device)
    return command_line("mnist-ffn", "train", "--resume", run_dir, "--data-dir", data_dir, *device_flag)


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

    def event_files(self) -> list[Path]:
        """TensorBoard's event files of the run (training.event_log)."""
        return [path for path in self.path.glob(EVENT_FILES) if path.is_file()]

    def holds_a_run(self) -> bool:
        return any(path.exists() for path in self.run_files())

    @contextlib.contextmanager
    def locked(self, option: str) -> Iterator[None]:
        """Hold the folder's lock while training into it; a second process is refused at once.

        flock is released by the operating system when the process dies, so even kill -9 leaves no
        stale lock (only an empty lock file, reused by the next process). A folder this call made is
        removed again if nothing was written into it.
        """
        try:
            if self.path.exists() and not self.path.is_dir():
                raise UsageError(f"{option} {self.path}: exists and is not a folder")
            made = _missing_folders(self.path)  # `runs/` too, or a/b/c of --out a/b/c/run
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only parent, a file on the way, a name too long
            raise WriteError(f"{option} {self.path}: cannot create the folder ({exc.strerror})") from None
        descriptor = _lock(self.path / LOCK_FILE, f"{option} {self.path}")
        try:
            yield
        finally:
            # Removed while still held: a process waiting on this file sees it is gone and locks a new one.
            with contextlib.suppress(OSError):
                (self.path / LOCK_FILE).unlink()
                for folder in made:  # a command refused (bad data, a signal) leaves no folder it made
                    folder.rmdir()  # OSError once one holds anything: it and those above it stay
            os.close(descriptor)

    def check_can_create(self, *, force: bool) -> None:
        """Refuse, before anything is written, to start a new run over an existing one unless forced."""
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"--out {self.path}: exists and is not a folder")
        if self.holds_a_run() and not force:
            raise UsageError(
                f"--out {self.path}: already holds a run; continue it with --resume {quote(self.path)}, "
                "or replace it with --force"
            )

    def create(self, config: Config, *, force: bool) -> str:
        """Start a new run: with `force`, the files of the run already there are removed. Returns its identity."""
        self.check_can_create(force=force)
        for path in [*self.run_files(), *self.event_files()]:  # an old run's TensorBoard curves go with it
            path.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_leftover_temp_files(self.path, self.written_names())
        run_id = new_run_id()
        write_text_atomically(self.config, f"# mnist-ffn run {run_id}\n" + to_toml(config))
        return run_id

    def clear_unstarted_run(self) -> None:
        """Remove a run that never reached its first checkpoint, so that `train --out` can start it again: all of
        it, best.pt too (a signal can land between the epoch's best.pt and its last.pt), since nothing resumes it."""
        if not self.last_checkpoint.exists():
            for path in (self.config, self.metrics, self.best_checkpoint, self.summary, *self.event_files()):
                path.unlink(missing_ok=True)

    def open_for_resume(self) -> None:
        if not self.last_checkpoint.is_file():
            raise UsageError(f"--resume {self.path}: no last.pt there to resume from")
        remove_leftover_temp_files(self.path, self.written_names())

    def written_names(self) -> list[str]:
        return [path.name for path in self.run_files()]

    def saved_config(self) -> Config | None:
        """The config in config.toml, or None when it is missing or not a valid config."""
        try:
            return load_config(self.config)
        except ConfigError:  # load_config reports a missing or unreadable file as a ConfigError too
            return None

    def config_run_id(self) -> str | None:
        """The identity in config.toml's first line (None for runs made before identities existed)."""
        with open(self.config, encoding="utf-8", errors="replace") as file:
            found = RUN_ID_HEADER.match(file.readline())
        return found.group(1) if found else None

    def write_metrics(self, rows: list[dict]) -> None:
        buffer = io.StringIO()
        columns = [*METRIC_COLUMNS, *layer_columns(rows)]
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({key: _csv_value(row.get(key)) for key in columns} for row in rows)
        write_text_atomically(self.metrics, buffer.getvalue())

    def write_summary(self, summary: dict) -> None:
        if list(summary) != list(SUMMARY_KEYS):
            raise AssertionError(f"summary keys {list(summary)} differ from SUMMARY_KEYS")  # a bug, not an input
        write_text_atomically(self.summary, json.dumps(summary, indent=2, allow_nan=False) + "\n")

    def read_metrics(self) -> list[dict]:
        """metrics.csv as numbers; raises DamagedFile naming the file if it is not one this tool wrote."""
        try:
            with open(self.metrics, newline="", encoding="utf-8") as file:
                rows = list(csv.DictReader(file))
            if not rows or set(METRIC_COLUMNS) - set(rows[0]):
                raise ValueError("missing columns")
            columns = [*METRIC_COLUMNS, *layer_columns(rows)]
            return [{key: (float(row[key]) if row.get(key) else None) for key in columns} for row in rows]
        except FileNotFoundError:
            raise DamagedFile(f"{self.metrics}: missing; not a finished or running run folder") from None
        except (ValueError, TypeError, UnicodeDecodeError, csv.Error, OSError) as exc:
            raise DamagedFile(f"{self.metrics}: damaged, not the metrics.csv mnist-ffn writes ({exc})") from None

    def read_summary(self) -> dict:
        """summary.json as written; raises DamagedFile naming the file if it is damaged."""
        try:
            summary = json.loads(self.summary.read_text(encoding="utf-8"))
            if not isinstance(summary, dict) or set(SUMMARY_KEYS) - OPTIONAL_SUMMARY_KEYS - set(summary):
                raise ValueError("keys missing")
            return summary
        except FileNotFoundError:
            raise DamagedFile(f"{self.summary}: missing; the run has not finished") from None
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            raise DamagedFile(f"{self.summary}: damaged, not the summary.json mnist-ffn writes ({exc})") from None


def _missing_folders(path: Path) -> list[Path]:
    """The folders that creating `path` with its parents makes, innermost first."""
    missing = []
    while not path.exists() and not path.is_symlink() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def _lock(path: Path, where: str) -> int:
    """An exclusive flock on `path`. The file's content and time never change: it is not part of the run."""
    import fcntl

    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteError(f"{where}: cannot write in the folder ({exc.strerror})") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(os.fstat(descriptor).st_ino)
            os.close(descriptor)
            pid = f" (pid {holder})" if holder else ""
            raise RunFolderBusy(
                f"{where}: another mnist-ffn process{pid} is training in this folder; wait for it to end or stop it"
            ) from None
        try:
            same_file = os.fstat(descriptor).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:  # not a lock file that its previous holder removed as we opened it
            return descriptor
        os.close(descriptor)


def _lock_holder(inode: int) -> str | None:
    """The pid holding a flock on `inode`, from Linux's /proc/locks; None where that cannot be read."""
    try:
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()  # e.g. "1: FLOCK ADVISORY WRITE 4242 00:2f:1234 0 EOF"
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                    return fields[4]
    except OSError:
        pass
    return None


def layer_columns(rows: list[dict]) -> list[str]:
    """The per-layer columns the rows hold, by kind and then by layer (grad_norm_1, grad_norm_2, ...)."""
    found = {key for row in rows for key in row if key.startswith(LAYER_COLUMNS) and key.rpartition("_")[2].isdigit()}
    return sorted(
        found, key=lambda key: (LAYER_COLUMNS.index(key.rpartition("_")[0] + "_"), int(key.rpartition("_")[2]))
    )


def gradient_layers(rows: list[dict]) -> int:
    """How many layers metrics rows hold gradient norms for (0: none recorded)."""
    return sum(1 for key in rows[0] if key.startswith("grad_norm_")) if rows else 0


def gradient_means(rows: list[dict]) -> list[float | None]:
    """Each layer's ||dL/dz|| (grad_norm_K) averaged over the epochs that recorded it, K = 1 (the lowest) first."""
    means = []
    for k in range(1, gradient_layers(rows) + 1):
        values = [row[f"grad_norm_{k}"] for row in rows if row.get(f"grad_norm_{k}") is not None]
        means.append(sum(values) / len(values) if values else None)
    return means


def _csv_value(value: object) -> object:
    if value is None:
        return ""  # no validation split: the val columns stay empty
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
