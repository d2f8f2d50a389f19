"""`mnist-ffn sweep-server`: Optuna's gRPC storage proxy in front of a study's PostgreSQL database.

Each worker that talks to PostgreSQL directly holds its own connections, and PostgreSQL allows 100 by default:
past a few dozen workers a sweep meets "too many clients". Workers started with `--storage grpc://HOST:PORT` talk
to this server instead, and it alone talks to the database, through a pool of `--connections` (default 4) that it
never exceeds: one server serves hundreds of workers. It also keeps the study in memory (Optuna's cached
storage), so that the workers' reads of the study cost the database nothing.

The proxy speaks gRPC without TLS and asks no password: anyone who reaches its port can read and change every
study in the database. Loopback by default; any other address says so once. Ctrl-C or SIGTERM stops it, after the
requests in flight are answered; a worker that then asks gets one line and its rerun continues the sweep.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from mnist_ffn.errors import Interrupted, MnistFfnError, UsageError
from mnist_ffn.experiments.storage import (
    TooManyConnections,
    grpc_target,
    optuna_module,
    rdb_storage,
    storage_failure,
    without_password,
)
from mnist_ffn.messages import cut, reason
from mnist_ffn.web.serving import bound_addresses, check_port, is_loopback

DEFAULT_PORT = 13000
DEFAULT_CONNECTIONS = 4  # the study's reads are served from memory; 4 keep up with hundreds of workers' writes
STOP_GRACE = 5.0  # seconds the requests in flight get to finish on Ctrl-C or SIGTERM
APPLICATION = "mnist-ffn sweep-server"  # its connections' name in pg_stat_activity


def serve(url: str, host: str, port: int, connections: int, *, log, warn) -> None:
    """Serve the study storage at `url` on host:port until SIGINT or SIGTERM."""
    optuna_module()
    try:
        from optuna.storages._grpc.server import make_server  # Optuna's own proxy (>= 4.2), as its server runs it
    except ImportError:
        raise MnistFfnError("sweep-server needs grpcio and Optuna >= 4.2: pip install 'mnist-ffn[sweep]'") from None
    if not url.startswith(("postgresql://", "postgresql+psycopg://")):
        raise UsageError(f"--storage {cut(url)}: expected postgresql://USER@HOST:PORT/DATABASE")
    host = host.strip("[]")  # --host "[::1]" as URLs write it, or ::1
    check_port(host, port)
    shown = without_password(url)
    stopping = threading.Event()  # set on the way out: no request thread waits on a full database past the stop
    storage = rdb_storage(url, pool=connections, heartbeat=False, application=APPLICATION, stopping=stopping)
    cached = optuna_module().storages.get_storage(storage)  # the study kept in memory, as Optuna's proxy docs advise
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)  # a failed request is our one line, not a traceback
    bracketed = grpc_target(host, port).rpartition(":")[0]
    try:  # one thread per connection: a request never waits on the pool, it queues in gRPC instead
        server = make_server(ReportedStorage(cached, url, warn), bracketed, port, ThreadPoolExecutor(connections))
        server.start()
    except RuntimeError as exc:  # gRPC could not bind after all (taken since check_port looked, or refused)
        storage.engine.dispose()
        raise UsageError(f"--port {port}: {bracketed}:{port} cannot be used ({reason(exc)}); choose another") from None
    try:
        exposed = exposure(host, port, shown)
        if exposed:
            warn(exposed)
        room = too_few_connections(storage, connections, shown)
        if room:
            warn(room)
        log(
            f"sweep server for {shown} on {bracketed}:{port}, holding at most {connections} database connections; "
            f"workers join with --storage grpc://{bracketed}:{port}. Ctrl-C stops it."
        )
        while True:
            time.sleep(3600)
    except Interrupted as exc:
        log(f"stopping (signal {exc.signal_number}): answering the requests in flight")
    finally:
        stopping.set()
        server.stop(STOP_GRACE).wait()
        with contextlib.suppress(Exception):
            storage.engine.dispose()
    log("sweep server stopped")


def too_few_connections(storage, connections: int, shown: str) -> str | None:
    """A warning where the database lets fewer clients in than --connections asks for (max_connections, less the
    superuser's reserve unless the server's user is a superuser, less the connections others hold now): the server
    then waits, with backoff, for room."""
    from sqlalchemy import text

    query = text(
        "SELECT current_setting('max_connections')::int - CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = "
        "current_user) THEN 0 ELSE current_setting('superuser_reserved_connections')::int END, "
        "(SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND application_name <> :own)"
    )
    try:
        with storage.engine.connect() as connection:
            allowed, others = connection.execute(query, {"own": APPLICATION}).one()
    except Exception:  # a warning's numbers: a database that cannot say them is not refused for it
        return None
    free = allowed - others  # for the server's own connections (this query's among them)
    if connections <= free:
        return None
    return (
        f"--connections {connections}: {shown} lets {allowed} clients of this user in (max_connections, less the "
        f"superuser's reserve for others) and {others} other connections are open now, so at most {free} are "
        "free: the server will wait for room; lower --connections or raise max_connections"
    )


def exposure(host: str, port: int, shown: str) -> str | None:
    """Who else can reach a sweep server on `host`, decided by the addresses it binds; None for this machine only."""
    exposed = [address for address in bound_addresses(host, port) if not is_loopback(address)]
    if not exposed:
        return None
    return (
        f"--host {cut(host)}: the sweep server is open to everyone who can reach {', '.join(exposed)} over the "
        f"network, unencrypted and without a password: they can read and change every study in {shown}"
    )


class ReportedStorage:
    """The storage as the proxy serves it, which says on stderr when its database is lost and when it is back,
    once each, instead of a traceback per failed request (each such request fails back to its worker)."""

    def __init__(self, storage, url: str, warn):
        self._storage, self._url, self._warn = storage, url, warn
        self._lost = False
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        attribute = getattr(self._storage, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            try:
                result = attribute(*args, **kwargs)
            except Exception as exc:
                self._failed(exc)
                raise
            self._served()
            return result

        return call

    def _failed(self, exc: Exception) -> None:
        exceptions = optuna_module().exceptions
        if isinstance(exc, KeyError | exceptions.OptunaError) and not isinstance(exc, exceptions.StorageInternalError):
            return  # the study's own answer (no such trial, a study of that name exists): the worker's to handle
        line = str(exc) if isinstance(exc, TooManyConnections) else storage_failure(exc, self._url, None)
        if line is None:
            return
        with self._lock:
            if not self._lost:
                self._lost = True
                self._warn(f"{line.partition(';')[0]}; the workers' requests fail until it is back")

    def _served(self) -> None:
        if self._lost:
            with self._lock:
                if self._lost:
                    self._lost = False
                    self._warn(f"the study's database {without_password(self._url)} answers again")
