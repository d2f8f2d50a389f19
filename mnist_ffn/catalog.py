"""The data sets mnist-ffn knows (names, checksums, normalization, class names) and where their files are.

No torch here, so the config can be checked (and `--help` answered, and a sweep started) before torch
is imported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PLANE_SETS = ("circle", "xor", "gauss", "spiral")
POINTS = "points"  # data.dataset of a CSV's points (data.points = FILE selects it)
FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin_x1", "sin_x2")
MAX_CLASSES = 100
PLAYGROUND_SCALE = 6.0  # the Playground draws its points in [-6, 6] x [-6, 6]
IMAGE_SIDE = 28  # every image data set's: 28 x 28 pixels, one channel
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # the value of data.dataset
    title: str  # what people call it
    folder: str  # torchvision's class name, also its folder under the data dir
    sha256: dict[str, str]  # file name -> SHA-256 of the original, extracted file
    mean: float  # pixel mean and std of the training set, in [0, 1] units
    std: float
    classes: tuple[str, ...]
    inputs: int = IMAGE_PIXELS  # the network's input width: pixels, or a 2-D set's features
    features: tuple[str, ...] = ()  # a 2-D set's: how a point becomes the network's input (see points.py)
    scale: float = 0.0  # a 2-D set's: coordinates are divided by it before the features are computed

    @property
    def is_plane(self) -> bool:
        """A 2-D data set: points, not images."""
        return bool(self.features)


DATASETS = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        folder="MNIST",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        mean=0.1307,
        std=0.3081,
        classes=tuple(str(digit) for digit in range(10)),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        folder="FashionMNIST",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        mean=0.2860,
        std=0.3530,
        # torchvision.datasets.FashionMNIST.classes, kept here so reading a checkpoint needs no torchvision
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
}


def tensor_cache_dir() -> Path:
    return Path(os.environ.get("MNIST_FFN_CACHE") or default_data_dir() / "tensors")


def default_data_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "mnist-ffn"


def resolve_data_dir(option: Path | None) -> Path:
    """--data-dir, else $MNIST_FFN_DATA, else a per-user cache folder."""
    if option is not None:
        return option
    from_env = os.environ.get("MNIST_FFN_DATA")
    return Path(from_env) if from_env else default_data_dir()
