"""Where a sweep's study lives, and what can go wrong with it.

The default is a journal file in the sweep folder (Optuna's JournalFileBackend), written under an
flock; with `--storage postgresql://...` it is a PostgreSQL database that many machines share.
This module holds the workarounds each needs:

- the journal's lock is an flock, which dies with its process (Optuna's own lock file outlives a kill -9);
- a journal whose end was cut short (a full disk, a kill in the middle of a write) or holds garbage is
  repaired: the valid records are kept and the damaged tail is set aside in a file of its own;
- machines starting together on an empty database race to create Optuna's tables;
- a PostgreSQL worker proves it is alive by a heartbeat;
- a lost database or an unwritable journal is one line that says what to do, not a traceback;
- a password in the URL is never printed nor stored: libpq's own ~/.pgpass or PGPASSWORD supply it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mnist_ffn.errors import MnistFfnError, UsageError
from mnist_ffn.messages import reason

JOURNAL_FILE = "journal.log"  # the study, without PostgreSQL
JOURNAL_LOCK = "journal.lock"  # flock()ed by the process writing to the journal
DAMAGED_SUFFIX = ".damaged"  # journal.log.damaged-1, -2, ...: what a repair set aside, for a person to look at
HEARTBEAT_SECONDS = 5  # a PostgreSQL worker proves it is alive this often ...
GRACE_SECONDS = 30  # ... and is declared dead after this long without a heartbeat


def optuna_module():
    try:
        import optuna
    except ImportError:
        raise MnistFfnError("sweeps need Optuna: pip install 'mnist-ffn[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def without_password(url: str | None) -> str | None:
    """The URL as it may be printed and stored: postgresql://me:secret@host/db -> postgresql://me@host/db."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host))


def _hidden(text: str, url: str) -> str:
    """`text` with the URL's password replaced, for a driver's message that might quote it."""
    password = urlsplit(url).password
    return text.replace(password, "***") if password else text


def open_storage(url: str | None, out: Path):
    """The default journal file in the sweep folder, or a PostgreSQL database shared by many machines."""
    optuna = optuna_module()
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(out / JOURNAL_FILE), lock_obj=JournalLock(out / JOURNAL_LOCK))
        return optuna.storages.JournalStorage(backend)
    shown = without_password(url)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # psycopg 3, the sweep extra's driver
    elif not url.startswith("postgresql+psycopg://"):
        raise UsageError(f"--storage {shown}: expected postgresql://USER@HOST:PORT/DATABASE")
    attempts = 10
    for attempt in range(attempts):
        try:
            return _rdb_storage(optuna, url)
        except Exception as exc:  # SQLAlchemy and psycopg report a refused or misspelt server in many ways
            why = reason(exc, limit=10_000)
            # Machines starting together on an empty database race to create Optuna's tables: the winner's
            # commit takes milliseconds, so try again soon, after a random wait that keeps losers apart.
            if ("duplicate" in why or "already exists" in why) and attempt < attempts - 1:
                time.sleep(random.uniform(0.05, 0.25))
                continue
            raise MnistFfnError(f"--storage {shown}: cannot use the database ({_hidden(why, url)[:200]})") from None
    raise AssertionError("unreachable")


def _rdb_storage(optuna, url: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna calls heartbeats experimental: no warning for every worker
        # A trial whose heartbeat stopped is enqueued again with its user attributes, so with its run folder.
        retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # Optuna >= 4.9
        if retry is not None:
            callback = {"heartbeat_stale_trial_callback": retry()}
        else:
            callback = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=None)}
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs={"connect_args": {"connect_timeout": 10}},
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            **callback,
        )


class JournalLock:
    """Writers of the journal file take turns through an flock on a file beside it (Optuna's lock interface).

    The operating system releases an flock when its process dies, so a sweep killed in the middle of a write
    leaves nothing for the rerun to wait out; Optuna's own lock file would be judged stale only after 30 s.
    On a network file system this needs working locks (NFSv3 with lockd, or NFSv4)."""

    def __init__(self, path: Path):
        self.path = path
        self._descriptor: int | None = None

    def acquire(self) -> bool:
        import fcntl

        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)  # waits for the writer before
        except BaseException:  # e.g. Ctrl-C while waiting: no descriptor left open
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        return True

    def release(self) -> None:
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)  # closing the only descriptor releases the flock

    def __enter__(self) -> JournalLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def repair_journal(out: Path) -> str | None:
    """Keep the journal's valid records and set a damaged tail aside; what was done, for one line, or None.

    Optuna writes whole lines under the lock and reads them back as JSON, so with the lock held a line that
    does not end in a newline, or is not a JSON record, was cut short by a full disk or a kill, or is
    garbage: Optuna would fail on it for good. Everything from that line on is moved to journal.log.damaged-N;
    a trial whose records were in it is found running by a dead worker and resumed from its run folder.
    """
    journal = out / JOURNAL_FILE
    if not journal.is_file():
        return None
    with JournalLock(out / JOURNAL_LOCK):
        content = journal.read_bytes()
        good = _valid_prefix(content)
        if good == len(content):
            return None
        number = 1
        while (aside := out / f"{JOURNAL_FILE}{DAMAGED_SUFFIX}-{number}").exists():
            number += 1
        try:
            aside.write_bytes(content[good:])
            with open(journal, "r+b") as file:
                file.truncate(good)
                os.fsync(file.fileno())
        except OSError as exc:
            raise MnistFfnError(
                f"{journal}: damaged after byte {good:,}, and it cannot be repaired ({exc.strerror}); "
                "free some space and rerun the same command"
            ) from None
    records = content[:good].count(b"\n")
    return (
        f"{journal}: its last {len(content) - good:,} bytes were damaged (a write cut short, or not a record); "
        f"they were set aside in {aside}, and the sweep goes on from the {records:,} records before them"
    )


def _valid_prefix(content: bytes) -> int:
    """The length of the longest run of whole lines at the start of `content` that are each a journal record."""
    good = 0
    while good < len(content):
        end = content.find(b"\n", good)
        if end < 0:
            break
        try:
            record = json.loads(content[good:end])
        except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
            break
        if not isinstance(record, dict) or not isinstance(record.get("op_code"), int):
            break
        good = end + 1
    return good


@contextlib.contextmanager
def failures_as_one_line(url: str | None, out: Path):
    """Turn an error that means the study cannot be reached or written into MnistFfnError with its one line."""
    try:
        yield
    except MnistFfnError:
        raise
    except Exception as exc:
        reason = storage_failure(exc, url, out)
        if reason is None:
            raise
        raise MnistFfnError(reason) from None


def storage_failure(exc: BaseException, url: str | None, out: Path) -> str | None:
    """The one line for an error that means the study cannot be reached or written, else None."""
    optuna = optuna_module()
    lost = [optuna.exceptions.StorageInternalError]
    with contextlib.suppress(ImportError):
        import sqlalchemy.exc

        lost += [sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DatabaseError]
    with contextlib.suppress(ImportError):
        import psycopg

        lost.append(psycopg.OperationalError)
    seen = 0
    while exc is not None and seen < 10:
        if url is None and isinstance(exc, OSError):
            return (
                f"cannot write the study's journal {out / JOURNAL_FILE} ({reason(exc)}); every finished trial is "
                "kept: free some space and rerun the same command"
            )
        if url is not None and isinstance(exc, tuple(lost)):
            parts = urlsplit(url)
            where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
            return (
                f"lost the connection to the study's database at {where}; every finished trial is kept: "
                "rerun the same command when it is back"
            )
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class Heartbeat:
    """Tells a PostgreSQL study every few seconds that this trial's worker is alive (Optuna's heartbeat)."""

    def __init__(self, study, trial):
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self.storage, self.trial_id = study._storage, trial._trial_id
        self.enabled = is_heartbeat_enabled(self.storage)
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a lost connection shows up as a missed beat
                self.storage.record_heartbeat(self.trial_id)

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
