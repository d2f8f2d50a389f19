"""The IDX files of MNIST and Fashion-MNIST: found, checked, read with torchvision, kept as tensors.

A folder may hold the files directly or under torchvision's `MNIST/raw` layout, gzipped or
extracted. Files are read with torchvision's own IDX readers, checked for shape and (by
default) for the SHA-256 of the original extracted bytes, and kept on the training device:
batches are rows of one tensor, not a Python call per image.

Files that passed their checks are decoded once into a tensor cache (like torchvision's old
`processed/` folder), keyed by a SHA-256 of the four files' stored bytes and whether their
checksums were verified. Later runs load that instead: no gunzip, no checksums of the
extracted data, and no import of torchvision, which costs a second or more and about 190 MB
of resident memory.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import tempfile
import zlib
from pathlib import Path

import torch

from mnist_ffn.catalog import DATASETS, IMAGE_SIDE, DatasetInfo, tensor_cache_dir
from mnist_ffn.data.raw import RawDataset
from mnist_ffn.errors import DataError, WriteError
from mnist_ffn.files import open_regular, write_atomically
from mnist_ffn.messages import reason

FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DOWNLOAD_TIMEOUT_S = 20  # offline machines fail name lookup at once; this bounds a hanging mirror


def load_dataset(data_dir: Path, dataset: str, *, verify_checksums: bool = True, download: bool = True) -> RawDataset:
    info = DATASETS[dataset]
    files = find_files(data_dir, info)
    if files is None:
        reason = _try_download(data_dir, info) if download else "download is off (data.download = false)"
        files = find_files(data_dir, info)
        if files is None:
            names = ", ".join(FILE_NAMES.values())
            raise DataError(
                f"{info.title} not found in {data_dir} and {reason}: put {names} (gzipped or not) in that "
                f"folder or its {info.folder}/raw, and point --data-dir or MNIST_FFN_DATA at it"
            )
    cache = _cache_path(files, info, verify_checksums)
    tensors = _read_cache(cache, info)
    if tensors is None:
        tensors = {}
        with tempfile.TemporaryDirectory(prefix="mnist-ffn-") as workdir:
            for key, name in FILE_NAMES.items():
                tensors[key] = _read_checked(files[name], name, info, Path(workdir), verify_checksums)
        _write_cache(cache, tensors)
    for part in ("train", "test"):
        images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{files[FILE_NAMES[part + '_images']]} holds {len(images)} images but "
                f"{files[FILE_NAMES[part + '_labels']]} holds {len(labels)} labels"
            )
    return RawDataset(info=info, **tensors)


def find_files(data_dir: Path, info: DatasetInfo) -> dict[str, Path] | None:
    """The four files in the first folder that holds any of them, or None if no folder does."""
    for folder in (data_dir / info.folder / "raw", data_dir / info.folder, data_dir):
        found = {name: _gz_or_extracted(folder, name) for name in FILE_NAMES.values()}
        present = {name: path for name, path in found.items() if path is not None}
        if not present:
            continue
        missing = [name for name in FILE_NAMES.values() if name not in present]
        if missing:
            raise DataError(f"{folder} holds some {info.title} files but lacks {', '.join(missing)} (or its .gz)")
        return present
    return None


def _cache_path(files: dict[str, Path], info: DatasetInfo, verified: bool) -> Path:
    """The cache file for these files' exact bytes (as stored: hashing 11 MB of gzip takes milliseconds).

    Checked and unchecked reads are kept apart, so a run that verifies checksums never uses a decode
    that skipped them.
    """
    fingerprint = hashlib.sha256(f"{info.name}|verified={verified}".encode())
    for name in FILE_NAMES.values():
        fingerprint.update(_file_bytes(files[name]))
    return tensor_cache_dir() / f"{info.name}-{fingerprint.hexdigest()[:16]}.pt"


def _read_cache(path: Path, info: DatasetInfo) -> dict[str, torch.Tensor] | None:
    """The decoded tensors, or None when the cache is missing or not exactly what the files hold.

    A damaged cache is rebuilt from the files, never trusted: dtypes, shapes, counts and labels are checked.
    """
    if not path.is_file():
        return None
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(tensors, dict) or set(tensors) != set(FILE_NAMES):
        return None
    for part in ("train", "test"):
        images, labels = tensors[f"{part}_images"], tensors[f"{part}_labels"]
        if not (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)):
            return None
        if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != (IMAGE_SIDE, IMAGE_SIDE):
            return None
        if labels.dtype != torch.int64 or labels.dim() != 1 or len(labels) != len(images):
            return None
        if len(labels) and not (int(labels.min()) >= 0 and int(labels.max()) < len(info.classes)):
            return None
    return tensors


def _write_cache(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda file: torch.save(tensors, file))
    except (OSError, WriteError):
        pass  # a read-only home or a full disk only costs the next run a second


def _gz_or_extracted(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _try_download(data_dir: Path, info: DatasetInfo) -> str:
    """Let torchvision download into data_dir; returns why it failed, or '' on success."""
    import torchvision.datasets

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        getattr(torchvision.datasets, info.folder)(root=str(data_dir), train=True, download=True)
    except Exception as exc:  # network, disk and checksum failures all end in the same advice
        return f"the download failed ({reason(exc, 'last')})"
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return "the download left no files"


def _read_checked(path: Path, name: str, info: DatasetInfo, workdir: Path, verify_checksums: bool) -> torch.Tensor:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    content = _read_bytes(path)
    if path.suffix == ".gz":
        extracted = workdir / name  # torchvision's readers take a path to an extracted file
        try:
            extracted.write_bytes(content)
        except OSError as exc:
            raise DataError(
                f"{path}: cannot extract it into the temporary folder {workdir.parent} ({exc.strerror}); "
                "free some space there, or extract the .gz files yourself"
            ) from None
    else:
        extracted = path
    is_images = "images" in name
    try:
        tensor = (read_image_file if is_images else read_label_file)(str(extracted))
    except AssertionError:
        raise DataError(f"{path}: not an IDX file (wrong magic number)") from None
    except (TypeError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: not an IDX {'image' if is_images else 'label'} file ({exc})") from None
    except RuntimeError:
        raise DataError(f"{path}: truncated or padded: its size does not match the counts in its header") from None
    if is_images and tuple(tensor.shape[1:]) != (IMAGE_SIDE, IMAGE_SIDE):
        size = "x".join(str(side) for side in tensor.shape[1:])
        raise DataError(f"{path}: images are {size} pixels, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    if not is_images and len(tensor) and int(tensor.max()) >= len(info.classes):
        raise DataError(f"{path}: labels must be 0-{len(info.classes) - 1}, found {int(tensor.max())}")
    if verify_checksums:
        _verify_checksum(path, name, content, info)
    return tensor


def _file_bytes(path: Path) -> bytes:
    try:
        with open_regular(path) as file:
            return file.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({reason(exc)})") from None


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped if it is a .gz."""
    content = _file_bytes(path)
    if path.suffix != ".gz":
        return content
    try:
        return gzip.decompress(content)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: truncated or corrupt gzip file ({exc})") from None


def _verify_checksum(path: Path, name: str, content: bytes, info: DatasetInfo) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest == info.sha256[name]:
        return
    for other in DATASETS.values():
        for other_name, other_digest in other.sha256.items():
            if digest == other_digest:
                raise DataError(f"{path}: this is {other.title}'s {other_name}, not {info.title}'s {name}")
    raise DataError(
        f"{path}: SHA-256 {digest[:12]}... does not match the original {info.title} file "
        f"({info.sha256[name][:12]}...); replace it, or set data.verify_checksums = false for your own IDX files"
    )
