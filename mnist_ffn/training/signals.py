"""SIGINT and SIGTERM while a run trains: deferred to the end of the step, so that last.pt is saved first; and
Ctrl-C kept from a sweep's workers, whose sweep stops them itself."""

from __future__ import annotations

import contextlib
import signal
import threading

from mnist_ffn.errors import Interrupted


class StopSignals:
    """SIGINT and SIGTERM, at any moment, end in one line and exit code 128 + the signal's number.

    Inside `deferring()` (training steps and epoch ends) a first signal only asks the loop to save
    last.pt and stop after the current step. Anywhere else (loading data, the final evaluation)
    there is nothing to save first, and a second SIGINT is an impatient person: both raise
    `Interrupted` at once, which `train` turns into a message that says what state the folder is in.
    """

    def __init__(self):
        self.received: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        # Only the main thread may take signals: a run started from another thread (a web app's, a pool's) trains
        # there just the same, and a Ctrl-C reaches the main thread as it would without it.
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @contextlib.contextmanager
    def deferring(self):
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def _handle(self, number: int, frame) -> None:
        if self._deferring and self.received is None:
            self.received = number
            return
        raise Interrupted(number)


def ignore_ctrl_c() -> None:
    """In a sweep's worker: Ctrl-C reaches the whole process group, and the sweep stops its workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
