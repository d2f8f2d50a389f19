"""Where a sweep's study lives, and what can go wrong with it.

The default is a journal file in the sweep folder (Optuna's JournalFileBackend), written under an
flock; with `--storage postgresql://...` it is a PostgreSQL database that many machines share; with
`--storage grpc://HOST:PORT` it is that database behind `mnist-ffn sweep-server` (Optuna's gRPC storage proxy),
which holds a few connections for every worker. This module holds the workarounds each needs:

- the journal's lock is an flock, which dies with its process (Optuna's own lock file outlives a kill -9);
- a journal whose end was cut short (a full disk, a kill in the middle of a write) or holds garbage is
  repaired: the valid records are kept and the damaged tail is set aside in a file of its own;
- machines starting together on an empty database race to create Optuna's tables;
- a PostgreSQL worker proves it is alive by Optuna's heartbeat; through the proxy, which does not forward
  Optuna's heartbeat, by a time stamp in its trial's user attributes (BEAT_ATTR);
- a worker holds a database connection only while it reads or writes the study (at most 2 at once: its trial's
  and its heartbeat's), and a server that refuses more clients is asked again for BUSY_WAIT_SECONDS before the
  one line that names its max_connections and the ways out;
- a lost database or an unwritable journal is one line that says what to do, not a traceback;
- a password in the URL is never printed nor stored: libpq's own ~/.pgpass or PGPASSWORD supply it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import socket
import sys
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
BEAT_ATTR = "beat"  # through the proxy: the worker's clock (time.time()) at its last heartbeat
BUSY_WAIT_SECONDS = 120  # how long "too many clients" is asked again before the sweep ends with one line
CONNECT_TIMEOUT = 10  # seconds for one connection to a database or sweep server
GRPC_SCHEME = "grpc://"
BUSY_SIGNS = ("too many clients", "remaining connection slots are reserved")  # PostgreSQL's words for a full server


class TooManyConnections(MnistFfnError):
    """The database kept refusing connections for BUSY_WAIT_SECONDS: its max_connections is reached."""


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
    """The default journal file in the sweep folder, a PostgreSQL database shared by many machines, or that
    database behind a sweep server (grpc://HOST:PORT)."""
    optuna = optuna_module()
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(out / JOURNAL_FILE), lock_obj=JournalLock(out / JOURNAL_LOCK))
        return optuna.storages.JournalStorage(backend)
    if url.startswith(GRPC_SCHEME):
        return _proxy_storage(optuna, url)
    return rdb_storage(url)


def rdb_storage(
    url: str,
    *,
    pool: int | None = None,
    heartbeat: bool = True,
    application: str | None = None,
    stopping: threading.Event | None = None,
):
    """A PostgreSQL study storage. `pool=None` (a worker): no pool, a connection only while the study is read or
    written; `pool=N` (the sweep server): N connections kept open, never more. `application` names its
    connections in pg_stat_activity (default: this machine and process). `stopping`, once set, ends every wait
    for room in a full database at once (a server that stops does not wait out BUSY_WAIT_SECONDS)."""
    optuna = optuna_module()
    shown = without_password(url)
    if url.startswith("postgresql://"):
        driver_url = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # psycopg 3, the sweep extra's
    elif url.startswith("postgresql+psycopg://"):
        driver_url = url
    else:
        raise UsageError(f"--storage {shown}: expected postgresql://USER@HOST:PORT/DATABASE or grpc://HOST:PORT")
    application = application or f"mnist-ffn sweep {socket.gethostname()}:{os.getpid()}"
    connect = patient_connect("postgresql://" + driver_url.removeprefix("postgresql+psycopg://"), application, stopping)
    attempts = 10
    for attempt in range(attempts):
        try:
            return _rdb_storage(optuna, driver_url, connect, pool=pool, heartbeat=heartbeat)
        except TooManyConnections:
            raise
        except Exception as exc:  # SQLAlchemy and psycopg report a refused or misspelt server in many ways
            why = reason(exc, limit=10_000)
            # Machines starting together on an empty database race to create Optuna's tables: the winner's
            # commit takes milliseconds, so try again soon, after a random wait that keeps losers apart.
            if ("duplicate" in why or "already exists" in why) and attempt < attempts - 1:
                time.sleep(random.uniform(0.05, 0.25))
                continue
            why = re.sub(r"^\([\w.]+\) ", "", why)  # SQLAlchemy's "(psycopg.OperationalError) " before the cause
            raise MnistFfnError(f"--storage {shown}: cannot use the database ({_hidden(why, url)[:200]})") from None
    raise AssertionError("unreachable")


def patient_connect(conninfo: str, application: str, stopping: threading.Event | None = None):
    """A psycopg connect() that asks a full server again, with growing random waits, for BUSY_WAIT_SECONDS (or
    until `stopping` is set)."""

    def connect():
        import psycopg

        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        wait = 0.05
        while True:
            try:
                return psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, application_name=application)
            except psycopg.OperationalError as exc:
                if not any(sign in str(exc) for sign in BUSY_SIGNS):
                    raise
                if time.monotonic() + wait > deadline or (stopping is not None and stopping.is_set()):
                    raise TooManyConnections(_too_many(conninfo)) from None
                pause = random.uniform(wait / 2, wait)  # apart: workers refused together retry apart
                if stopping is not None:
                    stopping.wait(pause)
                else:
                    time.sleep(pause)
                wait = min(wait * 2, 5.0)

    return connect


def _too_many(conninfo: str) -> str:
    parts = urlsplit(conninfo)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    return (
        f"the study's database at {where} refused more connections for {BUSY_WAIT_SECONDS:g} s (\"too many "
        'clients": its max_connections is reached); every finished trial is kept: run fewer --workers, raise '
        "max_connections, or start `mnist-ffn sweep-server` in front of it and sweep with --storage grpc://HOST:PORT"
    )


def _rdb_storage(optuna, url: str, connect, *, pool: int | None, heartbeat: bool):
    from sqlalchemy.pool import NullPool

    if pool is None:
        engine = {"poolclass": NullPool, "creator": connect}
    else:
        engine = {"pool_size": pool, "max_overflow": 0, "pool_pre_ping": True, "creator": connect}
    if not heartbeat:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
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
            engine_kwargs=engine,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            **callback,
        )


def grpc_address(url: str) -> tuple[str, int]:
    """HOST and PORT of grpc://HOST:PORT; one line for anything else."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None or parts.path not in ("", "/"):
        raise UsageError(f"--storage {url}: expected grpc://HOST:PORT, the address of `mnist-ffn sweep-server`")
    return host, port


def grpc_target(host: str, port: int) -> str:
    """host:port as gRPC reads it: an IPv6 address in brackets ([::1]:13000), however it was written."""
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _proxy_storage(optuna, url: str):
    host, port = grpc_address(url)
    bracketed = grpc_target(host, port).rpartition(":")[0]  # what Optuna's client puts before ":PORT"
    try:
        import grpc  # noqa: F401 - Optuna's proxy client needs it
    except ImportError:
        raise MnistFfnError("--storage grpc://: needs grpcio: pip install 'mnist-ffn[sweep]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna calls its proxy experimental
        storage = optuna.storages.GrpcStorageProxy(host=bracketed, port=port)
    if not _answers(host, port):
        storage.close()
        raise MnistFfnError(
            f"--storage {url}: no sweep server answers at {host}:{port} "
            "(start one there with mnist-ffn sweep-server --storage postgresql://...)"
        ) from None
    return storage


def _answers(host: str, port: int) -> bool:
    """Whether a gRPC server answers at host:port: ready, or refused (a closed port answers at once, not after
    CONNECT_TIMEOUT as Optuna's wait_server_ready would)."""
    import grpc

    settled, ready = threading.Event(), []

    def watch(state) -> None:
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            ready.append(state == grpc.ChannelConnectivity.READY)
            settled.set()

    with grpc.insecure_channel(grpc_target(host, port)) as channel:
        channel.subscribe(watch, try_to_connect=True)
        settled.wait(CONNECT_TIMEOUT)
        channel.unsubscribe(watch)
    return bool(ready) and ready[0]


def beats_by_attribute(storage) -> bool:
    """Whether the study's workers prove they live by BEAT_ATTR: through the proxy, which has no heartbeat."""
    client = sys.modules.get("optuna.storages._grpc.client")  # only imported where a proxy was opened
    return client is not None and isinstance(storage, client.GrpcStorageProxy)


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
    proxy_lost = ()
    if "grpc" in sys.modules:  # imported where a proxy was opened
        proxy_lost = (sys.modules["grpc"].RpcError,)
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, TooManyConnections):
            return str(exc)
        if url is None and isinstance(exc, OSError):
            return (
                f"cannot write the study's journal {out / JOURNAL_FILE} ({reason(exc)}); every finished trial is "
                "kept: free some space and rerun the same command"
            )
        if url is not None and url.startswith(GRPC_SCHEME) and isinstance(exc, proxy_lost):
            host, port = grpc_address(url)
            if exc.code().name == "UNAVAILABLE":
                what = f"lost the connection to the sweep server at {host}:{port}"
            else:  # the server answered with an error: its database, most often; its own output says which
                what = (
                    f"the sweep server at {host}:{port} could not serve the study (its database may be down: the "
                    "server's output says)"
                )
            return f"{what}; every finished trial is kept: rerun the same command when it is back"
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
    """Tells the study every few seconds that this trial's worker is alive: Optuna's heartbeat on PostgreSQL,
    BEAT_ATTR through the proxy (which does not forward Optuna's); nothing in a journal, whose workers share a
    machine and are asked by process id."""

    def __init__(self, study, trial):
        from optuna.storages._heartbeat import is_heartbeat_enabled

        self.storage, self.trial_id = study._storage, trial._trial_id
        self.optuna_beats = is_heartbeat_enabled(self.storage)
        self.enabled = self.optuna_beats or beats_by_attribute(self.storage)
        self.stop = threading.Event()

    def __enter__(self):
        if self.enabled:
            self.beat()
            self.thread = threading.Thread(target=self._beat, daemon=True)
            self.thread.start()
        return self

    def beat(self) -> None:
        if self.optuna_beats:
            self.storage.record_heartbeat(self.trial_id)
        else:
            self.storage.set_trial_user_attr(self.trial_id, BEAT_ATTR, time.time())

    def _beat(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            with contextlib.suppress(Exception):  # a lost connection shows up as a missed beat
                self.beat()

    def __exit__(self, *exc_info) -> None:
        self.stop.set()


def beat_is_stale(trial) -> bool:
    """Whether a trial run through the proxy missed its worker's beats for longer than GRACE_SECONDS (the
    machines' clocks must agree to within a few seconds of that, as NTP keeps them)."""
    beat = trial.user_attrs.get(BEAT_ATTR)
    return isinstance(beat, int | float) and time.time() - beat > GRACE_SECONDS
