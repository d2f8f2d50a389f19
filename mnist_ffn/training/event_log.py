"""TensorBoard event files in a run folder: what metrics.csv holds, per epoch, for `tensorboard --logdir`.

Written as Lightning writes them: whenever the `tensorboard` package is installed (`train.tensorboard` turns them
off), by torch's own SummaryWriter, once per epoch (never inside the training loop's steps), into the run folder
itself, so that `tensorboard --logdir runs` names each run by its folder and `--logdir` on a compare or sweep folder
shows its activations or trials side by side.

    loss/train, loss/val, accuracy/train, accuracy/val     per epoch (step = the epoch, 1 the first)
    learning_rate, time/epoch_seconds                      the last step's rate; the epoch's seconds
    gradient/norm_layer_K, gradient/update_ratio_layer_K   metrics.csv's grad_norm_K, update_ratio_K
    config                                                 the resolved config, as text (TOML)
    hparams (HParams view)                                 every config key, with the final test and val metrics

A resumed run appends a new file whose first event purges every epoch logged before (SummaryWriter's purge_step),
then writes again the epochs its last.pt holds (metrics.csv's rows) and goes on: whatever moment the killed process
died at (after an epoch's event and before its checkpoint, or the other way round), every epoch is read once, with
the numbers metrics.csv holds. Event files that were deleted are written again the same way: the run resumes.
"""

from __future__ import annotations

import math
from pathlib import Path

from mnist_ffn.config import Config, to_toml

EVENT_FILES = "events.out.tfevents.*"  # SummaryWriter's names
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
    """One process's event file in a run folder."""

    def __init__(self, folder: Path, config: Config, history: list[dict] | None):
        from torch.utils.tensorboard import SummaryWriter

        self.config = config
        # resumed: every epoch logged before (steps >= 1) is purged and written again; the config's text (step 0,
        # which TensorBoard's readers keep through a purge) only where no event file holds it any more
        logged = any(path.is_file() for path in folder.glob(EVENT_FILES))
        purge = 1 if history is not None else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge, flush_secs=3600)
        if history is None or not logged:
            self.writer.add_text("config", "```toml\n" + to_toml(config) + "```", global_step=0)
        for row in history or []:
            self.epoch(row, flush=False)
        self.writer.flush()

    @classmethod
    def open(cls, folder: Path, config: Config, history: list[dict] | None) -> EventLog | None:
        """The run's event log (`history`: a resumed run's rows so far; None for a new run), or None where it is
        off or the tensorboard package is not installed."""
        if not config.train.tensorboard or not tensorboard_installed():
            return None
        return cls(folder, config, history)

    def epoch(self, row: dict, flush: bool = True) -> None:
        """One epoch's row of metrics.csv, written and flushed (a kill loses at most the epoch in progress)."""
        step = int(row["epoch"])
        for key, value in row.items():
            tag = TAGS.get(key) or _layer_tag(key)
            if tag is not None and value is not None and math.isfinite(value):
                self.writer.add_scalar(tag, value, global_step=step)
        if flush:
            self.writer.flush()

    def finish(self, summary: dict) -> None:
        """The HParams view's row: every config key with the run's final metrics."""
        from torch.utils.tensorboard.summary import hparams

        metrics = {tag: summary[key] for key, tag in FINAL_METRICS.items() if _number(summary.get(key))}
        experiment, start, end = hparams(hyperparameters(self.config), metrics)
        file_writer = self.writer._get_file_writer()
        for event in (experiment, start, end):
            file_writer.add_summary(event)
        step = int(summary.get("epochs") or self.config.train.epochs)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


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
