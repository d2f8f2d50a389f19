"""Classify people's own images: preprocess them the way the data set was made, then run the model.

MNIST digits were size-normalized to fit a 20x20 box keeping their aspect ratio (with
anti-aliasing, hence grey levels) and placed in a 28x28 field so that their center of mass is
at the center. Fashion-MNIST products were trimmed, their longest edge resized to 28, and
centered. Both are light ink on a dark background. A photo of a digit on paper is the opposite,
so it is inverted first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_ffn.checkpoint import load_checkpoint, restore_model
from mnist_ffn.data import DATASETS, IMAGE_SIDE, normalize
from mnist_ffn.devices import pick_device
from mnist_ffn.errors import ImageError

INK_THRESHOLD = 0.2  # a pixel is ink if brighter than this fraction of the brightest pixel (after inversion)


@dataclass(frozen=True)
class Framing:
    box: int  # the object is scaled to fit a box this many pixels wide
    center_of_mass: bool  # center by center of mass (MNIST) or by the bounding box (Fashion-MNIST)


FRAMINGS = {"mnist": Framing(box=20, center_of_mass=True), "fashion-mnist": Framing(box=28, center_of_mass=False)}


def read_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"{path}: not an image Pillow can read ({type(exc).__name__})") from None
    return image


def to_grayscale(image: Image.Image) -> Image.Image:
    """Greyscale, with transparent areas (a drawing app's canvas) turned into white paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return image.convert("L")


def preprocess(image: Image.Image, dataset: str = "mnist") -> torch.Tensor:
    """Any image of one object -> a 28x28 float tensor of pixel values 0-255, light object on black."""
    framing = FRAMINGS[dataset]
    pixels = _to_tensor(to_grayscale(image))
    border = torch.cat([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.median() > 127:  # a light background: dark ink on paper
        pixels = 255.0 - pixels
        border = 255.0 - border
    pixels = (pixels - border.median()).clamp(min=0)  # the background becomes 0, like MNIST's
    if pixels.max() <= 0:
        raise ImageError("the image is blank: no ink darker or lighter than its background")
    pixels = pixels * (255.0 / pixels.max())
    rows, columns = torch.nonzero(pixels > INK_THRESHOLD * 255.0, as_tuple=True)
    top, bottom, left, right = int(rows.min()), int(rows.max()) + 1, int(columns.min()), int(columns.max()) + 1
    cropped = pixels[top:bottom, left:right]
    height, width = cropped.shape
    scale = framing.box / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = to_pil(cropped).resize((new_width, new_height), Image.Resampling.LANCZOS)
    digit = _to_tensor(resized)
    if framing.center_of_mass and digit.sum() > 0:
        total = digit.sum()
        center_row = float((digit.sum(dim=1) * torch.arange(new_height)).sum() / total)
        center_column = float((digit.sum(dim=0) * torch.arange(new_width)).sum() / total)
    else:
        center_row, center_column = (new_height - 1) / 2, (new_width - 1) / 2
    frame = torch.zeros(IMAGE_SIDE, IMAGE_SIDE)
    middle = IMAGE_SIDE / 2  # MNIST's centers of mass sit near pixel (14, 14), not 13.5
    offset_row = round(middle - center_row)
    offset_column = round(middle - center_column)
    _paste(frame, digit, offset_row, offset_column)
    return frame


def _to_tensor(grayscale: Image.Image) -> torch.Tensor:
    pixels = torch.frombuffer(bytearray(grayscale.tobytes()), dtype=torch.uint8)
    return pixels.view(grayscale.height, grayscale.width).to(torch.float32)


def to_pil(pixels: torch.Tensor) -> Image.Image:
    """A (H, W) tensor of values 0-255 as a greyscale image."""
    height, width = pixels.shape
    return Image.frombytes(
        "L", (width, height), pixels.round().clamp(0, 255).to(torch.uint8).contiguous().numpy().tobytes()
    )


def _paste(frame: torch.Tensor, patch: torch.Tensor, top: int, left: int) -> None:
    """Copy `patch` into `frame` at (top, left), clipping whatever falls outside."""
    source_top, source_left = max(0, -top), max(0, -left)
    target_top, target_left = max(0, top), max(0, left)
    height = min(patch.shape[0] - source_top, frame.shape[0] - target_top)
    width = min(patch.shape[1] - source_left, frame.shape[1] - target_left)
    if height > 0 and width > 0:
        frame[target_top : target_top + height, target_left : target_left + width] = patch[
            source_top : source_top + height, source_left : source_left + width
        ]


def predict_images(
    checkpoint_path: Path,
    images: list[Path],
    *,
    device: str = "auto",
    top: int = 3,
    save_preprocessed: Path | None = None,
) -> dict:
    checkpoint = load_checkpoint(checkpoint_path)
    target = pick_device(device)
    model = restore_model(checkpoint_path, checkpoint).to(target).eval()
    classes = checkpoint["classes"]
    dataset = checkpoint["dataset"]
    frames = [preprocess(read_image(path), dataset) for path in images]
    if save_preprocessed is not None:
        save_preprocessed.mkdir(parents=True, exist_ok=True)
        for path, frame in zip(images, frames, strict=True):
            to_pil(frame).save(save_preprocessed / f"{path.stem}-28x28.png")
    normalization = checkpoint["normalization"]
    batch = normalize(torch.stack(frames), normalization["mean"], normalization["std"]).to(target)
    with torch.inference_mode():
        probabilities = torch.softmax(model(batch).float(), dim=1).cpu()
    best = probabilities.topk(min(top, len(classes)), dim=1)
    return {
        "checkpoint": str(checkpoint_path),
        "dataset": dataset,
        "dataset_title": DATASETS[dataset].title,
        "predictions": [
            {
                "image": str(path),
                "top": [
                    {"index": int(index), "class": classes[int(index)], "probability": float(probability)}
                    for probability, index in zip(values, indices, strict=True)
                ],
            }
            for path, values, indices in zip(images, best.values, best.indices, strict=True)
        ],
    }
