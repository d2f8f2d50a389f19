"""What a checkpoint holds, and the one way to save (atomic) and load (weights_only) it.

A checkpoint is a plain dict of tensors, numbers, strings and lists, so `torch.load(...,
weights_only=True)` can read it and never runs code from the file. It holds everything
needed to rebuild and judge the model alone (the full config, the data set, its
normalization and class names) and everything needed to resume training exactly
(optimizer, progress within the epoch, every random generator).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from mnist_ffn import __version__
from mnist_ffn.atomic import write_atomically
from mnist_ffn.config import Config, config_from_dict
from mnist_ffn.data import DATASETS, DatasetInfo
from mnist_ffn.errors import CheckpointError, ConfigError
from mnist_ffn.model import build_model

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
        "model": {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()},
    }


def load_checkpoint(path: Path) -> dict:
    """Read and check a checkpoint on the CPU; raises CheckpointError with a reason a person can act on."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before it refuses a file
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
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
    if checkpoint["dataset"] not in DATASETS:
        raise CheckpointError(f"{path}: trained on an unknown data set {checkpoint['dataset']!r}")
    return checkpoint


def checkpoint_config(path: Path, checkpoint: dict) -> Config:
    try:
        return config_from_dict(checkpoint["config"], origin=str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not valid for this mnist-ffn ({exc})") from None


def restore_model(path: Path, checkpoint: dict) -> nn.Sequential:
    """Rebuild the model the checkpoint declares and load its weights into it."""
    config = checkpoint_config(path, checkpoint)
    model = build_model(config.model, num_classes=len(checkpoint["classes"]))
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        first_line = str(exc).strip().splitlines()[-1].strip() if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: its weights do not fit the architecture it declares ({first_line})") from None
    return model
