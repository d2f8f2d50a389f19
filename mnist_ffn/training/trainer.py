"""The training loop: shuffled batches from device-resident tensors, SGD, evaluation, checkpoints.

The hot loop does no per-sample Python work and reads nothing back from the device: each
step's loss and correct count go into small device tensors that are read once per epoch
(or when a checkpoint is written). Everything random comes from seeded generators whose
states are saved, so a run resumed from any checkpoint ends bit for bit where an
uninterrupted run would on the CPU.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from mnist_ffn.config import Config, load_config
from mnist_ffn.data.load import load_data
from mnist_ffn.data.raw import check_same_points
from mnist_ffn.data.splits import make_splits, shuffled_batches
from mnist_ffn.errors import (
    CheckpointError,
    ConfigError,
    Interrupted,
    MnistFfnError,
    TrainingDiverged,
    TrainingInterrupted,
    UsageError,
)
from mnist_ffn.messages import reason
from mnist_ffn.training.augment import Augmenter, is_enabled
from mnist_ffn.training.checkpoint import (
    TrainingState,
    checkpoint_config,
    load_checkpoint,
    model_contents,
    read_training_state,
    restore_model,
    save_checkpoint,
    training_contents,
)
from mnist_ffn.training.choice import StepChoice, build_engine, choose_step, resumed_choice
from mnist_ffn.training.devices import device_name, peak_memory, pick_device
from mnist_ffn.training.event_log import EventLog
from mnist_ffn.training.metrics import evaluate
from mnist_ffn.training.model import architecture, build_model, count_parameters, linear_layers
from mnist_ffn.training.optim import learning_rate
from mnist_ffn.training.run_folder import RunFolder, resume_command
from mnist_ffn.training.signals import StopSignals
from mnist_ffn.version import __version__


@dataclass
class Progress:
    """Where the run is; saved in every checkpoint."""

    epoch: int = 0  # 0-based index of the epoch in progress (== epochs when done)
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0  # time spent in training steps only: the samples/s denominator
    wall_seconds: float = 0.0  # training, evaluation and checkpoints
    epoch_seconds: float = 0.0  # time spent so far in the epoch in progress
    samples_seen: int = 0
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    time_to_best_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


MIN_SECONDS_BETWEEN_EPOCH_SAVES = 1.0
GRAD_NORM_EVERY = 10  # steps: each epoch records the norms of its 1st, 11th, 21st... step (under 1% of its time)


class Trainer:
    def __init__(
        self, config: Config, run: RunFolder, device: torch.device, *, log, progress_bars: bool, resume_command: str
    ):
        self.config, self.run, self.device = config, run, device
        self.log = log  # callable(str) for one line per epoch; None for silence
        self.progress_bars = progress_bars
        self.resume_command = resume_command
        self.run_id: str | None = None  # set when the run folder is created, or read from last.pt on resume
        self.finished = False  # every epoch trained; only the final evaluation is left
        self.on_epoch = None  # callable(metrics row) after each epoch is saved
        self.events: EventLog | None = None  # TensorBoard's event file, where written (training.event_log)
        train = config.train
        if train.threads:
            torch.set_num_threads(train.threads)
        self.shuffle_generator = torch.Generator().manual_seed(train.seed)  # on the CPU: same order on every device
        self.augment_generator = torch.Generator(device).manual_seed(train.seed + 1)
        self.epoch_start_state = self.shuffle_generator.get_state()
        self.progress = Progress()
        self.last_epoch_save = -math.inf  # the first epoch's end always saves
        self.saved_epoch = 0
        self.step_grad_norms: torch.Tensor | None = None  # (steps per epoch, layers): the epoch's ||dL/dz||
        self.epoch_start_weights: list[torch.Tensor] | None = None  # for the epoch's update-to-weight ratios

    # -- setup -----------------------------------------------------------------------------------------

    def load_data(self, data_dir: Path) -> None:
        """The data, then the model its shape asks for (the input width and the classes)."""
        config = self.config
        self.raw = load_data(config.data, data_dir, config.train.seed)
        self.splits = make_splits(self.raw, config.train.val_size, config.train.limit, self.device)
        torch.manual_seed(config.train.seed)  # the initial weights
        info = self.raw.info
        self.model = build_model(config.model, num_classes=len(info.classes), inputs=info.inputs).to(self.device)
        self.architecture = architecture(config.model, len(info.classes), info.inputs)
        batch_size = self.config.train.batch_size
        self.steps_per_epoch = math.ceil(len(self.splits["train"]) / batch_size)
        sizes = [batch_size] * self.steps_per_epoch
        sizes[-1] = len(self.splits["train"]) - batch_size * (self.steps_per_epoch - 1)
        self.batch_sizes = torch.tensor(sizes, dtype=torch.float32, device=self.device)
        self.augmenter = None
        if is_enabled(self.config.augment):
            background = (0.0 - self.raw.info.mean) / self.raw.info.std
            self.augmenter = Augmenter(self.config.augment, background, self.augment_generator)

    def start_engine(self, checkpoint: dict | None) -> None:
        """The engine and precision of the run: a resumed run's own (bit-exact resume), else chosen anew."""
        if checkpoint is None:
            choice = choose_step(self.config, self.model, self.device, points=self.raw.info.is_plane)
        else:
            choice = resumed_choice(checkpoint.get("step"), self.config, self.device)
        self.choice = choice
        self.engine = build_engine(self.model, self.config, self.device, choice)

    def restore(self, checkpoint: dict, state: TrainingState) -> None:
        check_same_points(self.raw, checkpoint.get("plane"), self.run.last_checkpoint)
        if len(state.step_losses) != self.steps_per_epoch:
            raise CheckpointError(
                f"{self.run.last_checkpoint}: written for {len(state.step_losses)} steps per epoch, but this data "
                f"gives {self.steps_per_epoch}; resume with the data the run started with"
            )
        try:
            self.model.load_state_dict(checkpoint["model"])
            self.engine.load_optimizer_state(state.optimizer)
            torch.set_rng_state(state.torch_rng)
            if self.device.type == "cuda" and state.cuda_rng:
                torch.cuda.set_rng_state_all(state.cuda_rng)
            self.shuffle_generator.set_state(state.shuffle_rng)
            self.augment_generator.set_state(state.augment_rng)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise CheckpointError(
                f"{self.run.last_checkpoint}: cannot resume from it ({reason(exc, 'last')})"
            ) from None
        self.progress = Progress(**state.progress)
        self.saved_epoch = self.progress.epoch
        self.run_id = state.run_id
        self.step_losses = state.step_losses.to(self.device)
        self.step_correct = state.step_correct.to(self.device)
        self.step_grad_norms = self._empty_grad_norms()
        saved_norms = state.step_grad_norms
        if (
            self.step_grad_norms is not None
            and saved_norms is not None
            and saved_norms.shape == self.step_grad_norms.shape
        ):
            self.step_grad_norms.copy_(saved_norms)
        self.epoch_start_weights = None
        if state.epoch_start_weights is not None:
            self.epoch_start_weights = [weight.to(self.device) for weight in state.epoch_start_weights]
        elif self.progress.step_in_epoch == 0:
            self.epoch_start_weights = self._weights_now()

    # -- the loop --------------------------------------------------------------------------------------

    def fit(self, stop: StopSignals) -> None:
        epochs = self.config.train.epochs
        while self.progress.epoch < epochs:
            with stop.deferring():
                self.train_epoch(stop)
                self.finish_epoch()
                if stop.received is not None and self.saved_epoch != self.progress.epoch:
                    self.save_epoch_end()  # the stop's message says last.pt holds this epoch
            if stop.received is not None:
                self._stop(stop.received)

    def train_epoch(self, stop: StopSignals) -> None:
        config, progress = self.config, self.progress
        train_split = self.splits["train"]
        self.epoch_start_state = self.shuffle_generator.get_state()
        order = torch.randperm(len(train_split), generator=self.shuffle_generator)
        if progress.step_in_epoch == 0:
            self.step_losses = torch.zeros(self.steps_per_epoch, device=self.device)
            self.step_correct = torch.zeros(self.steps_per_epoch, dtype=torch.int64, device=self.device)
            self.step_grad_norms = self._empty_grad_norms()
            self.epoch_start_weights = self._weights_now()
        grad_norms = getattr(self.engine, "grad_norms", None) if self.step_grad_norms is not None else None
        recording = grad_norms is not None
        checkpoint_every = config.train.checkpoint_every
        self.model.train()
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=progress.step_in_epoch,
            desc=f"epoch {progress.epoch + 1}/{config.train.epochs}",
            unit="batch",
            leave=False,
            disable=None if self.progress_bars else True,  # None: only on a terminal
            file=sys.stderr,
        )
        started = time.perf_counter()
        for images, labels in shuffled_batches(train_split, config.train.batch_size, order, progress.step_in_epoch):
            lr = learning_rate(config.optim, progress.global_step, self.steps_per_epoch, config.train.epochs)
            if self.augmenter is not None:
                images = self.augmenter(images)
            step = progress.step_in_epoch
            if recording:  # a sample of the epoch's steps, from its first: the norms' cost stays under 1%
                self.engine.record_grad_norms = step % GRAD_NORM_EVERY == 0
            loss, logits = self.engine.step(images, labels, lr)  # the loss and logits before the update
            self.step_losses[step] = loss
            self.step_correct[step] = (logits.argmax(dim=1) == labels).sum()
            if recording and step % GRAD_NORM_EVERY == 0:
                self.step_grad_norms[step] = grad_norms
            progress.step_in_epoch += 1
            progress.global_step += 1
            progress.samples_seen += len(labels)
            bar.update(1)
            mid_epoch = progress.step_in_epoch < self.steps_per_epoch  # the epoch's end saves anyway
            wants_checkpoint = checkpoint_every and progress.global_step % checkpoint_every == 0
            if mid_epoch and (wants_checkpoint or stop.received is not None):
                self._clock(started)
                self._check_finite()
                saving_started = time.perf_counter()
                self._save(self.run.last_checkpoint)
                self._clock(saving_started, training=False)
                started = time.perf_counter()
                if stop.received is not None:
                    bar.close()
                    self._stop(stop.received)
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # make the step time honest before reading the clock
        self._clock(started)
        bar.close()
        self.last_lr = lr

    def start_line(self, resumed: bool) -> str:
        return start_line(
            resumed_at_epoch=self.progress.epoch + 1 if resumed else None,
            architecture=self.architecture,
            parameters=count_parameters(self.model),
            device=str(self.device),
            threads=torch.get_num_threads() if self.device.type == "cpu" else None,
            train_images=len(self.splits["train"]),
            val_images=len(self.splits["val"]),
            dataset_title=self.raw.info.title,
            unit="points" if self.raw.info.is_plane else "images",
            epochs=self.config.train.epochs,
            batch_size=self.config.train.batch_size,
            choice=self.choice,
        )

    def _clock(self, started: float, training: bool = True) -> None:
        """Add the time since `started` to the run's clocks; only training steps count for samples/s."""
        elapsed = time.perf_counter() - started
        if training:
            self.progress.train_seconds += elapsed
        self.progress.wall_seconds += elapsed
        self.progress.epoch_seconds += elapsed

    def _check_finite(self) -> None:
        done = self.progress.step_in_epoch
        finite = torch.isfinite(self.step_losses[:done])
        if bool(finite.all()):
            return
        first_bad = int((~finite).nonzero()[0])
        value = float(self.step_losses[first_bad])
        lr = self.config.optim.lr
        where = f"the loss became {value} at epoch {self.progress.epoch + 1}, step {first_bad + 1}"
        advice = f"try a smaller learning rate, e.g. --set optim.lr={lr / 10:g}"
        if self.run.last_checkpoint.exists():
            raise TrainingDiverged(
                f"{where}; training stopped and {self.run.last_checkpoint} still holds the last good state; {advice}"
            )
        self.run.clear_unstarted_run()
        raise TrainingDiverged(
            f"{where}, before the first checkpoint: nothing was saved, and {self.run.path} can be trained "
            f"into again; {advice}"
        )

    def finish_epoch(self) -> None:
        progress = self.progress
        started = time.perf_counter()
        self._check_finite()
        train_count = self.batch_sizes.sum()
        train_loss = float((self.step_losses * self.batch_sizes).sum() / train_count)
        train_accuracy = float(self.step_correct.sum() / train_count)
        has_val = len(self.splits["val"]) > 0
        classes = len(self.raw.info.classes)
        val = evaluate(self.model, self.splits["val"], self.config.train.eval_batch_size, classes) if has_val else None
        self._clock(started, training=False)
        row = {
            "epoch": progress.epoch + 1,
            "train_loss": train_loss,
            "train_acc": train_accuracy,
            "val_loss": val.loss if val else None,
            "val_acc": val.accuracy if val else None,
            "lr": self.last_lr,
            "seconds": progress.epoch_seconds,
            **self._layer_figures(),
        }
        progress.history.append(row)
        progress.epoch += 1
        progress.step_in_epoch = 0
        progress.epoch_seconds = 0.0
        is_best = val is None or val.accuracy > progress.best_val_accuracy
        if is_best:
            progress.best_val_accuracy = val.accuracy if val else train_accuracy
            progress.best_epoch = progress.epoch
            progress.time_to_best_seconds = progress.wall_seconds
        self.epoch_start_state = self.shuffle_generator.get_state()  # the next epoch starts from here
        if is_best:
            self._save(self.run.best_checkpoint)
        # An epoch of a 2-D set lasts milliseconds: saving every one would spend more time writing than training.
        # A run resumed from an older last.pt replays the same epochs to the same numbers, so skipping a save
        # loses nothing but time; a new best.pt, the last epoch, a stop and a watcher (on_epoch) always save.
        due = time.perf_counter() - self.last_epoch_save >= MIN_SECONDS_BETWEEN_EPOCH_SAVES
        if due or is_best or progress.epoch == self.config.train.epochs or self.on_epoch is not None:
            self.save_epoch_end()
        if self.events is not None:
            self.events.epoch(row)
        if self.log:
            self.log(epoch_line(row, self.config.train.epochs))
        if self.on_epoch:
            self.on_epoch(row)  # e.g. a sweep reports to Optuna, whose pruner may stop the run here

    # -- gradient flow ---------------------------------------------------------------------------------

    def _empty_grad_norms(self) -> torch.Tensor | None:
        """(steps per epoch, layers) of NaN (a step not recorded, as in an epoch resumed from an older file)."""
        if not self.config.train.grad_norms:
            return None
        layers = len(linear_layers(self.model))
        return torch.full((self.steps_per_epoch, layers), math.nan, device=self.device)

    def _weights_now(self) -> list[torch.Tensor] | None:
        if not self.config.train.grad_norms:
            return None
        return [layer.weight.detach().clone() for layer in linear_layers(self.model)]

    def _layer_figures(self) -> dict:
        """grad_norm_K: the mean of ||dL/dz_K|| over the epoch's recorded steps (every GRAD_NORM_EVERY-th);
        update_ratio_K: how far the epoch moved W_K, ||W_K(end) - W_K(start)|| / ||W_K(start)||. K = 1 is the
        lowest layer. None where not known."""
        if self.step_grad_norms is None:
            return {}
        means = self.step_grad_norms.nanmean(dim=0).tolist()  # NaN where no step was recorded
        figures = {f"grad_norm_{k}": (mean if math.isfinite(mean) else None) for k, mean in enumerate(means, 1)}
        for k, layer in enumerate(linear_layers(self.model), 1):
            ratio = None
            if self.epoch_start_weights is not None:
                start = self.epoch_start_weights[k - 1]
                ratio = float((layer.weight.detach() - start).norm() / start.norm().clamp_min(1e-12))
            figures[f"update_ratio_{k}"] = ratio
        return figures

    def save_epoch_end(self) -> None:
        """last.pt and metrics.csv as of the end of the epoch just finished."""
        self._save(self.run.last_checkpoint)
        self.run.write_metrics(self.progress.history)
        self.last_epoch_save = time.perf_counter()
        self.saved_epoch = self.progress.epoch

    def _save(self, path: Path) -> None:
        state = TrainingState(
            run_id=self.run_id,
            optimizer=self.engine.optimizer_state(),
            progress=dict(self.progress.__dict__),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            shuffle_rng=self.epoch_start_state,
            augment_rng=self.augment_generator.get_state().cpu(),
            step_losses=self.step_losses.cpu(),
            step_correct=self.step_correct.cpu(),
            step_grad_norms=None if self.step_grad_norms is None else self.step_grad_norms.cpu(),
            # mid-epoch only: at an epoch's end the next epoch starts from the weights saved beside them
            epoch_start_weights=(
                [weight.cpu() for weight in self.epoch_start_weights]
                if self.progress.step_in_epoch and self.epoch_start_weights is not None
                else None
            ),
        )
        contents = {**model_contents(self.config, self.model, self.raw.info), **training_contents(state)}
        save_checkpoint(path, {**contents, "step": self.choice.as_dict()})

    def _stop(self, signal_number: int) -> None:
        name = signal.Signals(signal_number).name
        progress = self.progress
        stopped = (
            f"stopped by {name} at epoch {progress.epoch + 1}, step {progress.step_in_epoch}; "
            f"saved {self.run.last_checkpoint}"
        )
        raise TrainingInterrupted(f"{stopped}; resume with: {self.resume_command}", signal_number, stopped)

    # -- the end ---------------------------------------------------------------------------------------

    def summarize(self) -> dict:
        best_path = self.run.best_checkpoint
        best_model = restore_model(best_path, load_checkpoint(best_path)).to(self.device)
        test = evaluate(best_model, self.splits["test"], self.config.train.eval_batch_size, len(self.raw.info.classes))
        progress, history = self.progress, self.progress.history
        return {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "test_n": test.n,
            "test_checkpoint": best_path.name,
            "test_confusion_matrix": test.confusion_matrix,  # rows: true class; for `mnist-ffn plot`
            "classes": list(self.raw.info.classes),
            "best_epoch": progress.best_epoch,
            "best_val_accuracy": history[progress.best_epoch - 1]["val_acc"],
            "epochs": len(history),
            "final_train_loss": history[-1]["train_loss"],
            "final_train_accuracy": history[-1]["train_acc"],
            "wall_seconds": progress.wall_seconds,
            "train_seconds": progress.train_seconds,
            "train_samples_per_second": progress.samples_seen / max(progress.train_seconds, 1e-9),
            "time_to_best_seconds": progress.time_to_best_seconds,
            **peak_memory(self.device),
            "dataset": self.raw.info.name,
            "train_images": len(self.splits["train"]),
            "val_images": len(self.splits["val"]),
            "architecture": self.architecture,
            "parameters": count_parameters(self.model),
            "device": str(self.device),
            "device_name": device_name(self.device),
            "engine": self.choice.engine,
            "precision": self.choice.precision,
            "precision_why": self.choice.why,
            "threads": torch.get_num_threads(),
            "seed": self.config.train.seed,
            "run_id": self.run_id,
            "torch_version": str(torch.__version__),
            "mnist_ffn_version": __version__,
        }


# -- the lines printed while training ----------------------------------------------------------------------


def start_line(
    *,
    resumed_at_epoch: int | None,
    architecture: str,
    parameters: int,
    device: str,
    threads: int | None,
    train_images: int,
    val_images: int,
    dataset_title: str,
    unit: str,
    epochs: int,
    batch_size: int,
    choice: StepChoice,
) -> str:
    """The first line of `train`: what is trained, on what, how, for how long."""
    where = f"resuming at epoch {resumed_at_epoch}" if resumed_at_epoch else "training"
    on = f"{device}, {threads} threads" if threads else device
    engine = "hand-written backprop" if choice.engine == "backprop" else "autograd"
    return (
        f"{where} {architecture} ({parameters:,} parameters) on {on}: {train_images:,} train / "
        f"{val_images:,} val {unit} of {dataset_title}, {epochs} epochs of batch {batch_size}; "
        f"{engine} in {choice.precision} ({choice.why})"
    )


def epoch_line(row: dict, epochs: int) -> str:
    """One line per epoch, from its metrics.csv row."""
    width = len(str(epochs))
    line = f"epoch {row['epoch']:>{width}}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.2%}"
    if row["val_acc"] is not None:
        line += f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.2%}"
    return line + f"  lr {row['lr']:.4g}  {row['seconds']:.1f}s"


def train(
    config: Config | None,
    *,
    data_dir: Path,
    out: Path,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    log=print,
    progress_bars: bool = True,
    on_epoch=None,
) -> dict:
    """Train a new run into `out` (or resume the run there) and return its summary.

    `on_epoch(row)` is called after each epoch's checkpoint and metrics are saved; an exception it
    raises stops the run there, resumable.

    The folder is locked for the whole call. Nothing in it is deleted or written before the
    config, the checkpoint and the data have all been checked.
    """
    run = RunFolder(out)
    command = resume_command(out, data_dir, device)
    trainer = None
    threads = torch.get_num_threads()  # train.threads holds for this run only, not for the caller's next one
    try:
        with StopSignals() as stop, run.locked("--resume" if resume else "--out"):
            checkpoint = state = None
            if resume:
                run.open_for_resume()
                checkpoint = load_checkpoint(run.last_checkpoint)
                config = checkpoint_config(run.last_checkpoint, checkpoint)
                state = read_training_state(run.last_checkpoint, checkpoint)
                _check_same_run(run, config, state)
            else:
                run.check_can_create(force=force)
            trainer = Trainer(
                config, run, pick_device(device), log=log, progress_bars=progress_bars, resume_command=command
            )
            trainer.on_epoch = on_epoch
            trainer.load_data(data_dir)  # before the run folder is touched: bad data must destroy nothing
            trainer.start_engine(checkpoint)
            if state is not None:
                trainer.restore(checkpoint, state)
            else:
                trainer.run_id = run.create(config, force=force)
            if log:
                log(trainer.start_line(resumed=state is not None))
            trainer.events = EventLog.open(run.path, config, trainer.progress.history if state is not None else None)
            trainer.fit(stop)
            trainer.finished = True
            summary = trainer.summarize()
            run.write_summary(summary)
            if trainer.events is not None:
                trainer.events.finish(summary)
            return summary
    except Interrupted as exc:
        why = _interrupted(run, trainer, exc.signal_number, command, new_run=not resume)
        raise TrainingInterrupted(why, exc.signal_number) from None
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not isinstance(exc, torch.OutOfMemoryError) and "alloc" not in str(exc).lower():
            raise
        where = trainer.device if trainer is not None else device
        raise MnistFfnError(
            f"out of memory on {where} training {architecture(config.model)} with batch "
            f"{config.train.batch_size}; use smaller model.hidden or train.batch_size"
        ) from None
    finally:
        if trainer is not None and trainer.events is not None:
            trainer.events.close()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


def _interrupted(run: RunFolder, trainer: Trainer | None, signal_number: int, command: str, *, new_run: bool) -> str:
    """What a signal that could not wait for a checkpoint left behind, said truthfully."""
    name = signal.Signals(signal_number).name
    if trainer is not None and trainer.finished:
        return (
            f"stopped by {name} during the final evaluation; training is complete in {run.last_checkpoint}; "
            f"write summary.json with: {command}"
        )
    if run.last_checkpoint.exists():
        return f"stopped by {name}; {run.last_checkpoint} holds the last checkpoint; resume with: {command}"
    if trainer is not None and new_run:  # not only once run.create returned: it may have written config.toml first
        run.clear_unstarted_run()
    return f"stopped by {name} before the first checkpoint; nothing was saved"


def _check_same_run(run: RunFolder, config: Config, state: TrainingState) -> None:
    """Refuse to resume a last.pt that did not come from the run whose config.toml and best.pt lie beside it."""
    where = f"--resume {run.path}"
    if not run.config.is_file():
        raise UsageError(f"{where}: config.toml is missing, so last.pt cannot be matched to this run")
    try:
        on_disk = load_config(run.config)
    except ConfigError as exc:
        raise UsageError(f"{where}: config.toml is damaged ({exc})") from None
    refusal = "; refusing to mix two runs in one folder (start anew with --out and --force)"
    if on_disk != config or run.config_run_id() != state.run_id:
        raise CheckpointError(f"{where}: last.pt belongs to another run than config.toml{refusal}")
    if run.best_checkpoint.exists() and load_checkpoint(run.best_checkpoint).get("run_id") != state.run_id:
        raise CheckpointError(f"{where}: best.pt belongs to another run than last.pt{refusal}")
