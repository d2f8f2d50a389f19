"""Splits of a data set on the training device: train, validation (the last training images) and test, and the
batches taken from them. Pixels stay uint8 until a batch is taken."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist_ffn.data.raw import RawDataset
from mnist_ffn.errors import DataError


@dataclass
class Split:
    """Images as uint8 pixels (N, 784) and labels (N,) int64, on one device.

    Pixels stay uint8 (a quarter of the memory of float32) and each batch is normalized as
    it is taken: one conversion of a few hundred rows, cheap next to the matrix products.
    """

    pixels: torch.Tensor
    labels: torch.Tensor
    mean: float  # normalization, in [0, 1] pixel units
    std: float

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inputs(self.pixels.index_select(0, index)), self.labels.index_select(0, index)

    def slice(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inputs(self.pixels[start:stop]), self.labels[start:stop]

    def _inputs(self, rows: torch.Tensor) -> torch.Tensor:
        if rows.dtype == torch.uint8:
            return normalize(rows, self.mean, self.std)
        return rows.clone()  # a 2-D set's features: already the network's inputs (a copy: the engine writes in place)


def normalize(pixels: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Pixels 0-255 of any shape (N, ...) -> float32 (N, 784) in the model's input units: (x/255 - mean) / std."""
    flat = pixels.flatten(1).to(torch.float32, copy=True)
    return flat.sub_(255.0 * mean).div_(255.0 * std)


def make_splits(
    raw: RawDataset, val_size: int, limit: int, device: torch.device, normalization: dict | None = None
) -> dict[str, Split]:
    """train: the first images (up to `limit`); val: the last `val_size` training images; test: all 10k.

    `normalization` ({"mean", "std"}, e.g. from a checkpoint) defaults to the data set's own statistics.
    """
    mean, std = (normalization["mean"], normalization["std"]) if normalization else (raw.info.mean, raw.info.std)
    available = len(raw.train_labels) - val_size
    if raw.info.is_plane and len(raw.train_labels) < 2:  # the test share took (nearly) every point
        total = len(raw.train_labels) + len(raw.test_labels)
        raise DataError(
            f"data.test_share holds out {len(raw.test_labels):,} of the {total:,} points of {raw.info.title}, "
            f"leaving {len(raw.train_labels)} to train on; lower data.test_share"
        )
    if available <= 0:
        held = len(raw.train_labels)
        where = f"{raw.info.title}: {held:,} for training and validation" if raw.info.is_plane else (
            f"the training file holds {held:,}"
        )  # fmt: skip
        unit = "points" if raw.info.is_plane else "images"
        raise DataError(
            f"train.val_size = {val_size:,} leaves no training {unit}: {where}; set it below {held:,}, e.g. "
            f"--set train.val_size={held // 10}"
        )
    train_count = min(limit, available) if limit else available
    parts = {
        "train": (raw.train_images[:train_count], raw.train_labels[:train_count]),
        "val": (raw.train_images[available:], raw.train_labels[available:]),
        "test": (raw.test_images, raw.test_labels),
    }
    return {
        name: Split(pixels=images.flatten(1).to(device), labels=labels.to(device), mean=mean, std=std)
        for name, (images, labels) in parts.items()
    }


def shuffled_batches(split: Split, batch_size: int, order: torch.Tensor, first_batch: int = 0):
    """Yield (images, labels) in `order` (a permutation of the split), starting at batch `first_batch`."""
    order = order.to(split.pixels.device)
    for start in range(first_batch * batch_size, len(order), batch_size):
        yield split.take(order[start : start + batch_size])
