"""What the tests share: tiny IDX data sets written by the tests, the real data when present, the CLI in-process.

`run_cli` runs a command inside the test process, as Typer's CliRunner does (fastapi-cli's tests do the same):
no second Python start and torch import per command. Where the process itself is the subject, `start_forked`
forks a real one from a server that has imported torch already (signals, kill -9, two processes at once), and
`start_process` starts a fresh interpreter, for what only that shows (a signal inside torch's import, closed
pipes, the exit). The fixtures built on these are in conftest.py.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.util
import os
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from tests.forked import ForkedProcess

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
TINY_FLAGS = ["--set", "data.verify_checksums=false", "--set", "train.val_size=100"]


def write_idx(path: Path, array: list | bytes, dims: tuple[int, ...], *, magic_type: int = 0x08) -> None:
    """Write an IDX file (gzipped if the name ends in .gz): the format of the four MNIST files."""
    header = struct.pack(">BBBB", 0, 0, magic_type, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    payload = header + bytes(array)
    path.write_bytes(_gzipped(payload) if path.suffix == ".gz" else payload)


@functools.lru_cache(maxsize=16)
def _gzipped(payload: bytes) -> bytes:  # the same few data sets are written by dozens of tests
    return gzip.compress(payload)


@functools.cache  # drawn pixel by pixel in Python: a data set takes a tenth of a second
def make_digits(count: int, seed: int) -> tuple[bytes, bytes]:
    """Learnable fake digits: class k is a bright 7x7 block near one of ten places, jittered, plus noise."""
    import random

    rng = random.Random(seed)
    images = bytearray(count * 28 * 28)
    labels = bytearray(count)
    for index in range(count):
        label = index % 10
        labels[index] = label
        top = 3 + (label // 5) * 12 + rng.randint(-2, 2)
        left = 1 + (label % 5) * 5 + rng.randint(-1, 1)
        base = index * 784
        for row in range(max(top, 0), min(top + 7, 28)):
            for column in range(max(left, 0), min(left + 7, 28)):
                images[base + row * 28 + column] = rng.randint(120, 255)
        for _ in range(60):
            images[base + rng.randrange(784)] = rng.randint(0, 200)
    return bytes(images), bytes(labels)


def write_dataset(folder: Path, *, gz: bool = True, train: int = 600, test: int = 200, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, count, part_seed in (("train", train, seed), ("t10k", test, seed + 1)):
        images, labels = make_digits(count, part_seed)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, (count, 28, 28))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, (count,))
    return folder


def real_data_dir(dataset_folder: str = "MNIST") -> Path:
    """The real data (../shared/data or $MNIST_FFN_DATA): skip without it, but fail under CI=true."""
    candidates = [Path(os.environ["MNIST_FFN_DATA"])] if os.environ.get("MNIST_FFN_DATA") else []
    candidates.append(SHARED_DATA)
    for candidate in candidates:
        if (candidate / dataset_folder / "raw").is_dir():
            return candidate.resolve()
    message = f"real {dataset_folder} files not found in {', '.join(map(str, candidates))}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have them")
    pytest.skip(message)


def run_cli(*args: str, env: dict | None = None, charset: str = "utf-8") -> subprocess.CompletedProcess:
    """Run `mnist-ffn ARGS` in this process through `cli.main`, the same path as the executable's.

    Returns what a process would: the exit code and the text of stdout and stderr. An exception that
    escapes main() is a bug a user would see as a traceback, so its traceback lands in stderr. `charset`
    is the output's encoding, strict as PYTHONIOENCODING=ascii makes a process's stdout.
    """
    import torch
    from typer.testing import CliRunner

    from mnist_ffn.cli import commands as cli

    argv = [str(arg) for arg in args]
    threads = torch.get_num_threads()  # train.threads changes torch's global setting; keep tests independent
    code = 0
    with CliRunner(charset=charset).isolation(env=env) as (stdout, stderr, _):
        try:
            cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            sys.stderr.write(traceback.format_exc())
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            torch.set_num_threads(threads)
        out, err = stdout.getvalue().decode(charset), stderr.getvalue().decode(charset)
    return subprocess.CompletedProcess(["mnist-ffn", *argv], code, out, err)


def start_process(*args: str, env: dict | None = None, buffered: bool = False, **popen) -> subprocess.Popen:
    """Start `python -m mnist_ffn ARGS` as a user would; stdout and stderr are pipes unless given.

    Output is unbuffered unless `buffered`: then stdout is a pipe that Python buffers, as in a script.
    """
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if buffered:
        del environment["PYTHONUNBUFFERED"]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_ffn", *map(str, args)], text=True, env=environment, cwd=PROJECT_ROOT, **popen
    )


def start_forked(*args: str, env: dict | None = None, new_session: bool = False, preexec_fn=None) -> ForkedProcess:
    """`mnist-ffn ARGS` in a real process forked from one that has imported torch (tests/forked.py says why):
    for the tests of signals, kill -9 and two processes at once, without a torch import per process."""
    environment = {**os.environ, **(env or {})}
    arguments = [str(arg) for arg in args]
    return ForkedProcess(arguments, str(PROJECT_ROOT), environment, new_session=new_session, preexec_fn=preexec_fn)


def finish_process(process: subprocess.Popen | ForkedProcess, timeout: float = 600) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_process(*args: str, env: dict | None = None, timeout: float = 600, buffered: bool = False):
    """`python -m mnist_ffn ARGS` in a fresh process, waited for."""
    return finish_process(start_process(*args, env=env, buffered=buffered), timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + (result.stdout or ""), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got: {result.stderr!r}"
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# A tiny run that trains until a test stops it: at any moment the test chooses, however fast the machine.
LONG_RUN = [*TINY_FLAGS, "--set", "train.epochs=1000000", "--set", "model.hidden=[32]", "--quiet"]


def free_port() -> int:
    """A loopback port that no one listens on now, for a server that a test starts and that binds it at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def closed_port():
    """A loopback port that stays closed while the block runs, for "a server that is not there": bound but never
    listening, so that a connection to it is refused and no other test's server (another worker's) can take it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def wait_for(path, process, timeout: float = 60) -> None:
    """Until `path` exists; fails if the process ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {path.name} within {timeout} s"
        time.sleep(0.01)


def snapshot(folder) -> dict:
    """Each file of a folder by its SHA-256: to show that nothing in it changed."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def best_line_accuracy(xy, labels) -> float:
    """The highest accuracy any straight line reaches on 2-class points (N, 2): an upper bound on what a network
    without an activation (one affine map, so one straight boundary) can score on them, on any machine.

    A best line can be moved until it passes through two of the points without getting any other point wrong, so
    the line through each pair is tried, with those two counted right. Through a pivot point, the points left of the
    line to another point are those whose angle seen from the pivot lies within half a turn after that point's: one
    sort of the angles and a running sum of the labels count every pair's sides at once. (The points are taken in
    general position, no three on one line, as generated and measured points are.)"""
    import math

    import torch

    sign = labels.double() * 2 - 1  # (n,) of -1 and +1
    n = len(sign)
    others = ~torch.eye(n, dtype=torch.bool)
    offsets = xy.double()[None, :, :] - xy.double()[:, None, :]  # (pivot, point, 2)
    angle = torch.atan2(offsets[..., 1], offsets[..., 0])[others].view(n, n - 1)  # each other point, in (-pi, pi]
    angle, order = angle.sort(dim=1)
    signs = sign.expand(n, n)[others].view(n, n - 1).gather(1, order)
    around = torch.cat([angle, angle + 2 * math.pi], dim=1)  # (n, 2(n - 1)): once round, then again
    running = torch.cat([torch.zeros(n, 1, dtype=torch.float64), torch.cat([signs, signs], 1).cumsum(1)], dim=1)
    start = torch.arange(1, n).expand(n, n - 1)  # just after the point the line goes through
    end = torch.searchsorted(around, angle + math.pi)  # the first point half a turn on, or further
    left_count, left_sum = (end - start).double(), running.gather(1, end) - running.gather(1, start)
    right_count, right_sum = (n - 2) - left_count, signs.sum(dim=1, keepdim=True) - signs - left_sum
    one_way = (left_count + left_sum) / 2 + (right_count - right_sum) / 2  # the +1 class left of the line
    return float((torch.maximum(one_way, (n - 2) - one_way) + 2).max()) / n


def require(available: bool, what: str) -> None:
    """Skip without a prerequisite, except under CI=true, where it must be there."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; CI must have it")
    pytest.skip(f"{what} is missing")


def require_modules(*names: str, install: str) -> list:
    """The modules, imported; without one, a skip (a failure under CI=true) saying how to install it."""
    import importlib

    found = []
    for name in names:
        try:
            found.append(importlib.import_module(name))
        except ImportError:
            require(False, f"{name} ({install})")
    return found


HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
needs_matplotlib = pytest.mark.skipif(not HAS_MATPLOTLIB, reason="needs the plot extra (matplotlib)")


def assert_png(path, min_side=300):
    from PIL import Image

    with Image.open(path) as image:
        assert image.format == "PNG"
        assert min(image.size) >= min_side


def small_comparison_of(tiny_data, out) -> tuple[Path, list]:
    """A 2-epoch comparison of identity and relu on the tiny data in `out`, and the command that made it."""
    args = ["compare", "--activations", "identity,relu", "--epochs", "2", "--data-dir", tiny_data, "--out", out,
            "--quiet", *TINY_FLAGS]  # fmt: skip
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return out, args


def invoke(*args):
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    result = run_cli(*args)
    return result.returncode, result.stdout, result.stderr


def train_tiny(tiny_data, out, *extra):
    """`train` on the tiny data for 3 epochs into `out`; returns what it printed."""
    code, stdout, stderr = invoke(
        "train", "--data-dir", tiny_data, "--out", out, *TINY_FLAGS, "--set", "train.epochs=3", *extra
    )
    assert code == 0, stderr
    return stdout
