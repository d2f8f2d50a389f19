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
from mnist_ffn.errors import DataError, MnistFfnError, UsageError
from mnist_ffn.training.run_folder import RunFolder


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
    points_digest: str = "",
    another_file: str = "restore the file it was trained on",
) -> Trained:
    """The run of `config` in `folder`, finished: kept, resumed or trained from the start.

    A folder holding a run of another config is refused, never reused nor overwritten: UsageError, ending
    with `another_config` (what to do about it). The thread count may differ (a rerun with another
    --workers): a finished run stays finished. `points_digest`, for a CSV's points, is the fingerprint of
    the file as the command that trains many runs first read it: a run kept, resumed or trained on any other
    content is refused (DataError, ending with `another_file`), so that one command never mixes two files.
    """
    from mnist_ffn.training.trainer import train

    run = RunFolder(folder)
    finished = finished_summary(run, config, another_config)
    if finished is not None:
        check_trained_on(run, config, points_digest, another_file)
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
    check_trained_on(run, config, points_digest, another_file)  # the file may have changed while it trained
    return Trained(summary, "resumed" if resume else "new")


def check_trained_on(run: RunFolder, config: Config, points_digest: str, another_file: str) -> None:
    """Refuse a run whose best.pt was trained on other points than `points_digest` says (nothing to check: "")."""
    if not points_digest:
        return
    from mnist_ffn.training.checkpoint import load_checkpoint

    plane = load_checkpoint(run.best_checkpoint).get("plane")
    trained_on = plane.get("sha256") if isinstance(plane, dict) else None
    if trained_on != points_digest:
        raise DataError(
            f"data.points {config.data.points}: not the points {run.path} was trained on (SHA-256 "
            f"{str(trained_on)[:12]}..., now {points_digest[:12]}...): the file changed; {another_file}"
        )


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
