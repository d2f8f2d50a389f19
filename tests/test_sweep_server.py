"""Sweeps past a database's connection limit (web/sweep_server.py, experiments/storage.py): 40 workers through one
`sweep-server` on a PostgreSQL that allows 20 connections, the same 40 directly on it, kill -9 of a worker and of
the server mid-sweep, and each way the server or its address can be wrong. Every point x seed is trained once,
and the connections each process holds are read from PostgreSQL's own pg_stat_activity."""

import json
import os
import signal
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, closed_port, finish_process, free_port, run_cli, start_forked
from tests.sweeps import (
    PostgresServer,
    assert_found_dead_once_its_beats_stop,
    complete_points,
    running_with_checkpoint,
    trial_of_a_lost_machine,
)

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")
psycopg = pytest.importorskip("psycopg", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")
pytest.importorskip("grpc", reason="needs the sweep extra: pip install 'mnist-ffn[sweep]'")

SERVER = "mnist-ffn sweep-server"
CONNECTIONS = 4  # --connections of the server in these tests (its default)


def forty_point_spec(folder: Path, epochs: int = 1, points: int = 40) -> Path:
    """40 points x 2 seeds = 80 trials of a few hundred 2-D points each: the study's traffic, not training, is
    what these tests load."""
    hidden = ", ".join(f"[{width}]" for width in range(2, 2 + points))
    path = folder / "forty.toml"
    path.write_text(
        f'[base]\ndata.dataset = "circle"\ndata.samples = 200\ntrain.val_size = 20\ntrain.epochs = {epochs}\n\n'
        f'[space]\nmodel.hidden = [{hidden}]\n\n[sweep]\nseeds = [0, 1]\npruner = "none"\n'
    )
    return path


@pytest.fixture
def small_postgres():
    server = PostgresServer({"max_connections": 20})
    try:
        yield server
    finally:
        server.remove()


class ConnectionWatch:
    """The client connections to the study's database, read from pg_stat_activity every few milliseconds by a
    connection of its own (not counted): the most at once in all, and the most each process held at once
    (mnist-ffn names each process's connections by application_name).

    A process's count is what two samples in a row both see: a backend that a client has just closed stays in
    pg_stat_activity until it has exited, a moment later (longer on a loaded machine), and one that is being
    refused for "too many clients" shows while it starts; neither is a connection held, and neither lasts from one
    sample to the next 5 ms later, while a held one does. The total counts every sample, the server's own view."""

    def __init__(self, url: str):
        self.connection = psycopg.connect(url, autocommit=True, application_name="test watch")
        self.peak = 0
        self.peak_by_process: dict[str, int] = defaultdict(int)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        query = (
            "SELECT application_name, count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid() GROUP BY application_name"
        )
        previous: dict[str, int] = {}
        while not self.stop.is_set():
            rows = self.connection.execute(query).fetchall()
            self.peak = max(self.peak, sum(count for _, count in rows))
            for name, count in rows:
                held = min(count, previous.get(name, 0))
                self.peak_by_process[name] = max(self.peak_by_process[name], held)
            previous = dict(rows)
            time.sleep(0.005)

    def finish(self) -> "ConnectionWatch":
        self.stop.set()
        self.thread.join()
        self.connection.close()
        return self


STARTED = []  # every sweep server a test started: stopped at its end, whatever happened


@pytest.fixture(autouse=True)
def no_server_left_behind():
    yield
    while STARTED:
        server = STARTED.pop()
        if server.poll() is None:
            server.kill()
            finish_process(server)


def start_server(url: str, port: int, *extra: str):
    server = start_forked("sweep-server", "--storage", url, "--port", port, *extra, new_session=True)
    STARTED.append(server)
    deadline = time.monotonic() + 60
    while "sweep server for" not in server.output()[0]:
        assert server.poll() is None, finish_process(server)
        assert time.monotonic() < deadline, "the sweep server did not start within 60 s"
        time.sleep(0.02)
    return server


def study_trials(url: str, name: str) -> list:
    from mnist_ffn.experiments.storage import rdb_storage

    return optuna.load_study(study_name=name, storage=rdb_storage(url)).get_trials()


def four_machines(spec: Path, tmp_path: Path, storage: str, workers: int = 10) -> list:
    """4 sweep commands of `workers` worker processes each on one study, as four machines would start them."""
    flags = ["--storage", storage, "--study", "forty", "--workers", workers, "--quiet"]
    return [start_forked("sweep", spec, "--out", tmp_path / f"machine-{n}", *flags) for n in range(4)]


# Not in the one-core machine pass (.ci/run): its promise is the database's connection count, which no CPU changes,
# and 40 workers on one core take 100 s there.
def test_forty_workers_through_one_sweep_server_run_every_trial_once_on_its_few_connections(small_postgres, tmp_path):
    port = free_port()
    server = start_server(small_postgres.url, port)
    watch = ConnectionWatch(small_postgres.url)
    machines = four_machines(forty_point_spec(tmp_path), tmp_path, f"grpc://127.0.0.1:{port}")
    results = [finish_process(machine, timeout=600) for machine in machines]
    watch.finish()
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", "a quiet sweep prints nothing on stderr"
    trials = study_trials(small_postgres.url, "forty")
    done = complete_points(trials)
    assert len(done) == 80 == len(set(done)), "every point x seed once, none twice"
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials), "no empty FAIL trial"
    assert set(watch.peak_by_process) <= {SERVER}, f"only the server reached the database: {watch.peak_by_process}"
    assert 1 <= watch.peak <= CONNECTIONS, f"the server held {watch.peak} connections at once"
    print(f"\n40 workers through the sweep server: at most {watch.peak} database connections at once")

    from mnist_ffn.experiments.results import collect_results
    from mnist_ffn.experiments.spec import load_spec
    from mnist_ffn.experiments.storage import rdb_storage
    from mnist_ffn.files import strict_json

    report = run_cli("sweep", "--report", tmp_path / "machine-0", "--json")  # through the server
    assert report.returncode == 0, report.stderr
    study = optuna.load_study(study_name="forty", storage=rdb_storage(small_postgres.url))
    direct = collect_results(study, load_spec(tmp_path / "forty.toml"))
    assert json.loads(report.stdout) == json.loads(strict_json(direct)), "the same table whichever storage"
    other = forty_point_spec(tmp_path / "machine-0")  # another spec, the same study name
    other.write_text(other.read_text().replace("seeds = [0, 1]", "seeds = [7]"))
    refused = run_cli(
        "sweep", other, "--out", tmp_path / "other", "--storage", f"grpc://127.0.0.1:{port}", "--study", "forty"
    )
    assert_one_line_error(refused, 2, "--study forty: exists with another spec")

    server.send_signal(signal.SIGTERM)
    stopped = finish_process(server, timeout=60)
    assert stopped.returncode == 0 and stopped.stdout.rstrip().endswith("sweep server stopped"), stopped
    assert stopped.stderr == ""


def test_forty_workers_directly_on_the_database_keep_their_budget_or_end_in_one_line(small_postgres, tmp_path):
    """Each worker process holds at most 2 connections (its trial's and its heartbeat's) and none while it trains;
    a full server is asked again with backoff. Whether all 40 finish depends on how their requests fall; either
    they do, or each that gives up ends in the one line that names the ways out. Then a sweep server finishes
    the study without training a finished trial again."""
    spec = forty_point_spec(tmp_path)
    watch = ConnectionWatch(small_postgres.url)
    results = [finish_process(m, timeout=600) for m in four_machines(spec, tmp_path, small_postgres.url)]
    watch.finish()
    for result in results:
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode != 0:
            assert_one_line_error(result, 1, "max_connections", "--workers", "sweep-server")
    workers = {name: peak for name, peak in watch.peak_by_process.items() if name.startswith("mnist-ffn sweep ")}
    assert workers, "the workers reached the database"
    assert max(workers.values()) <= 2, f"a process held more than 2 connections at once: {workers}"
    print(
        f"\n40 workers directly: at most {max(workers.values())} connections a process, {watch.peak} in all at "
        f"once; {sum(result.returncode == 0 for result in results)} of 4 machines finished"
    )
    finished = {path: path.stat().st_mtime_ns for path in tmp_path.glob("machine-*/trials/*/summary.json")}

    port = free_port()
    server = start_server(small_postgres.url, port)
    for n in range(4):  # each machine reruns its command through the server
        rerun = run_cli(
            "sweep", spec, "--out", tmp_path / f"machine-{n}", "--storage", f"grpc://127.0.0.1:{port}",
            "--study", "forty", "--workers", "2", "--quiet",
        )  # fmt: skip
        assert rerun.returncode == 0, rerun.stderr
    done = complete_points(study_trials(small_postgres.url, "forty"))
    assert len(done) == 80 == len(set(done)), "every point x seed once, none twice"
    for path, stamp in finished.items():
        assert path.stat().st_mtime_ns == stamp, f"{path.parent.name} was trained again"
    server.send_signal(signal.SIGINT)
    assert finish_process(server, timeout=60).returncode == 0


def running_trial_workers(url: str) -> list[int]:
    """The process ids of the workers whose trials are running, with a checkpoint to resume from."""
    trials = study_trials(url, "forty")
    running = [trial for trial in trials if trial.state == optuna.trial.TrialState.RUNNING]
    return [int(trial.user_attrs["worker"].rpartition(":")[2]) for trial in running if "worker" in trial.user_attrs]


# Not in the one-core machine pass either (83 s there, ten trials of 150 epochs): its promise, nothing lost and
# nothing run twice, is Optuna's and the database's bookkeeping; the one-core pass keeps kills of runs and of
# journal sweeps (test_resilience, test_sweep), whose resume is bit for bit.
def test_kill_9_of_a_worker_and_of_the_server_mid_sweep_loses_nothing_and_runs_nothing_twice(small_postgres, tmp_path):
    port = free_port()
    grpc_url = f"grpc://127.0.0.1:{port}"
    server = start_server(small_postgres.url, port)
    spec = forty_point_spec(tmp_path, epochs=150, points=5)  # 10 trials, each long enough to be caught running
    out = tmp_path / "sweep"
    args = ["sweep", spec, "--out", out, "--storage", grpc_url, "--study", "forty", "--workers", "2", "--quiet"]
    sweep = start_forked(*args, new_session=True)

    def hold_still_with_a_checkpoint() -> list[int]:
        deadline = time.monotonic() + 120
        while True:
            assert sweep.poll() is None, finish_process(sweep)
            assert time.monotonic() < deadline, "no trial with a checkpoint within 120 s"
            if not any(out.glob("trials/*/last.pt")):  # (and its process group exists by then)
                time.sleep(0.01)
                continue
            os.killpg(sweep.pid, signal.SIGSTOP)
            workers = running_trial_workers(small_postgres.url) if running_with_checkpoint(out) else []
            if workers:
                return workers
            os.killpg(sweep.pid, signal.SIGCONT)
            time.sleep(0.01)

    victim = hold_still_with_a_checkpoint()[0]
    os.kill(victim, signal.SIGKILL)  # a worker: its sweep starts another, which resumes the trial
    os.killpg(sweep.pid, signal.SIGCONT)
    finished_before = len(list(out.glob("trials/*/summary.json")))
    deadline = time.monotonic() + 120
    while len(list(out.glob("trials/*/summary.json"))) < finished_before + 2:
        assert sweep.poll() is None, finish_process(sweep)
        assert time.monotonic() < deadline, "the sweep did not go on after a worker was killed"
        time.sleep(0.02)
    hold_still_with_a_checkpoint()
    os.killpg(server.pid, signal.SIGKILL)  # the server: every worker's next request fails
    os.killpg(sweep.pid, signal.SIGCONT)
    lost = finish_process(sweep, timeout=120)
    assert_one_line_error(lost, 1, f"lost the connection to the sweep server at 127.0.0.1:{port}", "rerun")
    finish_process(server)
    finished = {path: path.stat().st_mtime_ns for path in out.glob("trials/*/summary.json")}

    server = start_server(small_postgres.url, port)
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    trials = study_trials(small_postgres.url, "forty")
    done = complete_points(trials)
    assert len(done) == 10 == len(set(done)), "every point x seed once, none twice"
    for path, stamp in finished.items():
        assert path.stat().st_mtime_ns == stamp, f"{path.parent.name} was trained again"
    retried = [trial for trial in trials if trial.state == optuna.trial.TrialState.FAIL]
    assert retried, "the killed trials were failed and queued again, not lost"
    assert all("run_folder" in trial.user_attrs for trial in retried), "no empty trial: each failed one had run"
    server.send_signal(signal.SIGTERM)
    assert finish_process(server, timeout=60).returncode == 0


def test_a_sweep_server_that_is_not_there_or_a_wrong_address_is_one_line(tmp_path):
    spec = forty_point_spec(tmp_path)
    with closed_port() as port:
        nobody = run_cli("sweep", spec, "--out", tmp_path / "a", "--storage", f"grpc://127.0.0.1:{port}")
    assert_one_line_error(nobody, 1, f"no sweep server answers at 127.0.0.1:{port}", "mnist-ffn sweep-server")
    assert not (tmp_path / "a").exists(), "nothing is left behind"
    for wrong in ("grpc://127.0.0.1", "grpc://:13000", "grpc://127.0.0.1:13000/db", "grpc://127.0.0.1:99999"):
        refused = run_cli("sweep", spec, "--out", tmp_path / "b", "--storage", wrong)
        assert_one_line_error(refused, 2, f"--storage {wrong}: expected grpc://HOST:PORT")
    refused = run_cli("sweep", spec, "--out", tmp_path / "c", "--storage", "mysql://me@127.0.0.1/db")
    assert_one_line_error(refused, 2, "expected postgresql://USER@HOST:PORT/DATABASE or grpc://HOST:PORT")


def test_an_ipv6_address_is_written_as_grpc_reads_it():
    """An IPv6 sweep server is reached as [::1]:PORT: without brackets gRPC reads ::1:13005 as a name."""
    from mnist_ffn.experiments.storage import grpc_address, grpc_target

    assert grpc_address("grpc://[::1]:13005") == ("::1", 13005)
    for host in ("::1", "[::1]"):
        assert grpc_target(host, 13005) == "[::1]:13005"
    assert grpc_target("127.0.0.1", 13005) == "127.0.0.1:13005"
    assert grpc_target("sweeps.lan", 13005) == "sweeps.lan:13005"


def test_a_sweep_server_without_its_database_or_its_port_is_one_line(small_postgres, tmp_path):
    with closed_port() as port:
        password = "s3cret-Pa55"
        no_database = run_cli("sweep-server", "--storage", f"postgresql://me:{password}@127.0.0.1:{port}/none")
    assert_one_line_error(no_database, 1, f"--storage postgresql://me@127.0.0.1:{port}/none: cannot use")
    assert password not in no_database.stderr
    port = free_port()
    server = start_server(small_postgres.url, port)
    taken = run_cli("sweep-server", "--storage", small_postgres.url, "--port", port)
    assert_one_line_error(taken, 2, f"--port {port}: 127.0.0.1:{port} is in use")
    not_postgres = run_cli("sweep-server", "--storage", f"grpc://127.0.0.1:{port}")
    assert_one_line_error(not_postgres, 2, "expected postgresql://USER@HOST:PORT/DATABASE")
    server.send_signal(signal.SIGTERM)
    assert finish_process(server, timeout=60).returncode == 0


def test_a_database_lost_behind_the_server_is_one_line_for_the_sweep_and_one_for_the_server(small_postgres, tmp_path):
    port = free_port()
    server = start_server(small_postgres.url, port)
    spec = forty_point_spec(tmp_path, epochs=40, points=8)  # 16 trials
    out = tmp_path / "sweep"
    args = ["sweep", spec, "--out", out, "--storage", f"grpc://127.0.0.1:{port}", "--study", "forty", "--quiet"]
    sweep = start_forked(*args)
    deadline = time.monotonic() + 120
    while not any(out.glob("trials/*/summary.json")):
        assert sweep.poll() is None, finish_process(sweep)
        assert time.monotonic() < deadline, "no trial finished within 120 s"
        time.sleep(0.02)
    small_postgres.stop()
    lost = finish_process(sweep, timeout=180)
    assert_one_line_error(lost, 1, f"the sweep server at 127.0.0.1:{port} could not serve the study", "rerun")
    small_postgres.start()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    done = complete_points(study_trials(small_postgres.url, "forty"))
    assert len(done) == 16 == len(set(done))
    server.send_signal(signal.SIGTERM)
    stopped = finish_process(server, timeout=60)
    assert stopped.returncode == 0 and "Traceback" not in stopped.stderr, stopped.stderr
    warnings = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(warnings) == 2, warnings  # lost, then back: once each, however many requests failed between
    assert "lost the connection to the study's database" in warnings[0] and "answers again" in warnings[1]


def test_a_sweep_server_on_another_address_says_who_can_reach_it():
    """Decided by the address bound, not by its spelling (as the web pages are); nothing is bound here."""
    from mnist_ffn.web.sweep_server import exposure

    for host in ("127.0.0.1", "127.1", "localhost", "LOCALHOST", "::1", "::ffff:127.0.0.1", "2130706433"):
        assert exposure(host, 13000, "postgresql://me@db/sweeps") is None, host
    warning = exposure("0.0.0.0", 13000, "postgresql://me@db/sweeps")
    assert "open to everyone who can reach 0.0.0.0" in warning and "unencrypted and without a password" in warning


def test_a_database_that_stays_full_is_asked_again_then_one_line_and_the_rerun_finishes(
    small_postgres, tmp_path, monkeypatch
):
    """Every slot taken (by this test's own connections): the sweep asks again with backoff for
    BUSY_WAIT_SECONDS (1 s here, 120 s in use), then ends in the one line that names the ways out, having written
    nothing; with the slots free again, the same command finishes the sweep."""
    from mnist_ffn.experiments import storage as sweep_storage

    monkeypatch.setattr(sweep_storage, "BUSY_WAIT_SECONDS", 1)
    hogs = []
    while True:
        try:
            hogs.append(psycopg.connect(small_postgres.url, connect_timeout=5))
        except psycopg.OperationalError as exc:
            assert "too many clients" in str(exc)
            break
    spec = forty_point_spec(tmp_path, points=8)  # 16 trials
    args = ["sweep", spec, "--out", tmp_path / "sweep", "--storage", small_postgres.url, "--quiet"]
    started = time.monotonic()
    full = run_cli(*args)
    assert_one_line_error(full, 1, "127.0.0.1", "refused more connections for 1 s", "max_connections", "sweep-server")
    assert time.monotonic() - started < 30
    assert not (tmp_path / "sweep").exists(), "nothing written"
    for hog in hogs:
        hog.close()
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    done = complete_points(study_trials(small_postgres.url, "forty"))
    assert len(done) == 16 == len(set(done))


@pytest.mark.machine
def test_a_worker_lost_with_its_machine_is_found_through_the_server_by_its_stopped_beats(
    small_postgres, tmp_path, monkeypatch
):
    """The proxy does not forward Optuna's heartbeat: a worker's beats are time stamps in its trial. Once they
    stop for longer than the grace period, its trial is failed and queued again with its run folder."""
    from mnist_ffn.experiments import storage as sweep_storage

    monkeypatch.setattr(sweep_storage, "GRACE_SECONDS", 3)
    port = free_port()
    start_server(small_postgres.url, port)
    proxy = sweep_storage.open_storage(f"grpc://127.0.0.1:{port}", tmp_path)
    study = optuna.create_study(study_name="lost", storage=proxy, direction="maximize")
    trial = trial_of_a_lost_machine(study)
    with sweep_storage.Heartbeat(study, trial) as heartbeat:  # the worker's beats, until its machine is lost
        assert heartbeat.enabled and not heartbeat.optuna_beats
    assert sweep_storage.BEAT_ATTR in study.get_trials()[0].user_attrs
    assert_found_dead_once_its_beats_stop(study, grace=3)


def test_more_connections_than_the_database_lets_in_is_one_warning_and_the_server_serves(small_postgres, tmp_path):
    from mnist_ffn.experiments.storage import open_storage

    port = free_port()
    server = start_server(small_postgres.url, port, "--connections", "40")  # max_connections is 20
    assert isinstance(open_storage(f"grpc://127.0.0.1:{port}", tmp_path).get_all_studies(), list)  # it serves
    server.send_signal(signal.SIGINT)
    stopped = finish_process(server, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--connections 40:" in lines[0] and "max_connections" in lines[0], stopped.stderr
    quiet = start_server(small_postgres.url, free_port(), "--connections", "2")
    quiet.send_signal(signal.SIGINT)
    assert finish_process(quiet, timeout=60).stderr == ""
    # one connection is refused: Optuna's storage opens a second inside a first at times, and would wait forever
    assert_one_line_error(
        run_cli("sweep-server", "--storage", small_postgres.url, "--connections", "1"), 2, "--connections"
    )
