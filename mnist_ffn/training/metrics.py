"""Judge a model on a split: loss, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ffn.data.splits import Split


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
