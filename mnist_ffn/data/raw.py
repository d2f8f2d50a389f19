"""The data as read: a data set's training and test parts, as tensors, and what they are (the catalog's entry,
or a 2-D set's own). What every loader returns and every split is taken from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_ffn.catalog import DatasetInfo
from mnist_ffn.errors import DataError


@dataclass
class RawDataset:
    """The four files as read: uint8 images (N, 28, 28) and int64 labels (N,); for a 2-D set, its points'
    float32 features (N, F), already in the network's input units."""

    info: DatasetInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_points: torch.Tensor | None = None  # a 2-D set's coordinates (N, 2), for the pictures
    test_points: torch.Tensor | None = None


def check_same_points(raw: RawDataset, plane: dict | None, checkpoint: Path) -> None:
    """A run on a CSV's points is evaluated, plotted and resumed on those points only: refuse a changed file."""
    trained_on = (plane or {}).get("sha256")
    if trained_on and raw.info.sha256.get("points") != trained_on:
        raise DataError(
            f"{raw.info.title} have changed since {checkpoint} was trained on them "
            f"(SHA-256 {trained_on[:12]}...); use the file the run was trained on"
        )
