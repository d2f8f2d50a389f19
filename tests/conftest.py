"""The fixtures: tiny data and a tiny run per test (copied from one made per session), the default run on the
real MNIST once per session, and a tensor cache kept out of the user's home. The helpers they use are in
tests/helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY_FLAGS, real_data_dir, run_cli, write_dataset


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the decoded-tensor cache out of the user's home, shared by all tests of a session."""
    monkeypatch.setenv("MNIST_FFN_CACHE", str(tmp_path_factory.getbasetemp() / "tensor-cache"))


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory) -> tuple[Path, Path]:
    """Tiny data and a finished 3-epoch run on it, made once; each test gets its own copy of both."""
    root = tmp_path_factory.mktemp("tiny-template")
    data = root / "data"
    write_dataset(data / "MNIST" / "raw")
    run = root / "run"
    result = run_cli("train", "--data-dir", data, "--out", run, "--quiet", *TINY_FLAGS, "--set", "train.epochs=3")
    assert result.returncode == 0, result.stderr
    return data, run


@pytest.fixture
def tiny_data(tiny_template, tmp_path) -> Path:
    """A data folder in torchvision's layout (DIR/MNIST/raw) with 600 train and 200 test fake digits."""
    return shutil.copytree(tiny_template[0], tmp_path / "data")


@pytest.fixture
def tiny_run(tiny_data, tiny_template, tmp_path) -> Path:
    """A finished 3-epoch run on the tiny data (this test's own copy)."""
    return shutil.copytree(tiny_template[1], tmp_path / "run")


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """`mnist-ffn train` with no flags on the real MNIST, once per session (about 9 s on 2 CPU cores)."""
    data_dir = real_data_dir()
    out = tmp_path_factory.mktemp("default-run") / "run"
    result = run_cli("train", "--data-dir", data_dir, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return out
