"""People's own images, made into what the network was trained on: decoded, then preprocessed the way the data
set was made.

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

from mnist_ffn.catalog import IMAGE_SIDE
from mnist_ffn.errors import ImageError
from mnist_ffn.files import NotARegularFile, open_regular
from mnist_ffn.messages import reason

INK_THRESHOLD = 0.2  # a pixel is ink if brighter than this fraction of the brightest pixel (after inversion)
MAX_PIXELS = 40_000_000  # a 40-megapixel photo is plenty for one digit; larger files are refused before decoding


@dataclass(frozen=True)
class Framing:
    box: int  # the object is scaled to fit a box this many pixels wide
    center_of_mass: bool  # center by center of mass (MNIST) or by the bounding box (Fashion-MNIST)


FRAMINGS = {"mnist": Framing(box=20, center_of_mass=True), "fashion-mnist": Framing(box=28, center_of_mass=False)}


def read_image(path: Path, name: str | None = None) -> Image.Image:
    """Decode one image file; refuses, with the reason, what cannot or should not be decoded.

    `name` is what messages call the file (the demo's uploads: the file's own name, not the server's copy)."""
    shown = path if name is None else name
    try:
        with open_regular(path) as file:
            return _decode(file, shown)
    except FileNotFoundError:
        raise ImageError(f"{shown}: no such image file") from None
    except PermissionError:
        raise ImageError(f"{shown}: cannot read it (permission denied)") from None
    except IsADirectoryError:
        raise ImageError(f"{shown}: is a folder, not an image") from None
    except NotARegularFile as exc:
        raise ImageError(f"{shown}: {exc.strerror}, not an image file") from None
    except OSError as exc:  # the file could not be read (Pillow's own decoding errors are _decode's)
        raise ImageError(f"{shown}: cannot read it ({reason(exc)})") from None


def decode_image(data: bytes, name: str = "the image's bytes") -> Image.Image:
    """An image file's content (a web upload's, say) decoded as `read_image` decodes the file."""
    import io

    return _decode(io.BytesIO(data), name)


def _decode(file, shown: object) -> Image.Image:
    """Decode an open image file whole, refusing what is too large before its pixels are decoded."""
    try:
        with Image.open(file) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:  # checked before the pixels are decoded: a small file can unpack huge
                raise ImageError(
                    f"{shown}: {width}x{height} pixels is too large; mnist-ffn reads up to "
                    f"{MAX_PIXELS // 1_000_000} megapixels"
                )
            image.load()
            return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # Pillow reports damaged files with all of these, depending on the format
        raise ImageError(f"{shown}: not an image Pillow can read, or damaged ({type(exc).__name__})") from None


def to_grayscale(image: Image.Image) -> Image.Image:
    """Greyscale, with transparent areas (a drawing app's canvas) turned into white paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _deep_to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return image.convert("L")


def _deep_to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale scaled to 0-255; Pillow's own convert("L") clips them, so a dark grey digit
    of a 16-bit scan would come out blank."""
    import numpy  # torchvision's dependency; reads every deep mode Pillow has, in any byte order

    values = torch.from_numpy(numpy.asarray(image).astype(numpy.float64))
    if image.mode.startswith("I;16"):
        full_scale = 65535.0
    else:  # "I" (Pillow's mode for some 16-bit PNGs) and "F": the range the values actually use
        full_scale = 255.0 if values.max() <= 255 else (65535.0 if values.max() <= 65535 else float(values.max()))
    scaled = (values.clamp(min=0) * (255.0 / full_scale)).round().to(torch.uint8)
    return Image.frombytes("L", image.size, scaled.contiguous().numpy().tobytes())


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
