"""The files people name and the files mnist-ffn writes.

Reading: regular files only. A FIFO would hold a command forever waiting for a writer, and a device such as
/dev/zero would feed it without end, so anything but a regular file is refused before a byte is read; the file
is opened without waiting and then checked, so what is checked is what is read.

Writing: atomic. A temp file in the same folder, flushed and fsynced, then os.replace: a reader (or a run resumed
after SIGKILL) sees either the old file or the new one, never half of one. Temp files are named
`.<name>.<random>.mnist-ffn-partial`, no name a person would choose, so clearing the leftovers of a killed process
can never remove a file of theirs. Only a regular file is ever replaced, never a device or a FIFO. JSON is
written as strict parsers read it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from mnist_ffn.errors import WriteError
from mnist_ffn.messages import reason

# -- reading ------------------------------------------------------------------------------------------------------


class NotARegularFile(OSError):
    """A FIFO, a device or a socket where a file was expected; `strerror` says which."""


def open_regular(path: Path) -> BinaryIO:
    """`open(path, "rb")` for regular files; IsADirectoryError for a folder, NotARegularFile for the rest."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens at once instead of waiting
    try:
        mode = os.fstat(descriptor).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        if not stat.S_ISREG(mode):
            raise NotARegularFile(errno.EINVAL, f"not a regular file ({_kind(mode)})", str(path))
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def names_a_folder(text: str) -> bool:
    """Whether a path as typed names a folder: `dir/`, `dir/.`, `dir/..` (which pathlib's Path turns into `dir`)."""
    last = os.path.basename(text.rstrip("/" + os.sep))
    return text.endswith(("/", os.sep)) or last in (".", "..") or text in (".", "..")


# -- writing ------------------------------------------------------------------------------------------------------


TEMP_SUFFIX = ".mnist-ffn-partial"


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` whole or not at all; an OSError (full disk, no permission) leaves the old file as it was.

    Only a regular file (or nothing) is replaced: a device, a FIFO or a socket at `path` (/dev/null, named by a
    --out) is refused with WriteError before anything is written, never swapped for a file."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a name too long, a file on the way
        raise WriteError(f"cannot write {path}: {reason(exc)}") from None
    if mode is not None and stat.S_ISDIR(mode):
        raise WriteError(f"cannot write {path}: {os.strerror(errno.EISDIR)}")
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise WriteError(f"cannot write {path}: not a regular file (a device, a FIFO); mnist-ffn replaces files only")
    temp_name = None
    try:
        descriptor, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
        os.chmod(temp_name, 0o666 & ~umask())  # mkstemp makes 0600 files; a run's files are as shareable as any
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException as exc:
        if temp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
        cause = _os_error_in(exc)
        if cause is not None:
            kept = f"; the previous {path.name} is unchanged" if path.is_file() else ""
            raise WriteError(f"cannot write {path}: {reason(cause)}{kept}") from None
        raise
    _fsync_folder(path.parent)  # makes the rename itself survive a power cut


def _os_error_in(exc: BaseException | None) -> OSError | None:
    """The OSError behind `exc`: torch.save reports a full disk as a RuntimeError raised while handling one."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def write_text_atomically(path: Path, text: str) -> None:
    write_atomically(path, lambda file: file.write(text.encode()))


def remove_leftover_temp_files(folder: Path, names: Iterable[str]) -> None:
    """Temp files of `names` that a killed process never renamed; they are never the only copy of anything."""
    for name in names:
        for leftover in folder.glob(f".{_glob_escape(name)}.*{TEMP_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _glob_escape(name: str) -> str:
    return "".join(f"[{character}]" if character in "*?[" else character for character in name)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened for fsync
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def umask() -> int:
    """The process's umask, read without changing it."""
    current = os.umask(0)
    os.umask(current)
    return current


def strict_json(value) -> str:
    """JSON that strict parsers accept: a NaN or infinite number (a diverged model's loss) becomes null."""

    def finite(item):
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), indent=2, allow_nan=False)
