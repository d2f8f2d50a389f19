"""The whole checkpoint format: what a checkpoint holds, how it is saved (atomic), loaded (weights_only) and checked.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so `torch.load(...,
weights_only=True)` can read it and never runs code from the file. It holds everything
needed to rebuild and judge the model alone (the full config, the data set, its
normalization and class names: `model_contents`) and, in last.pt and best.pt, everything
needed to resume training exactly (`training_contents`: optimizer, progress within the
epoch, every random generator, the run's identity). Every field is checked on loading:
a damaged or hand-edited file is refused with a reason, never trusted.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mnist_ffn.catalog import DATASETS, FEATURES, IMAGE_PIXELS, MAX_CLASSES, DatasetInfo
from mnist_ffn.config import DATASET_NAMES, Config, config_from_dict
from mnist_ffn.errors import CheckpointError, ConfigError
from mnist_ffn.files import open_regular, write_atomically
from mnist_ffn.messages import reason
from mnist_ffn.training.devices import callers_random_state
from mnist_ffn.training.model import build_model
from mnist_ffn.version import __version__

FORMAT = "mnist-ffn checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("config", "dataset", "normalization", "classes", "model")


def save_checkpoint(path: Path, contents: dict) -> None:
    checkpoint = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mnist_ffn_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is a class weights_only refuses
        **contents,
    }
    write_atomically(path, lambda file: torch.save(checkpoint, file))


def model_contents(config: Config, model: nn.Module, info: DatasetInfo) -> dict:
    """The part of a checkpoint that `eval` and `predict` need: the model and how to feed it."""
    return {
        "config": config.to_dict(),
        "dataset": info.name,
        "normalization": {"mean": info.mean, "std": info.std},
        "classes": list(info.classes),
        # a 2-D set's points become inputs by these: the features of the coordinates divided by the scale
        **({"plane": _plane(info)} if info.is_plane else {}),
        "model": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
    }


def _plane(info: DatasetInfo) -> dict:
    """How a 2-D set's points become inputs, and (for a CSV's) which points they were."""
    return {"features": list(info.features), "scale": info.scale, "sha256": info.sha256.get("points", "")}


@dataclass
class TrainingState:
    """The part of last.pt that `--resume` needs beyond the model, checked field by field."""

    run_id: str | None  # None in checkpoints written before runs had an identity
    optimizer: dict  # torch.optim.SGD.state_dict()
    progress: dict  # train.Progress as a dict
    torch_rng: torch.Tensor
    cuda_rng: list[torch.Tensor]
    shuffle_rng: torch.Tensor  # the shuffling generator at the start of the epoch in progress
    augment_rng: torch.Tensor
    step_losses: torch.Tensor  # (steps per epoch,) float32: the epoch in progress so far
    step_correct: torch.Tensor  # (steps per epoch,) int64
    # (steps per epoch, layers) float32: each step's ||dL/dz|| per layer (NaN: not recorded); None in older files
    step_grad_norms: torch.Tensor | None = None
    # the weights at the start of the epoch in progress, for its update-to-weight ratios: saved mid-epoch only
    epoch_start_weights: list[torch.Tensor] | None = None


def training_contents(state: TrainingState) -> dict:
    return {
        "run_id": state.run_id,
        "optimizer": state.optimizer,
        "progress": state.progress,
        "rng": {
            "torch": state.torch_rng,
            "cuda": state.cuda_rng,
            "shuffle_epoch_start": state.shuffle_rng,
            "augment": state.augment_rng,
        },
        "epoch_partial": {
            "step_losses": state.step_losses,
            "step_correct": state.step_correct,
            "step_grad_norms": state.step_grad_norms,
            "epoch_start_weights": state.epoch_start_weights,
        },
    }


# train.Progress's fields and their types; a field of another type means a damaged or hand-edited file.
PROGRESS_TYPES = {
    "epoch": int,
    "step_in_epoch": int,
    "global_step": int,
    "train_seconds": float,
    "wall_seconds": float,
    "epoch_seconds": float,
    "samples_seen": int,
    "best_val_accuracy": float,
    "best_epoch": int,
    "time_to_best_seconds": float,
    "history": list,
}


def read_training_state(path: Path, checkpoint: dict) -> TrainingState:
    """The resume fields of a loaded checkpoint; raises CheckpointError naming the first damaged one."""

    def fail(field: str, problem: str):
        raise CheckpointError(f"{path}: damaged checkpoint: {field} {problem}; it cannot be resumed")

    for key in ("optimizer", "progress", "rng", "epoch_partial"):
        if not isinstance(checkpoint.get(key), dict):
            fail(key, "is missing or not a table")
    run_id = checkpoint.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        fail("run_id", "is not a string")
    progress = checkpoint["progress"]
    if set(progress) != set(PROGRESS_TYPES):
        fail("progress", f"has keys {sorted(progress)}")
    for key, kind in PROGRESS_TYPES.items():
        value = progress[key]
        fits = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            fits = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not fits or (kind is int and value < 0):
            fail(f"progress.{key}", f"is {value!r}")
    rng, partial = checkpoint["rng"], checkpoint["epoch_partial"]
    for key in ("torch", "shuffle_epoch_start", "augment"):
        if not (isinstance(rng.get(key), torch.Tensor) and rng[key].dtype == torch.uint8):
            fail(f"rng.{key}", "is not a generator state")
    cuda = rng.get("cuda")
    if not isinstance(cuda, list) or not all(isinstance(item, torch.Tensor) for item in cuda):
        fail("rng.cuda", "is not a list of generator states")
    losses, correct = partial.get("step_losses"), partial.get("step_correct")
    if not (isinstance(losses, torch.Tensor) and losses.dtype == torch.float32 and losses.dim() == 1):
        fail("epoch_partial.step_losses", "is not a vector of losses")
    if not (isinstance(correct, torch.Tensor) and correct.dtype == torch.int64 and correct.shape == losses.shape):
        fail("epoch_partial.step_correct", "does not match step_losses")
    if progress["step_in_epoch"] > len(losses):
        fail("progress.step_in_epoch", f"is past the {len(losses)} steps of an epoch")
    norms, start_weights = partial.get("step_grad_norms"), partial.get("epoch_start_weights")
    if norms is not None and not (
        isinstance(norms, torch.Tensor) and norms.dtype == torch.float32 and norms.dim() == 2
        and len(norms) == len(losses)
    ):  # fmt: skip
        fail("epoch_partial.step_grad_norms", "is not a (steps, layers) table of norms")
    if start_weights is not None and not (
        isinstance(start_weights, list) and all(isinstance(weight, torch.Tensor) for weight in start_weights)
    ):
        fail("epoch_partial.epoch_start_weights", "is not a list of weights")
    return TrainingState(
        run_id=run_id,
        optimizer=checkpoint["optimizer"],
        progress=progress,
        torch_rng=rng["torch"],
        cuda_rng=cuda,
        shuffle_rng=rng["shuffle_epoch_start"],
        augment_rng=rng["augment"],
        step_losses=losses,
        step_correct=correct,
        step_grad_norms=norms,
        epoch_start_weights=start_weights,
    )


def load_checkpoint(path: Path) -> dict:
    """Read and check a checkpoint on the CPU; raises CheckpointError with a reason a person can act on."""
    try:
        file = open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it as a checkpoint ({exc.strerror})") from None
    try:
        with file, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before it refuses a file
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global (class, function) it does not know: that is code, never run.
        found = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", str(exc), re.IGNORECASE)
        if found:
            raise CheckpointError(
                f"{path}: refused: the file carries pickled code ({found.group(1)}), which mnist-ffn never runs"
            ) from None
        raise CheckpointError(f"{path}: not a checkpoint, or truncated (unreadable pickle)") from None
    except Exception as exc:  # torch reports a damaged zip or pickle with many exception types
        raise CheckpointError(f"{path}: not a checkpoint, or truncated ({type(exc).__name__})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnist-ffn checkpoint (a PyTorch file of another kind)")
    version = checkpoint.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, but this mnist-ffn reads version {FORMAT_VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: damaged checkpoint, missing {', '.join(missing)}")
    check_model_fields(path, checkpoint)
    return checkpoint


def check_model_fields(path: Path, checkpoint: dict, kind: str = "checkpoint") -> None:
    """The fields eval and predict trust: each of the right type, or the file is refused (`kind`: what the file
    is, in the message: a checkpoint, or a model folder's config.json)."""

    def fail(problem: str):
        raise CheckpointError(f"{path}: damaged {kind}: {problem}")

    dataset = checkpoint["dataset"]
    if not isinstance(dataset, str) or dataset not in DATASET_NAMES:
        raise CheckpointError(f"{path}: trained on an unknown data set {dataset!r}")
    if not isinstance(checkpoint["config"], dict):
        fail("its config is not a table")
    normalization = checkpoint["normalization"]
    if not isinstance(normalization, dict):
        fail("normalization is not a table")
    for key in ("mean", "std"):
        value = normalization.get(key)
        if not (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)):
            fail(f"normalization.{key} is {'missing' if value is None else repr(value)}")
    if normalization["std"] <= 0:
        fail(f"normalization.std is {normalization['std']!r}, not > 0")
    classes = checkpoint["classes"]
    if dataset in DATASETS:
        if checkpoint.get("plane") is not None:
            fail(f"plane is given for {dataset}, a data set of images")
        expected = len(DATASETS[dataset].classes)
        if not (isinstance(classes, list) and len(classes) == expected and all(isinstance(c, str) for c in classes)):
            fail(f"classes is not a list of {expected} names")
    else:
        if not (
            isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)
        ):
            fail("classes is not a list of class names")
        plane = checkpoint.get("plane")
        features, scale = (plane.get("features"), plane.get("scale")) if isinstance(plane, dict) else (None, None)
        if not (isinstance(features, list) and features and all(name in FEATURES for name in features)):
            fail("plane.features is not a list of feature names")
        if not (isinstance(scale, int | float) and not isinstance(scale, bool) and math.isfinite(scale) and scale > 0):
            fail("plane.scale is not a number > 0")
    weights = checkpoint["model"]
    if not (isinstance(weights, dict) and all(isinstance(value, torch.Tensor) for value in weights.values())):
        fail("model is not a table of tensors")


def checkpoint_config(path: Path, checkpoint: dict) -> Config:
    try:
        return config_from_dict(checkpoint["config"], origin=str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not valid for this mnist-ffn ({exc})") from None


def restore_model(path: Path, checkpoint: dict) -> nn.Sequential:
    """Rebuild the model the checkpoint declares and load its weights into it."""
    config = checkpoint_config(path, checkpoint)
    plane = checkpoint.get("plane")
    inputs = len(plane["features"]) if isinstance(plane, dict) else IMAGE_PIXELS
    with callers_random_state():  # its initial weights are drawn, then replaced: the caller's draws stay theirs
        model = build_model(config.model, num_classes=len(checkpoint["classes"]), inputs=inputs)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path}: its weights do not fit the architecture it declares ({reason(exc, 'last')})"
        ) from None
    return model
