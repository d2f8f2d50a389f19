"""`mnist-ffn eval`: a checkpoint judged alone, on a split of the data it was trained on (for a CSV's points, the
file it was trained on: refused if it changed)."""

from __future__ import annotations

from pathlib import Path

from mnist_ffn.catalog import DATASETS
from mnist_ffn.data.load import load_data
from mnist_ffn.data.raw import check_same_points
from mnist_ffn.data.splits import make_splits
from mnist_ffn.errors import DataError, UsageError
from mnist_ffn.inference.network import load
from mnist_ffn.training.devices import torch_threads
from mnist_ffn.training.metrics import evaluate
from mnist_ffn.training.model import architecture


def evaluate_checkpoint(
    path: Path, data_dir: Path, *, split: str = "test", device: str = "auto", expected_dataset: str | None = None
) -> dict:
    """Everything `mnist-ffn eval` reports, from the checkpoint (as inference.network loads it) and the data alone."""
    network = load(path, device=device)
    config, dataset = network.config, network.dataset
    if expected_dataset is not None and expected_dataset != dataset:
        raise DataError(
            f"{path} was trained on {DATASETS[dataset].title if dataset in DATASETS else dataset}, "
            f"not {expected_dataset}; its scores on other images would be meaningless"
        )
    raw = load_data(config.data, data_dir, config.train.seed)  # a 2-D set: made again from the run's seed
    check_same_points(raw, network.plane, path)
    splits = make_splits(raw, config.train.val_size, config.train.limit, network.device, network.normalization)
    if len(splits[split]) == 0:
        raise UsageError(
            f"--split {split}: {path} was trained with train.val_size = {config.train.val_size}, "
            f"so it has no {split} images; use --split test"
        )
    with torch_threads(config.train.threads):  # the run's own thread count: the numbers its summary.json holds
        result = evaluate(network, splits[split], config.train.eval_batch_size, num_classes=len(network.classes))
    return {
        "checkpoint": str(path),
        "dataset": dataset,
        "split": split,
        "architecture": architecture(config.model, len(network.classes), raw.info.inputs),
        "classes": network.classes,
        **result.to_dict(),
    }
