"""The fixtures: tiny data and a tiny run per test (copied from one made per session), the default run on the
real MNIST once per session, and a tensor cache kept out of the user's home. The helpers they use are in
tests/helpers.py.

The suite runs in pytest-xdist workers (pyproject.toml: `-n auto --dist loadfile`, files in LONGEST_FIRST's
order): a test file stays in one worker, so its module fixtures (a browser, demo servers) start once. Most of a
test's time is spent waiting on another process (Chromium, a server, a forked run), which a second worker fills.
Each worker gets an equal share of the cores for torch: two workers of two threads each on two cores spin in each
other's barriers and ran slower than one worker alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers import TINY_FLAGS, real_data_dir, run_cli, write_dataset

# The suite checks the promises made for the CPU (bit-exact resume, determinism, the engines' numbers), so `--device
# auto` must mean the CPU on a machine with a GPU too; the CUDA tests run with MNIST_FFN_TEST_CUDA=1, as
# scripts/gpu_check.sh does. (CUDA reads the variable when torch first asks for a device, after this.)
if os.environ.get("MNIST_FFN_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:  # before torch's first import here, and for every process a test starts (they inherit it)
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))
    if "torch" in sys.modules:  # a plugin imported it first: it read the variable already
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


# The files that take longest, in that order, then the rest in theirs (pyproject.toml's --no-loadscope-reorder keeps
# this order; xdist's own puts files with the most tests first). A worker is given the next file as it finishes
# one, so the long ones start first and the short ones fill in at the end, and the workers end together. The
# demo needs the default run, which trains from the session's start: it comes after two long files.
LONGEST_FIRST = [
    *(
        "test_sweep_server.py",
        "test_playground.py",
        "test_storage.py",
        "test_demo.py",
        "test_sweep.py",
        "test_plane.py",
        "test_resilience.py",
        "test_backprop_view.py",
    ),
    *("test_integrity.py", "test_compare.py", "test_backprop.py", "test_notebook.py", "test_plot.py"),
    *("test_model_folder.py", "test_event_log.py", "test_dashboard.py"),
    *("test_export.py", "test_output_safety.py", "test_bad_input.py", "test_exit.py", "test_points_csv.py"),
]
assert all((Path(__file__).parent / name).is_file() for name in LONGEST_FIRST), "a file named here was renamed"


# What .ci/run runs a second time as another machine would (one core, one torch thread, another CPU kernel path:
# docs/development.md), with `-m machine`: every test whose promise could quietly depend on the machine it runs on.
# These files whole (kills and resume, signals, two processes, float rounding, accuracy margins, live pages), and
# anywhere else a test on real data (a trained network's numbers) or marked `machine` itself (timing, parallel work).
MACHINE_FILES = {
    *("test_resilience.py", "test_integrity.py", "test_backprop.py", "test_plane.py", "test_playground.py"),
    *("test_demo.py", "test_predict.py", "test_real_mnist.py", "test_notebook.py", "test_choice.py"),
}
assert all((Path(__file__).parent / name).is_file() for name in MACHINE_FILES), "a file named here was renamed"


def pytest_collection_modifyitems(items) -> None:
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's tests keep their order
    for item in items:
        real_data = item.get_closest_marker("real_data") or "default_run" in item.fixturenames
        if item.path.name in MACHINE_FILES or real_data:
            item.add_marker(pytest.mark.machine)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core, at most 4 (the largest test file takes a quarter of the suite), at least 2
    (even on one core a second worker runs while the first waits on a browser or a server)."""
    return max(2, min(4, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """A folder for what all workers of this session share: this session's own base folder, which the workers'
    folders are in when xdist runs them."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(shared_root):
    """Keep the decoded-tensor cache, and the default data folder under ~/.cache, out of the user's home: one
    cache shared by all tests (and workers) of a session, and an empty default data folder, as on a new machine.
    Set for the session before any other fixture of it runs (autouse fixtures come first), so that the session's
    and modules' fixtures that train or start servers use them too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_FFN_CACHE", str(shared_root / "tensor-cache"))
        patch.setenv("XDG_CACHE_HOME", str(shared_root / "home-cache"))
        yield


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


class DefaultRun:
    """`mnist-ffn train` with no flags on the real MNIST, in a process of its own (on the tests' share of the cores),
    once per session for every worker.

    The first worker to need it starts it at its first test, under a lock, so that it trains beside the tests
    (about 9 s alone on 2 CPU cores) and no worker stands waiting for it. The worker that started it waits for it
    at its own end (another worker may still need it), or stops it when the session is interrupted or stopped."""

    started: subprocess.Popen | None = None  # in the worker that started it

    def __init__(self, root: Path):
        self.folder = root / "default-run"
        self.run = self.folder / "run"
        self.exit_code = self.folder / "exit-code"  # written when the command ends
        self.pid = self.folder / "pid"
        self.log = self.folder / "output.log"

    def start(self, data_dir: Path) -> None:
        self.folder.mkdir(exist_ok=True)
        with FileLock(self.folder / "lock"):
            if self.log.exists():  # started by another worker
                return
            command = [sys.executable, "-m", "mnist_ffn", "train", "--data-dir", data_dir, "--out", self.run, "--quiet"]
            with self.log.open("w") as log:
                DefaultRun.started = subprocess.Popen(
                    ["sh", "-c", '"$@"; echo $? > "$0"', self.exit_code, *map(str, command)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, process_group=0,
                )  # fmt: skip
            self.pid.write_text(str(DefaultRun.started.pid))

    def wait(self, timeout: float = 900) -> Path:
        deadline = time.monotonic() + timeout
        while not (self.exit_code.exists() and self.exit_code.read_text().strip()):
            assert _running(int(self.pid.read_text())), f"the default run ended with no exit code: {self._output()}"
            assert time.monotonic() < deadline, f"the default run did not finish in {timeout:g} s: {self._output()}"
            time.sleep(0.2)
        code = self.exit_code.read_text().strip()
        assert code == "0", f"the default run failed (exit {code}): {self._output()}"
        return self.run

    def _output(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def pytest_sessionfinish(session, exitstatus) -> None:
    process = DefaultRun.started
    if process is None or process.poll() is not None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail:
        os.killpg(process.pid, signal.SIGTERM)  # the session ends here: nothing will read the run
    process.wait()


@pytest.fixture(scope="session", autouse=True)
def _default_run_in_the_background(request, shared_root, _isolated_cache):  # it trains with the tests' cache
    """Starts the default run at this worker's first test, when a test of the session needs it and the data is here."""
    if any("default_run" in item.fixturenames for item in request.session.items):
        try:
            data_dir = real_data_dir()
        except (pytest.skip.Exception, pytest.fail.Exception):
            return  # the tests that need it skip or fail themselves
        DefaultRun(shared_root).start(data_dir)


@pytest.fixture(scope="session")
def default_run(shared_root, _default_run_in_the_background) -> Path:
    """The default run's folder, once it has trained (tests only read it)."""
    real_data_dir()  # skips, or fails under CI=true, without the data: then nothing was started
    return DefaultRun(shared_root).wait()


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of 1 MiB mounted for the test (root only): a disk that fills up, and is then made larger."""
    if os.geteuid() != 0:
        message = "mounting a tmpfs needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI runs as root")
        pytest.skip(message)
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


@pytest.fixture
def small_comparison(tiny_data, tmp_path):
    """A 2-epoch comparison of identity and relu on this test's tiny data: (its folder, the command that made it)."""
    from tests.helpers import small_comparison_of

    return small_comparison_of(tiny_data, tmp_path / "compare")
