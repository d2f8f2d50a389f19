"""Train into a run folder: keep it if it finished, resume it from last.pt if it was interrupted, else start it.

The one rule behind every command that trains many runs and must survive being stopped: `compare`
calls it once per activation, a sweep's worker once per trial. Rerunning the same command after a
Ctrl-C or a kill -9 then trains nothing twice and ends where an uninterrupted one ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mnist_ffn.config import Config, same_but_threads
from mnist_ffn.errors import MnistFfnError, UsageError
from mnist_ffn.run_folder import RunFolder


@dataclass
class Trained:
    summary: dict  # what the run's summary.json holds
    how: str  # "kept" (it had finished), "resumed" (from its last.pt) or "new"


def train_into(
    folder: Path,
    config: Config,
    *,
    data_dir: Path,
    device: str = "auto",
    on_epoch: Callable[[dict], None] | None = None,
    progress_bars: bool = False,
    another_config: str = "move it away and rerun the same command",
) -> Trained:
    """The run of `config` in `folder`, finished: kept, resumed or trained from the start.

    A folder holding a run of another config is refused, never reused nor overwritten: UsageError, ending
    with `another_config` (what to do about it). The thread count may differ (a rerun with another
    --workers): a finished run stays finished.
    """
    from mnist_ffn.training import train

    run = RunFolder(folder)
    finished = finished_summary(run, config, another_config)
    if finished is not None:
        return Trained(finished, "kept")
    resume = run.last_checkpoint.is_file()
    summary = train(
        None if resume else config,  # resuming takes the config saved with the run
        data_dir=data_dir,
        out=run.path,
        device=device,
        resume=resume,
        force=not resume,  # a folder without last.pt holds nothing worth keeping: killed before its first epoch
        log=None,
        progress_bars=progress_bars,
        on_epoch=on_epoch,
    )
    return Trained(summary, "resumed" if resume else "new")


def finished_summary(run: RunFolder, config: Config, another_config: str) -> dict | None:
    """The summary of a run that already finished in this folder with this config, else None."""
    if not run.holds_a_run():
        return None
    on_disk = run.saved_config()
    if on_disk is not None and not same_but_threads(on_disk, config):
        raise UsageError(f"{run.path}: holds a run of another config; {another_config}")
    if on_disk is None or not run.summary.is_file():
        return None
    try:
        return run.read_summary()
    except MnistFfnError:  # a damaged summary: the run is trained again from its last.pt
        return None
