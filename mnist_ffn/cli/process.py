"""What the whole `mnist-ffn` process does, whichever command runs: its streams, its signals and its exit.

- stdout outlives its reader (GuardedStdout): `train ... | head -1` must not stop training halfway;
- stdout and stderr write what their encoding cannot show as escapes, never a UnicodeEncodeError;
- SIGINT and SIGTERM become `Interrupted` (training defers them itself: training.signals);
- the executable ends with os._exit after flushing (fast_exit): torch's teardown is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from collections.abc import Callable, Iterator

from mnist_ffn.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GuardedStdout:
    """stdout that outlives its reader: `train ... | head -1` must not stop training halfway.

    After the first write error (the reader closed the pipe, the disk is full), further output is
    dropped and the error is kept, for one line on stderr once the command's work is done.
    """

    def __init__(self, stream):
        self._stream = stream
        self.error: OSError | None = None

    def write(self, text: str) -> int:
        if self.error is None:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._fail(exc)
        return len(text)

    def flush(self) -> None:
        if self.error is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self._fail(exc)

    def _fail(self, error: OSError) -> None:
        self.error = error
        with contextlib.suppress(OSError, ValueError, AttributeError):  # e.g. an in-memory stream in a test
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())  # the interpreter's own flush at exit finds nothing to fail
            os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def command_process() -> Iterator[Callable[[int], int]]:
    """Streams and signals for one command: yields `finish(code)`, which says what became of stdout (one
    line on stderr if it failed) and returns the exit code, raised to 1 for output lost to an error."""
    for stream in (sys.stdout, sys.stderr):  # a path the encoding cannot show is written as an escape
        with contextlib.suppress(AttributeError, ValueError):  # not a TextIOWrapper, or a closed one
            stream.reconfigure(errors="backslashreplace")
    stdout = GuardedStdout(sys.stdout)
    sys.stdout = stdout
    previous = {number: signal.getsignal(number) for number in SIGNALS}
    _received.clear()
    for number in previous:  # not KeyboardInterrupt for SIGINT: Typer turns that into a silent exit 130
        signal.signal(number, _raise_interrupted)

    def finish(code: int) -> int:
        if stdout.error is None:
            return code
        reason = stdout.error.strerror or type(stdout.error).__name__
        if stdout.error.errno == errno.EPIPE:  # the reader chose to stop reading, e.g. `| head`
            line = f"note: stdout was closed ({reason}); the rest of the output was dropped"
        else:
            line = f"error: cannot write to stdout ({reason}); the rest of the output was lost"
            code = code or 1
        print(f"mnist-ffn: {line}", file=sys.stderr)
        return code

    try:
        yield finish
    finally:
        sys.stdout = stdout._stream
        for number, handler in previous.items():
            signal.signal(number, handler)


_received: list[int] = []  # the signals this command received, even where their exception was swallowed


def _raise_interrupted(number: int, frame) -> None:
    _received.append(number)
    raise Interrupted(number)


def signal_received() -> int | None:
    """The last signal this command received. An Interrupted raised inside an extension module's import can be
    swallowed there and come back as another error (numpy: "cannot load module more than once per process"):
    that error is still the signal's doing."""
    return _received[-1] if _received else None


def ignore_signals() -> None:
    """For the last words: a second Ctrl-C must not cut the one line of error short."""
    for number in SIGNALS:
        signal.signal(number, signal.SIG_IGN)


def fast_exit(main: Callable[[], None]) -> None:
    """The `mnist-ffn` executable: main(), then an exit that skips the interpreter's teardown.

    At exit, the static destructors of torch's shared libraries (the CUDA build's are over a
    gigabyte) page their code back in: about 130 MiB of extra resident memory and a pause, after
    the work is done. By the time main() returns every file has been written atomically and
    closed, so only the standard streams need flushing before os._exit.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    except KeyboardInterrupt:  # Ctrl-C in the instant before main() handles signals, or after
        print("mnist-ffn: error: interrupted by SIGINT", file=sys.stderr)
        code = 130
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("message"), as Click does for some errors
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # e.g. a reader that closed the pipe: nothing left to tell it
            stream.flush()
    os._exit(code)
