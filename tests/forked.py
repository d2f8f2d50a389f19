"""`mnist-ffn ARGS` in a real process forked from a server that has already imported torch.

A fresh interpreter spends about 2 s importing torch before the command starts; a test that kills a run
five times pays that six times. Forked from multiprocessing's forkserver (which imports torch once, runs
nothing, so holds no thread pool a fork could break), the command starts in milliseconds and is still
its own process: its own pid, signals and kill -9 reach it alone, and it ends through the executable's
`console_main` with the executable's exit codes. What it cannot show is the interpreter's own start and
teardown (Ctrl-C inside torch's import, the exit's flush): those tests start `python -m mnist_ffn`.

This module is imported by each forked child, so it imports nothing heavy.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

# The sweep's workers use the same forkserver; whichever starts it first, it imports these once (Gradio too,
# 3 s that each demo server would pay; it starts no thread on import). A module that is not installed is skipped.
PRELOAD = [
    "torch",
    "optuna",
    "gradio",
    "mnist_ffn.cli.commands",
    "mnist_ffn.training.trainer",
    "mnist_ffn.experiments.sweep",
    "tests.forked",
]


def _run_command(
    argv: list[str], cwd: str, env: dict[str, str], paths: list[str], new_session: bool, preexec_fn
) -> None:
    """The child: the environment, directory and standard streams a started process would have, then the
    executable's entry point (which ends the process with os._exit and the command's exit code)."""
    if new_session:  # as Popen(start_new_session=True): a process group of its own, for os.killpg
        os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in zip((1, 2), paths, strict=True):
        target = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(target, fd)
        os.close(target)
    # unbuffered, as PYTHONUNBUFFERED=1 makes them: a line is in the file the moment it is printed
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True)
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    if preexec_fn is not None:  # as Popen's: e.g. a resource limit, set in the child only
        preexec_fn()
    sys.argv = ["mnist-ffn", *argv]
    from mnist_ffn.cli.commands import console_main

    console_main()


class ForkedProcess:
    """The part of subprocess.Popen the tests use: pid, poll, wait, send_signal, kill, communicate."""

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str], *, new_session: bool = False, preexec_fn=None):
        self.args = ["mnist-ffn", *argv]
        self._folder = tempfile.TemporaryDirectory(prefix="mnist-ffn-forked-")
        self._paths = [os.path.join(self._folder.name, name) for name in ("stdout", "stderr")]
        for path in self._paths:
            open(path, "wb").close()
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)  # no effect once the server runs: it already has torch
        self._process = context.Process(
            target=_run_command, args=(argv, cwd, env, self._paths, new_session, preexec_fn), daemon=False
        )
        self._process.start()
        self.pid = self._process.pid
        self.returncode: int | None = None
        self._output: tuple[str, str] | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not self._process.is_alive():
            self.returncode = self._process.exitcode  # -N when killed by signal N, as Popen says
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def output(self) -> tuple[str, str]:
        """What the process has written to stdout and stderr so far."""
        if self._output is not None:
            return self._output
        stdout, stderr = (Path(path).read_text(encoding="utf-8", errors="replace") for path in self._paths)
        return stdout, stderr

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        if self._output is None:
            self._output = self.output()
            self._folder.cleanup()
        return self._output
