"""Judge a model on a split: loss, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ffn.checkpoint import checkpoint_config, load_checkpoint, restore_model
from mnist_ffn.data import DATASETS, Split, check_same_points, load_data, make_splits
from mnist_ffn.devices import pick_device, torch_threads
from mnist_ffn.errors import DataError, UsageError
from mnist_ffn.model import architecture


@dataclass
class EvalResult:
    n: int
    loss: float  # mean cross-entropy, without label smoothing
    accuracy: float
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class

    @property
    def per_class_accuracy(self) -> list[float]:
        return [row[label] / max(1, sum(row)) for label, row in enumerate(self.confusion_matrix)]

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "confusion_matrix": self.confusion_matrix,
        }


def evaluate(model: nn.Module, split: Split, batch_size: int, num_classes: int = 10) -> EvalResult:
    """Large batches under inference_mode; the totals stay on the device and are read once."""
    was_training = model.training
    model.eval()
    device = split.pixels.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)
    with torch.inference_mode():
        for start in range(0, len(split), batch_size):
            images, labels = split.slice(start, start + batch_size)
            logits = model(images).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
            confusion += torch.bincount(labels * num_classes + logits.argmax(dim=1), minlength=num_classes**2)
    model.train(was_training)
    n = len(split)
    matrix = confusion.view(num_classes, num_classes).tolist()
    correct = sum(matrix[label][label] for label in range(num_classes))
    return EvalResult(
        n=n,
        loss=loss_sum.item() / n if n else float("nan"),
        accuracy=correct / n if n else float("nan"),
        confusion_matrix=matrix,
    )


def evaluate_checkpoint(
    path: Path, data_dir: Path, *, split: str = "test", device: str = "auto", expected_dataset: str | None = None
) -> dict:
    """Everything `mnist-ffn eval` reports, from the checkpoint and the data alone."""
    checkpoint = load_checkpoint(path)
    config = checkpoint_config(path, checkpoint)
    dataset = checkpoint["dataset"]
    if expected_dataset is not None and expected_dataset != dataset:
        raise DataError(
            f"{path} was trained on {DATASETS[dataset].title if dataset in DATASETS else dataset}, "
            f"not {expected_dataset}; "
            f"its scores on other images would be meaningless"
        )
    target = pick_device(device)
    model = restore_model(path, checkpoint).to(target)
    raw = load_data(config.data, data_dir, config.train.seed)  # a 2-D set: made again from the run's seed
    check_same_points(raw, checkpoint.get("plane"), path)
    splits = make_splits(raw, config.train.val_size, config.train.limit, target, checkpoint["normalization"])
    if len(splits[split]) == 0:
        raise UsageError(
            f"--split {split}: {path} was trained with train.val_size = {config.train.val_size}, "
            f"so it has no {split} images; use --split test"
        )
    with torch_threads(config.train.threads):  # the run's own thread count: the numbers its summary.json holds
        result = evaluate(model, splits[split], config.train.eval_batch_size, num_classes=len(checkpoint["classes"]))
    return {
        "checkpoint": str(path),
        "dataset": dataset,
        "split": split,
        "architecture": architecture(config.model, len(checkpoint["classes"]), raw.info.inputs),
        "classes": checkpoint["classes"],
        **result.to_dict(),
    }
