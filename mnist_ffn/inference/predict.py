"""`mnist-ffn predict`: classify people's own images with a trained network, each preprocessed as the data set
was made (inference.images); one that cannot be read gets its row with the reason, the others their classes."""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_ffn.catalog import DATASETS
from mnist_ffn.errors import ImageError, UsageError
from mnist_ffn.files import write_atomically
from mnist_ffn.inference.images import preprocess, read_image, to_pil
from mnist_ffn.inference.network import load


def predict_images(
    checkpoint_path: Path,
    images: list[Path],
    *,
    device: str = "auto",
    top: int = 3,
    save_preprocessed: Path | None = None,
) -> dict:
    """Classify each image; one that cannot be read or holds no ink gets a row with its error instead."""
    network = load(checkpoint_path, device=device)
    if network.plane is not None:
        raise UsageError(f"{checkpoint_path}: a network of 2-D points ({network.dataset}); predict reads images")
    classes, dataset = network.classes, network.dataset
    if save_preprocessed is not None:
        _make_folder(save_preprocessed)
    rows: list[dict] = []
    frames: dict[int, torch.Tensor] = {}
    for index, path in enumerate(images):
        rows.append({"image": str(path)})
        try:
            frames[index] = preprocess(read_image(path), dataset)
        except ImageError as exc:
            rows[index]["error"] = str(exc).removeprefix(f"{path}: ")
    if save_preprocessed is not None:
        for index, frame in frames.items():
            stem = images[index].stem
            if len({path.resolve() for path in images if path.stem == stem}) > 1:  # a/x.png and b/x.png
                stem = f"{stem}-{index + 1}"
            png = save_preprocessed / f"{stem}-28x28.png"
            write_atomically(png, lambda file, frame=frame: to_pil(frame).save(file, format="PNG"))
    if frames:
        probabilities = network.probabilities(torch.stack(list(frames.values())))
        best = probabilities.topk(min(top, len(classes)), dim=1)
        for index, values, indices in zip(frames, best.values, best.indices, strict=True):
            rows[index]["top"] = [
                {"index": int(label), "class": classes[int(label)], "probability": float(probability)}
                for probability, label in zip(values, indices, strict=True)
            ]
    return {
        "checkpoint": str(checkpoint_path),
        "dataset": dataset,
        "dataset_title": DATASETS[dataset].title,
        "predictions": rows,
    }


def _make_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ImageError(f"--save-preprocessed {folder}: is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageError(f"--save-preprocessed {folder}: cannot create it ({exc.strerror})") from None
