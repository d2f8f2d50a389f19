"""The Python API, for scripts and notebooks: `train`, `load` and `evaluate`.

    import mnist_ffn
    result = mnist_ffn.train("smoke", overrides={"optim.lr": 0.05})
    print(result.summary["test_accuracy"])
    network = mnist_ffn.load(result.best)
    network.predict(["examples/seven.png"])  # class probabilities, one row per image
    mnist_ffn.evaluate(result.best)          # what `mnist-ffn eval --json` prints

The CLI's `train`, `eval` and `predict` call these same functions. Every problem a person can fix
raises `mnist_ffn.MnistFfnError` (or a subclass) with the one-line message the CLI prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ffn.catalog import resolve_data_dir
from mnist_ffn.config import TOO_LARGE, Config, load_config, toml_value
from mnist_ffn.errors import UsageError
from mnist_ffn.inference.network import Network, load
from mnist_ffn.messages import shown
from mnist_ffn.presets import resolve
from mnist_ffn.training.devices import callers_random_state

__all__ = ["Network", "TrainResult", "evaluate", "load", "resolve_config", "train"]

SPLITS = ("test", "val", "train")


@dataclass
class TrainResult:
    """A finished run: its folder and what its summary.json holds."""

    folder: Path
    summary: dict = field(repr=False)

    @property
    def best(self) -> Path:
        """best.pt: the checkpoint with the best validation accuracy (the last one without a validation split)."""
        return self.folder / "best.pt"


def train(
    config: str | Path | None = None,
    *,
    overrides: Mapping[str, object] | Iterable[str] | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    quiet: bool = True,
    force: bool = False,
    resume: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a network into a run folder, as `mnist-ffn train` does, and return the finished run.

    config: a preset's name ("smoke", "best": see `mnist-ffn configs`), a TOML file, or None for the defaults.
    overrides: {"section.key": value}, applied after the config, e.g. {"optim.lr": 0.05, "model.hidden": [256]}
    (or the CLI's "section.key=value" strings).
    out: the run folder (default: runs/<config>-<date>-<time>); force replaces a run already there.
    data_dir: the folder with the data files (default: $MNIST_FFN_DATA, else ~/.cache/mnist-ffn).
    quiet: False prints a line per epoch and progress bars; `log` takes the lines instead of print.
    resume: a run folder to continue from its last.pt, with its saved config (then leave config,
    overrides, out and force out).
    """
    from mnist_ffn.training.trainer import train as run_training

    if resume is not None and (config is not None or overrides or out is not None or force):
        raise UsageError("resume continues a run with its saved config; leave out config, overrides, out and force")
    if config is not None and not isinstance(config, str | os.PathLike):
        raise UsageError(f"config: a preset's name or a TOML file, not {shown(config)}")
    folder = Path(resume) if resume is not None else Path(out) if out is not None else default_run_folder(config)
    resolved = None if resume is not None else resolve_config(config, overrides)
    with callers_random_state():  # the run seeds torch's generator; the caller's own draws go on as they were
        summary = run_training(
            resolved,
            data_dir=resolve_data_dir(Path(data_dir) if data_dir is not None else None),
            out=folder,
            device=device,
            resume=resume is not None,
            force=force,
            log=None if quiet else (log or print),
            progress_bars=not quiet,
        )
    return TrainResult(folder, summary)


def resolve_config(
    config: str | Path | None, overrides: Mapping[str, object] | Iterable[str] | str | None = None
) -> Config:
    """Defaults < the preset or file `config` < `overrides` ({"section.key": value}, or "section.key=value" strings,
    or one such string)."""
    config_file = resolve(config, "preset", option="--config") if config is not None else None
    return load_config(config_file, override_strings(overrides))


def override_strings(overrides: Mapping[str, object] | Iterable[str] | str | None) -> list[str]:
    """The CLI's "section.key=value" strings for the API's overrides, whichever form they came in."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        strings = []
        for key, value in overrides.items():
            try:
                strings.append(f"{key}={toml_value(config_value(str(key), value))}")
            except (RecursionError, ValueError):  # a number too long to write, lists nested past the stack
                raise UsageError(f"overrides[{shown(str(key))}]: {TOO_LARGE}") from None
        return strings
    if not isinstance(overrides, Iterable):
        raise UsageError(
            f"overrides: give {{'section.key': value}} or 'section.key=value' strings, not {shown(overrides)}"
        )
    strings = list(overrides)
    for item in strings:
        if not isinstance(item, str):
            raise UsageError(
                f"overrides: give {{'section.key': value}} or 'section.key=value' strings, not {shown(item)}"
            )
    return strings


def config_value(key: str, value: object) -> object:
    """A Python value as a config key takes it: a path as its text, a numpy or torch number as a Python number,
    a tuple as a list; anything else that is not a number, string, bool or list is refused, naming the key."""
    if isinstance(value, bool):
        return value
    for kind in (int, float, str):  # numpy's float64 is a float, and writes itself as np.float64(...)
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [config_value(key, item) for item in value]
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:  # numpy and torch scalars
        return config_value(key, value.item())
    raise UsageError(f"overrides[{shown(key)}]: {shown(value)} is not a config value (a number, text, bool or list)")


def default_run_folder(config: str | Path | None, prefix: str = "") -> Path:
    """runs/<config>-<date>-<time> (or runs/<prefix><date>-<time>), with a suffix if one started that second."""
    if config is not None:
        prefix = f"{Path(config).stem}-"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path("runs") / f"{prefix}{stamp}"
    suffix = 2
    while candidate.exists():
        candidate = Path("runs") / f"{prefix}{stamp}-{suffix}"
        suffix += 1
    return candidate


def evaluate(
    checkpoint: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    *,
    device: str = "auto",
    expected_dataset: str | None = None,
) -> dict:
    """Accuracy, loss, per-class accuracy and the confusion matrix of a checkpoint on a split (test, val or
    train): the dict `mnist-ffn eval --json` prints."""
    from mnist_ffn.inference.scores import evaluate_checkpoint

    if split not in SPLITS:
        raise UsageError(f"split {shown(split)}: choose one of {', '.join(SPLITS)}")
    return evaluate_checkpoint(
        Path(checkpoint),
        resolve_data_dir(Path(data_dir) if data_dir is not None else None),
        split=split,
        device=device,
        expected_dataset=expected_dataset,
    )
