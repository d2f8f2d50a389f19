"""A trained network, ready to answer: `load` a checkpoint into a `Network`, an nn.Sequential in eval mode that
knows what it was trained on and how to feed it (images preprocessed as `mnist-ffn predict` does, or a 2-D set's
points turned into its features)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from mnist_ffn.config import Config
from mnist_ffn.data.plane import features
from mnist_ffn.data.splits import normalize
from mnist_ffn.errors import ImageError, UsageError
from mnist_ffn.inference.images import decode_image, preprocess, read_image, to_pil
from mnist_ffn.inference.model_folder import read_model_folder
from mnist_ffn.messages import shown
from mnist_ffn.training.checkpoint import checkpoint_config, load_checkpoint, restore_model
from mnist_ffn.training.devices import pick_device
from mnist_ffn.training.model import forward_with_activations
from mnist_ffn.training.trace import GradientCheck, Trace, finite_differences, trace


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

    def chain_rule(self, inputs: torch.Tensor, labels) -> Trace:
        """Every number of the chain rule for a batch of inputs (N, features or 784) and labels (N,), in float64,
        as the playground shows them: each layer's x, z, a = f(z), f'(z), dL/da, dL/dz, dL/dW, dL/db and what one
        SGD step with the run's learning rate would change W and b by; formed by the training engine itself, on a
        copy (the network is not changed)."""
        return trace(self, self.config, inputs, torch.as_tensor(labels))

    def gradient_check(self, inputs: torch.Tensor, labels) -> GradientCheck:
        """dL/dW and dL/db estimated by central differences of the loss, for chain_rule's to be checked against."""
        return finite_differences(self, self.config, inputs, torch.as_tensor(labels))

    def probabilities(self, frames: torch.Tensor) -> torch.Tensor:
        """Class probabilities for 28x28 frames with pixel values 0-255, shape (N, 28, 28), as predict makes them."""
        return self.forward_pass(frames)[0]

    def forward_pass(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """For frames (N, 28, 28) of pixels 0-255: the class probabilities (N, classes) and each hidden layer's
        a = f(z), (N, width) per layer: the lesson's forward pass, as the demo page shows it."""
        batch = normalize(frames, self.normalization["mean"], self.normalization["std"]).to(self.device)
        with torch.inference_mode():
            logits, found = forward_with_activations(self, batch)
            return torch.softmax(logits.float(), dim=1).cpu(), [a.float().cpu() for a in found]


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
    """The network in a best.pt or last.pt that `mnist-ffn train` wrote, or in a model folder that
    `mnist-ffn export --format safetensors` wrote, ready to predict."""
    path = Path(checkpoint)
    # a model folder (model.safetensors and config.json), or a checkpoint; CheckpointError, one line, for anything else
    contents = read_model_folder(path) if path.is_dir() else load_checkpoint(path)
    network = Network(*restore_model(path, contents))
    network.config = checkpoint_config(path, contents)
    network.classes = list(contents["classes"])
    network.dataset = contents["dataset"]
    network.normalization = dict(contents["normalization"])
    network.checkpoint = path
    network.plane = dict(contents["plane"]) if "plane" in contents else None
    return network.to(pick_device(device)).eval()
