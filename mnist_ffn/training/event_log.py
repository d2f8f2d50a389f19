"""TensorBoard event files in a run folder: what metrics.csv holds, per epoch, for `tensorboard --logdir`.

Written as Lightning writes them: whenever the `tensorboard` package is installed (`train.tensorboard` turns them
off), once per epoch (never inside the training loop's steps), into the run folder itself, so that
`tensorboard --logdir runs` names each run by its folder and `--logdir` on a compare or sweep folder shows its
activations or trials side by side.

    loss/train, loss/val, accuracy/train, accuracy/val     per epoch (step = the epoch, 1 the first)
    learning_rate, time/epoch_seconds                      the last step's rate; the epoch's seconds
    gradient/norm_layer_K, gradient/update_ratio_layer_K   metrics.csv's grad_norm_K, update_ratio_K
    config                                                 the resolved config, as text (TOML)
    hparams (HParams view)                                 every config key, with the final test and val metrics

The events are TensorBoard's own protocol buffers, made by torch's summary functions, written by TensorBoard's own
record writer in this thread: torch's SummaryWriter would hand each one to a thread of its own, which on a small
machine takes turns with the training itself (scripts/bench.py --tensorboard-only measured 5-28% of the training
rate on 2 cores; this way, no thread, one write and one flush an epoch).

A resumed run appends a new file whose first event purges every epoch logged before (the purge SummaryWriter's
purge_step writes), then writes again the epochs its last.pt holds (metrics.csv's rows) and goes on: whatever moment
the killed process died at (after an epoch's event and before its checkpoint, or the other way round), every epoch
is read once, with the numbers metrics.csv holds. Event files that were deleted are written again the same way: the
run resumes.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from pathlib import Path

from mnist_ffn.config import Config, to_toml
from mnist_ffn.messages import reason
from mnist_ffn.training.run_folder import EVENT_FILES

TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "learning_rate",
    "seconds": "time/epoch_seconds",
}
FINAL_METRICS = {
    "test_accuracy": "hparam/test_accuracy",
    "test_loss": "hparam/test_loss",
    "best_val_accuracy": "hparam/best_val_accuracy",
}


def tensorboard_installed() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class EventLog:
    """One process's event file in a run folder, made at its first epoch's end (a process that stops before one, or
    whose first save fails, leaves none). A write that fails (a full disk) is one warning line, and the run goes on
    without its event file: metrics.csv holds every epoch."""

    def __init__(self, folder: Path, config: Config, history: list[dict] | None):
        # the rows as they are now: the trainer's own list grows by the epochs this process logs itself
        self.folder, self.config, self.history = folder, config, None if history is None else list(history)
        self.records = None  # TensorBoard's RecordWriter on the file, once made
        self.failed = False

    @classmethod
    def open(cls, folder: Path, config: Config, history: list[dict] | None) -> EventLog | None:
        """The run's event log (`history`: a resumed run's rows so far; None for a new run), or None where it is
        off or the tensorboard package is not installed."""
        if not config.train.tensorboard or not tensorboard_installed():
            return None
        return cls(folder, config, history)

    def epoch(self, row: dict) -> None:
        """One epoch's row of metrics.csv, written and flushed (a kill loses at most the epoch in progress)."""
        self._safely(lambda: self._rows([row]))

    def finish(self, summary: dict) -> None:
        """The HParams view's row: every config key with the run's final metrics."""
        self._safely(lambda: self._finish(summary))

    def close(self) -> None:
        if self.records is not None:
            with contextlib.suppress(OSError):
                self.records.close()

    # -- writing ----------------------------------------------------------------------------------------

    def _safely(self, write) -> None:
        if self.failed:
            return
        try:
            if self.records is None:
                self._start()
            write()
            self.records.flush()
        except OSError as exc:
            self.failed = True
            self.close()
            print(
                f"mnist-ffn: warning: cannot write TensorBoard's event file in {self.folder} ({reason(exc)}); "
                "training goes on without it (metrics.csv has every epoch)",
                file=sys.stderr,
                flush=True,
            )

    def _start(self) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.summary.writer.record_writer import RecordWriter

        # resumed: every epoch logged before (steps >= 1) is purged and written again; the config's text (step 0,
        # which TensorBoard's readers keep through a purge) only where no event file holds it any more
        logged = any(path.is_file() for path in self.folder.glob(EVENT_FILES))
        name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.0"  # SummaryWriter's
        self.records = RecordWriter(open(self.folder / name, "ab"))  # noqa: SIM115 (closed by close())
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))
        if self.history is not None:
            self._write(Event(wall_time=time.time(), step=1, session_log=SessionLog(status=SessionLog.START)))
        if self.history is None or not logged:
            from torch.utils.tensorboard.summary import text

            self._summary(text("config", "```toml\n" + to_toml(self.config) + "```"), step=0)
        self._rows(self.history or [])

    def _write(self, event) -> None:
        self.records.write(event.SerializeToString())

    def _summary(self, summary, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._write(Event(wall_time=time.time(), step=step, summary=summary))

    def _rows(self, rows: list[dict]) -> None:
        from torch.utils.tensorboard.summary import scalar

        for row in rows:
            step = int(row["epoch"])
            for key, value in row.items():
                tag = TAGS.get(key) or _layer_tag(key)
                if tag is not None and value is not None and math.isfinite(value):
                    self._summary(scalar(tag, value), step)

    def _finish(self, summary: dict) -> None:
        from torch.utils.tensorboard.summary import hparams, scalar

        metrics = {tag: summary[key] for key, tag in FINAL_METRICS.items() if _number(summary.get(key))}
        step = int(summary.get("epochs") or self.config.train.epochs)
        for part in hparams(hyperparameters(self.config), metrics):  # the experiment, the session's start and end
            self._summary(part, step=0)
        for tag, value in metrics.items():
            self._summary(scalar(tag, value), step)


def _layer_tag(key: str) -> str | None:
    for prefix, name in (("grad_norm_", "norm"), ("update_ratio_", "update_ratio")):
        if key.startswith(prefix):
            return f"gradient/{name}_layer_{key.removeprefix(prefix)}"
    return None


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def hyperparameters(config: Config) -> dict[str, object]:
    """Every config key as HParams takes it: numbers, booleans and text; a list as its TOML text."""
    flat = {}
    for section, values in config.to_dict().items():
        for key, value in values.items():
            if isinstance(value, bool | int | float | str):
                flat[f"{section}.{key}"] = value
            elif value is not None:
                flat[f"{section}.{key}"] = str(value)
    return flat
