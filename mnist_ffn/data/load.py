"""The data a config names, read or made: the image files of a data set, a 2-D set generated from the seed, or a
person's CSV of points, each held out its test share as it was made."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mnist_ffn.catalog import DATASETS, POINTS, DatasetInfo
from mnist_ffn.data.idx import load_dataset
from mnist_ffn.data.plane import features, generate
from mnist_ffn.data.raw import RawDataset
from mnist_ffn.points_csv import read_csv

if TYPE_CHECKING:
    from mnist_ffn.config import DataConfig


def load_data(data: DataConfig, data_dir: Path, seed: int) -> RawDataset:
    """The data a config names: the image files in `data_dir`, or a 2-D set generated from `seed` (or read
    from data.points), its test share held out."""
    if data.dataset in DATASETS:
        return load_dataset(data_dir, data.dataset, verify_checksums=data.verify_checksums, download=data.download)
    if data.dataset == POINTS:
        made = read_csv(Path(data.points))
    else:
        made = generate(data.dataset, data.samples, data.noise, seed, data.arms)
    xy = torch.tensor(made.xy, dtype=torch.float32).reshape(-1, 2)
    labels = torch.tensor(made.labels, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))  # mix the classes
    xy, labels = xy[order], labels[order]
    inputs = features(xy, list(data.features), made.scale)
    test_count = max(1, round(len(labels) * data.test_share))
    train_count = len(labels) - test_count
    title = f"{data.points}'s points" if data.dataset == POINTS else data.dataset
    info = DatasetInfo(
        name=data.dataset, title=title, folder="", sha256={"points": made.sha256} if made.sha256 else {},
        mean=0.0, std=1.0, classes=made.classes,
        inputs=inputs.shape[1], features=tuple(data.features), scale=made.scale,
    )  # fmt: skip
    train, test = slice(0, train_count), slice(train_count, None)
    return RawDataset(
        info, inputs[train], labels[train], inputs[test], labels[test], train_points=xy[train], test_points=xy[test]
    )
