"""The Python API, for scripts and notebooks: `train`, `load` and `evaluate`.

    import mnist_ffn
    result = mnist_ffn.train("smoke", overrides={"optim.lr": 0.05})
    print(result.summary["test_accuracy"])
    network = mnist_ffn.load(result.best)
    network.predict(["examples/seven.png"])  # class probabilities, one row per image
    mnist_ffn.evaluate(result.best)          # what `mnist-ffn eval --json` prints

The CLI's `train`, `eval` and `predict` call these same functions. Every problem a person can fix
raises `mnist_ffn.MnistFfnError` (or a subclass) with the one-line message the CLI prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from mnist_ffn.checkpoint import checkpoint_config, load_checkpoint, restore_model
from mnist_ffn.config import TOO_LARGE, Config, load_config, toml_value
from mnist_ffn.data import normalize
from mnist_ffn.datasets import resolve_data_dir
from mnist_ffn.devices import callers_random_state, pick_device
from mnist_ffn.errors import ImageError, UsageError
from mnist_ffn.model import forward_with_activations
from mnist_ffn.points import features
from mnist_ffn.predict import decode_image, preprocess, read_image, to_pil
from mnist_ffn.shell import shown
from mnist_ffn.shipped import resolve

SPLITS = ("test", "val", "train")


@dataclass
class TrainResult:
    """A finished run: its folder and what its summary.json holds."""

    folder: Path
    summary: dict = field(repr=False)

    @property
    def best(self) -> Path:
        """best.pt: the checkpoint with the best validation accuracy (the last one without a validation split)."""
        return self.folder / "best.pt"


def train(
    config: str | Path | None = None,
    *,
    overrides: Mapping[str, object] | Iterable[str] | None = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    quiet: bool = True,
    force: bool = False,
    resume: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a network into a run folder, as `mnist-ffn train` does, and return the finished run.

    config: a preset's name ("smoke", "best": see `mnist-ffn configs`), a TOML file, or None for the defaults.
    overrides: {"section.key": value}, applied after the config, e.g. {"optim.lr": 0.05, "model.hidden": [256]}
    (or the CLI's "section.key=value" strings).
    out: the run folder (default: runs/<config>-<date>-<time>); force replaces a run already there.
    data_dir: the folder with the data files (default: $MNIST_FFN_DATA, else ~/.cache/mnist-ffn).
    quiet: False prints a line per epoch and progress bars; `log` takes the lines instead of print.
    resume: a run folder to continue from its last.pt, with its saved config (then leave config,
    overrides, out and force out).
    """
    from mnist_ffn.training import train as run_training

    if resume is not None and (config is not None or overrides or out is not None or force):
        raise UsageError("resume continues a run with its saved config; leave out config, overrides, out and force")
    if config is not None and not isinstance(config, str | os.PathLike):
        raise UsageError(f"config: a preset's name or a TOML file, not {shown(config)}")
    folder = Path(resume) if resume is not None else Path(out) if out is not None else default_run_folder(config)
    resolved = None if resume is not None else resolve_config(config, overrides)
    with callers_random_state():  # the run seeds torch's generator; the caller's own draws go on as they were
        summary = run_training(
            resolved,
            data_dir=resolve_data_dir(Path(data_dir) if data_dir is not None else None),
            out=folder,
            device=device,
            resume=resume is not None,
            force=force,
            log=None if quiet else (log or print),
            progress_bars=not quiet,
        )
    return TrainResult(folder, summary)


def resolve_config(
    config: str | Path | None, overrides: Mapping[str, object] | Iterable[str] | str | None = None
) -> Config:
    """Defaults < the preset or file `config` < `overrides` ({"section.key": value}, or "section.key=value" strings,
    or one such string)."""
    config_file = resolve(config, "preset", option="--config") if config is not None else None
    return load_config(config_file, override_strings(overrides))


def override_strings(overrides: Mapping[str, object] | Iterable[str] | str | None) -> list[str]:
    """The CLI's "section.key=value" strings for the API's overrides, whichever form they came in."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        strings = []
        for key, value in overrides.items():
            try:
                strings.append(f"{key}={toml_value(config_value(str(key), value))}")
            except (RecursionError, ValueError):  # a number too long to write, lists nested past the stack
                raise UsageError(f"overrides[{shown(str(key))}]: {TOO_LARGE}") from None
        return strings
    if not isinstance(overrides, Iterable):
        raise UsageError(
            f"overrides: give {{'section.key': value}} or 'section.key=value' strings, not {shown(overrides)}"
        )
    strings = list(overrides)
    for item in strings:
        if not isinstance(item, str):
            raise UsageError(
                f"overrides: give {{'section.key': value}} or 'section.key=value' strings, not {shown(item)}"
            )
    return strings


def config_value(key: str, value: object) -> object:
    """A Python value as a config key takes it: a path as its text, a numpy or torch number as a Python number,
    a tuple as a list; anything else that is not a number, string, bool or list is refused, naming the key."""
    if isinstance(value, bool):
        return value
    for kind in (int, float, str):  # numpy's float64 is a float, and writes itself as np.float64(...)
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [config_value(key, item) for item in value]
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", None) == 0:  # numpy and torch scalars
        return config_value(key, value.item())
    raise UsageError(f"overrides[{shown(key)}]: {shown(value)} is not a config value (a number, text, bool or list)")


def default_run_folder(config: str | Path | None, prefix: str = "") -> Path:
    """runs/<config>-<date>-<time> (or runs/<prefix><date>-<time>), with a suffix if one started that second."""
    if config is not None:
        prefix = f"{Path(config).stem}-"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = Path("runs") / f"{prefix}{stamp}"
    suffix = 2
    while candidate.exists():
        candidate = Path("runs") / f"{prefix}{stamp}-{suffix}"
        suffix += 1
    return candidate


class Network(nn.Sequential):
    """A trained network, in eval mode: an nn.Sequential with what it was trained on and how to feed it."""

    config: Config
    classes: list[str]
    dataset: str
    normalization: dict[str, float]
    checkpoint: Path

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def predict(self, images) -> torch.Tensor:
        """Class probabilities, shape (number of images, len(classes)), preprocessed exactly as `mnist-ffn predict`
        does (inverted if dark on light, framed as the data set was made). Images are image files (paths), PIL
        images, an image file's bytes, or greyscale pixel arrays (numpy or torch: (H, W) for one image,
        (N, H, W) or (N, 1, H, W) for several; uint8 0-255, or floats in [0, 1] as torchvision's ToTensor
        gives); or a list of any of these.

        A file that cannot be read, or an image with nothing in it, raises ImageError naming it; anything else
        that is no image, UsageError."""
        if self.plane is not None:
            raise UsageError(
                f"{self.checkpoint}: a network of 2-D points ({self.dataset}), not of images; use predict_points"
            )
        frames = [preprocess(image, self.dataset) for image in as_images(images)]
        return self.probabilities(torch.stack(frames)) if frames else torch.empty(0, len(self.classes))

    plane: dict | None  # a 2-D set's network: {"features": [...], "scale": s}; None for images

    def predict_points(self, xy) -> torch.Tensor:
        """Class probabilities for points of the plane, shape (N, 2) -> (N, classes): a 2-D set's network."""
        if self.plane is None:
            raise UsageError(f"{self.checkpoint}: a network of images ({self.dataset}); give it images, not points")
        try:
            points = torch.as_tensor(xy, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise UsageError(f"predict_points: points are numbers of shape (N, 2), not {shown(xy)}") from None
        if points.dim() != 2 or points.shape[1] != 2:
            raise UsageError(f"predict_points: points are of shape (N, 2), got shape {tuple(points.shape)}")
        if not bool(torch.isfinite(points).all()):
            raise UsageError("predict_points: every coordinate must be a finite number")
        with torch.inference_mode():
            return torch.softmax(self(self.inputs_of_points(points)).float(), dim=1).cpu()

    def inputs_of_points(self, xy) -> torch.Tensor:
        """The network's input for points (N, 2): their features, as in training."""
        return features(xy, self.plane["features"], self.plane["scale"]).to(self.device)

    def activations(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's a = f(z) for a batch of inputs: one (N, width) tensor per layer."""
        with torch.inference_mode():
            _, found = forward_with_activations(self, inputs)
            return [a.float().cpu() for a in found]

    def probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        """Class probabilities for 28x28 frames with pixel values 0-255, shape (N, 28, 28), as predict makes them."""
        batch = normalize(frames, self.normalization["mean"], self.normalization["std"]).to(self.device)
        with torch.inference_mode():
            return torch.softmax(self(batch).float(), dim=1).cpu()


def as_images(images) -> list[Image.Image]:
    """What `Network.predict` is given, as PIL images: one image, or a list of them, in any form it takes."""
    if isinstance(images, str | os.PathLike | Image.Image | bytes | bytearray) or _dimensions(images) is not None:
        images = [images]
    elif not isinstance(images, Iterable):
        raise UsageError(f"predict: give image files, PIL images, bytes or pixel arrays, not {shown(images)}")
    found: list[Image.Image] = []
    for item in images:
        if isinstance(item, Image.Image):
            if 0 in item.size:
                raise ImageError(f"an image of {item.size[0]}x{item.size[1]} pixels: nothing to read")
            found.append(item)
        elif isinstance(item, str | os.PathLike):
            found.append(read_image(Path(item)))
        elif isinstance(item, bytes | bytearray):
            found.append(decode_image(bytes(item)))
        elif _dimensions(item) is not None:
            found.extend(_pixel_images(item))
        else:
            raise UsageError(f"predict: give image files, PIL images, bytes or pixel arrays, not {shown(item)}")
    return found


def _dimensions(value) -> int | None:
    """How many dimensions a numpy array or torch tensor has; None for anything else."""
    ndim = getattr(value, "ndim", None)
    return ndim if isinstance(ndim, int) and hasattr(value, "shape") and hasattr(value, "dtype") else None


def _pixel_images(array) -> list[Image.Image]:
    """Greyscale images from a pixel array: (H, W), (N, H, W) or (N, 1, H, W); uint8 0-255 or floats in [0, 1]."""
    try:  # a copy (a read-only numpy array is fine), of real numbers only
        pixels = array.detach().cpu() if isinstance(array, torch.Tensor) else torch.tensor(array)
    except (TypeError, ValueError, RuntimeError):
        raise UsageError(
            f"predict: a pixel array holds numbers, not {shown(str(getattr(array, 'dtype', '?')))}"
        ) from None
    if pixels.is_complex() or pixels.dtype == torch.bool:
        raise UsageError(f"predict: pixel arrays are uint8 (0-255) or floats in [0, 1], not {pixels.dtype}")
    if pixels.dim() == 4 and pixels.shape[1] == 1:
        pixels = pixels[:, 0]
    if pixels.dim() == 2:
        pixels = pixels[None]
    if pixels.dim() != 3 or 0 in pixels.shape:
        raise UsageError(f"predict: a pixel array is (H, W), (N, H, W) or (N, 1, H, W), got {tuple(array.shape)}")
    if pixels.dtype != torch.uint8:
        values = pixels.double()
        if not bool(torch.isfinite(values).all()) or float(values.min()) < 0 or float(values.max()) > 1:
            raise UsageError("predict: pixel arrays are uint8 (0-255) or floats in [0, 1], as ToTensor gives them")
        pixels = (values * 255).round().to(torch.uint8)
    return [to_pil(image.float()) for image in pixels]


def load(checkpoint: str | Path, *, device: str = "auto") -> Network:
    """The network in a best.pt or last.pt that `mnist-ffn train` wrote, ready to predict."""
    path = Path(checkpoint)
    contents = load_checkpoint(path)  # CheckpointError, one line, for anything that is not one
    network = Network(*restore_model(path, contents))
    network.config = checkpoint_config(path, contents)
    network.classes = list(contents["classes"])
    network.dataset = contents["dataset"]
    network.normalization = dict(contents["normalization"])
    network.checkpoint = path
    network.plane = dict(contents["plane"]) if "plane" in contents else None
    return network.to(pick_device(device)).eval()


def evaluate(
    checkpoint: str | Path,
    split: str = "test",
    data_dir: str | Path | None = None,
    *,
    device: str = "auto",
    expected_dataset: str | None = None,
) -> dict:
    """Accuracy, loss, per-class accuracy and the confusion matrix of a checkpoint on a split (test, val or
    train): the dict `mnist-ffn eval --json` prints."""
    from mnist_ffn.evaluation import evaluate_checkpoint

    if split not in SPLITS:
        raise UsageError(f"split {shown(split)}: choose one of {', '.join(SPLITS)}")
    return evaluate_checkpoint(
        Path(checkpoint),
        resolve_data_dir(Path(data_dir) if data_dir is not None else None),
        split=split,
        device=device,
        expected_dataset=expected_dataset,
    )
