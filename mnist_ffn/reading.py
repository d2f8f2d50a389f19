"""Opening the files people name (images, checkpoints, configs, data): regular files only.

A FIFO would hold a command forever waiting for a writer, and a device such as /dev/zero would feed
it without end, so anything but a regular file is refused before a byte is read. The file is opened
without waiting and then checked, so what is checked is what is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


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
