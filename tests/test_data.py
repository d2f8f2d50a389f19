import gzip
import shutil

import pytest
import torch

from mnist_ffn.catalog import DATASETS, resolve_data_dir
from mnist_ffn.data.idx import FILE_NAMES, load_dataset
from mnist_ffn.data.splits import make_splits, normalize, shuffled_batches
from mnist_ffn.errors import DataError
from tests.helpers import make_digits, real_data_dir, write_dataset, write_idx

CPU = torch.device("cpu")


def load_tiny(folder, **kwargs):
    return load_dataset(folder, "mnist", verify_checksums=False, download=False, **kwargs)


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "extracted"])
@pytest.mark.parametrize("layout", ["MNIST/raw", "MNIST", "."])
def test_reads_tiny_idx_files_in_every_layout(tmp_path, gz, layout):
    write_dataset(tmp_path / layout, gz=gz, train=50, test=20)
    raw = load_tiny(tmp_path)
    images, labels = make_digits(50, seed=0)
    assert raw.train_images.shape == (50, 28, 28) and raw.train_images.dtype == torch.uint8
    assert raw.train_images.flatten().tolist() == list(images)
    assert raw.train_labels.tolist() == list(labels)
    assert raw.test_images.shape == (20, 28, 28)


def test_extracted_files_win_over_gz_in_the_same_folder(tmp_path):
    write_dataset(tmp_path, gz=True, train=30, test=10, seed=1)
    write_dataset(tmp_path, gz=False, train=40, test=10, seed=2)
    assert len(load_tiny(tmp_path).train_labels) == 40


def test_splits_hold_out_the_last_training_images_for_validation(tiny_data):
    raw = load_tiny(tiny_data)
    splits = make_splits(raw, val_size=100, limit=0, device=CPU)
    assert [len(splits[name]) for name in ("train", "val", "test")] == [500, 100, 200]
    assert splits["val"].labels.tolist() == raw.train_labels[500:].tolist()
    limited = make_splits(raw, val_size=100, limit=50, device=CPU)
    assert len(limited["train"]) == 50 and len(limited["val"]) == 100


def test_val_size_that_leaves_nothing_to_train_on(tiny_data):
    with pytest.raises(DataError, match=r"train\.val_size = 600 leaves no training images"):
        make_splits(load_tiny(tiny_data), val_size=600, limit=0, device=CPU)


def test_normalization_uses_the_mnist_mean_and_std(tiny_data):
    raw = load_tiny(tiny_data)
    split = make_splits(raw, 100, 0, CPU)["train"]
    images, _ = split.slice(0, 3)
    info = DATASETS["mnist"]
    expected = (raw.train_images[:3].reshape(3, -1).float() / 255 - info.mean) / info.std
    assert torch.allclose(images, expected, atol=1e-6)


def test_normalize_does_not_change_its_input():
    pixels = torch.full((2, 28, 28), 255.0)
    normalize(pixels, 0.5, 0.5)
    assert pixels.max() == 255.0


def test_batches_follow_the_order_and_cover_every_image_once(tiny_data):
    split = make_splits(load_tiny(tiny_data), 100, 0, CPU)["train"]
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    batches = list(shuffled_batches(split, 64, order))
    assert [len(labels) for _, labels in batches] == [64] * 7 + [500 - 7 * 64]
    assert torch.equal(torch.cat([labels for _, labels in batches]), split.labels[order])
    resumed = list(shuffled_batches(split, 64, order, first_batch=3))
    assert torch.equal(resumed[0][0], batches[3][0])


def test_missing_files_with_download_off_names_the_files_and_the_options(tmp_path):
    with pytest.raises(DataError) as caught:
        load_dataset(tmp_path, "mnist", download=False)
    message = str(caught.value)
    for name in FILE_NAMES.values():
        assert name in message
    assert "--data-dir" in message and "MNIST_FFN_DATA" in message and "\n" not in message


def test_missing_files_when_the_download_fails_too(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error no network>")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match=r"the download failed \(<urlopen error no network>\)"):
        load_dataset(tmp_path, "mnist")


def test_a_partial_set_of_files_names_what_is_missing(tmp_path):
    write_dataset(tmp_path, train=20, test=10)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        load_tiny(tmp_path)


def corrupt_truncated_gz(folder):
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-200])
    return "truncated or corrupt gzip file"


def corrupt_magic(folder):
    images, _ = make_digits(20, 0)
    write_idx(folder / "train-images-idx3-ubyte.gz", images, (20, 28, 28), magic_type=0x42)
    return "not an IDX file"


def corrupt_labels_as_images(folder):
    shutil.copy(folder / "train-labels-idx1-ubyte.gz", folder / "train-images-idx3-ubyte.gz")
    return "not an IDX image file"


def corrupt_count_mismatch(folder):
    _, labels = make_digits(19, 0)
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels, (19,))
    return "holds 20 images but"


def corrupt_image_size(folder):
    write_idx(folder / "train-images-idx3-ubyte.gz", bytes(20 * 32 * 32), (20, 32, 32))
    return "images are 32x32 pixels, expected 28x28"


def corrupt_truncated_payload(folder):
    images, _ = make_digits(20, 0)
    path = folder / "train-images-idx3-ubyte.gz"
    write_idx(path, images, (20, 28, 28))
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    return "truncated or padded"


def corrupt_label_range(folder):
    write_idx(folder / "train-labels-idx1-ubyte.gz", bytes([12] * 20), (20,))
    return "labels must be 0-9, found 12"


def corrupt_empty_file(folder):
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(b"")
    return "t10k-images-idx3-ubyte.gz"


CORRUPTIONS = [
    corrupt_truncated_gz,
    corrupt_magic,
    corrupt_labels_as_images,
    corrupt_count_mismatch,
    corrupt_image_size,
    corrupt_truncated_payload,
    corrupt_label_range,
    corrupt_empty_file,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda corrupt: corrupt.__name__)
def test_corrupt_files_get_a_message_naming_the_file_and_the_fault(tmp_path, corrupt):
    write_dataset(tmp_path, train=20, test=10)
    fragment = corrupt(tmp_path)
    with pytest.raises(DataError) as caught:
        load_tiny(tmp_path)
    message = str(caught.value)
    assert fragment in message
    assert str(tmp_path) in message and "\n" not in message


def test_checksums_reject_files_that_are_not_the_originals(tiny_data):
    with pytest.raises(DataError, match=r"does not match the original MNIST file.*verify_checksums = false"):
        load_dataset(tiny_data, "mnist", download=False)


def test_data_dir_option_beats_the_environment_which_beats_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_FFN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "option") == tmp_path / "option"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("MNIST_FFN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir(None) == tmp_path / "cache" / "mnist-ffn"


@pytest.mark.real_data
def test_verified_and_unverified_reads_are_cached_apart(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_FFN_CACHE", str(tmp_path / "cache"))
    load_dataset(tiny_data, "mnist", verify_checksums=False, download=False)
    assert len(list((tmp_path / "cache").glob("mnist-*.pt"))) == 1
    with pytest.raises(DataError, match="does not match the original"):  # the unverified decode is not reused
        load_dataset(tiny_data, "mnist", verify_checksums=True, download=False)
    assert len(list((tmp_path / "cache").glob("mnist-*.pt"))) == 1, "a failed verification caches nothing"


def test_real_mnist_verifies_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_FFN_CACHE", str(tmp_path / "cache"))
    data_dir = real_data_dir()
    first = load_dataset(data_dir, "mnist", download=False)
    assert first.train_images.shape == (60000, 28, 28) and first.test_images.shape == (10000, 28, 28)
    assert first.test_labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert len(list((tmp_path / "cache").glob("mnist-*.pt"))) == 1
    second = load_dataset(data_dir, "mnist", download=False)  # from the cache
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)


@pytest.mark.real_data
def test_real_mnist_statistics_match_the_normalization_constants():
    raw = load_dataset(real_data_dir(), "mnist", download=False)
    pixels = raw.train_images.double() / 255
    assert pixels.mean().item() == pytest.approx(DATASETS["mnist"].mean, abs=1e-4)
    assert pixels.std().item() == pytest.approx(DATASETS["mnist"].std, abs=1e-4)


@pytest.mark.real_data
def test_a_modified_real_file_fails_its_checksum(tmp_path):
    source = real_data_dir() / "MNIST" / "raw"
    for path in source.iterdir():
        shutil.copy(path, tmp_path / path.name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[-1] = (content[-1] + 1) % 10  # one wrong label: structurally fine, not the original
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: SHA-256 .* does not match the original MNIST"):
        load_dataset(tmp_path, "mnist", download=False)


@pytest.mark.parametrize(
    "damage",
    [
        lambda tensors: tensors.update(train_images=tensors["train_images"][:, :20, :20].contiguous()),
        lambda tensors: tensors.update(train_labels=tensors["train_labels"] + 10),
        lambda tensors: tensors.update(test_labels=tensors["test_labels"][:-1].clone()),
        lambda tensors: tensors.pop("test_images"),
    ],
    ids=["wrong-shape", "labels-out-of-range", "counts-disagree", "missing-part"],
)
def test_a_damaged_tensor_cache_is_rebuilt_from_the_files(tiny_data, tmp_path, monkeypatch, damage):
    """A cache file with the right dtypes but wrong contents is never trusted."""
    monkeypatch.setenv("MNIST_FFN_CACHE", str(tmp_path / "cache"))
    good = load_dataset(tiny_data, "mnist", verify_checksums=False, download=False)
    (cache,) = (tmp_path / "cache").glob("mnist-*.pt")
    tensors = torch.load(cache, weights_only=True)
    damage(tensors)
    torch.save(tensors, cache)
    again = load_dataset(tiny_data, "mnist", verify_checksums=False, download=False)
    assert torch.equal(again.train_images, good.train_images)
    assert torch.equal(again.train_labels, good.train_labels)
    assert torch.equal(again.test_labels, good.test_labels)
    assert torch.equal(torch.load(cache, weights_only=True)["train_labels"], good.train_labels)  # rewritten whole
