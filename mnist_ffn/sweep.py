"""Sweeps on Optuna: many runs of the same training code, in worker processes, on one or many machines.

Each trial is one point of the spec's space with one seed, trained by `train.train` into its own
run folder `OUT/trials/<number>-<point>-seed<seed>/`. Workers on one machine are processes that
share the CPU threads; workers on many machines share one Optuna study in PostgreSQL (or in the
default journal file, on a shared file system).

Exactly once: the process that creates the study enqueues every grid point x seed, and workers
only pop enqueued trials (Optuna hands a waiting trial to one worker only); GridSampler alone could
give two workers the same point. A trial whose worker died (kill -9, out of memory, a lost machine)
is failed and enqueued again with the same run folder, so its rerun resumes from that folder's
last.pt: the result is the same as if it had never died. Dead workers are found by process id on
this machine and, with PostgreSQL, by Optuna's heartbeat from any machine.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import multiprocessing
import os
import random
import signal
import socket
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

from mnist_ffn.atomic import write_text_atomically
from mnist_ffn.config import same_but_threads
from mnist_ffn.errors import ConfigError, Interrupted, MnistFfnError, TrainingInterrupted, UsageError
from mnist_ffn.report import strict_json
from mnist_ffn.run_folder import RunFolder
from mnist_ffn.sweep_spec import Range, SweepSpec, point_config, point_label

SWEEP_FILE = "sweep.json"  # which study and spec an out folder belongs to
JOURNAL_FILE = "journal.log"  # the study, without PostgreSQL
JOURNAL_LOCK = "journal.lock"  # flock()ed by the process writing to the journal
RESULTS_FILE = "results.csv"
RESULTS_JSON = "results.json"
BOOKKEEPING_FILES = (SWEEP_FILE, JOURNAL_FILE, JOURNAL_LOCK, RESULTS_FILE, RESULTS_JSON)  # the sweep's, not the runs'
HEARTBEAT_SECONDS = 5  # a PostgreSQL worker proves it is alive this often ...
GRACE_SECONDS = 30  # ... and is declared dead after this long without a heartbeat
RESULT_COLUMNS = ("point", "seeds", "val_mean", "val_std", "test_mean", "test_std", "seconds_mean")

# Workers are forked from a server process that has imported torch and Optuna once but never run
# either: each worker starts in milliseconds instead of paying the imports, and inherits no threads
# (forking a process whose torch thread pools already run is what is unsafe).
_CONTEXT = multiprocessing.get_context(
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
if _CONTEXT.get_start_method() == "forkserver":
    _CONTEXT.set_forkserver_preload(["torch", "optuna", "mnist_ffn.train"])


def _optuna():
    try:
        import optuna
    except ImportError:
        raise MnistFfnError("sweeps need Optuna: pip install 'mnist-ffn[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- storage and study -------------------------------------------------------------------------------------------


def open_storage(url: str | None, out: Path):
    """The default journal file in the sweep folder, or a PostgreSQL database shared by many machines."""
    optuna = _optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend

        backend = JournalFileBackend(str(out / JOURNAL_FILE), lock_obj=_JournalLock(out / JOURNAL_LOCK))
        return optuna.storages.JournalStorage(backend)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")  # psycopg 3, the sweep extra's driver
    elif not url.startswith("postgresql+psycopg://"):
        raise UsageError(f"--storage {url}: expected postgresql://USER@HOST:PORT/DATABASE")
    attempts = 10
    for attempt in range(attempts):
        try:
            return _rdb_storage(optuna, url)
        except Exception as exc:  # SQLAlchemy and psycopg report a refused or misspelt server in many ways
            reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            # Machines starting together on an empty database race to create Optuna's tables: the winner's
            # commit takes milliseconds, so try again soon, after a random wait that keeps losers apart.
            if ("duplicate" in reason or "already exists" in reason) and attempt < attempts - 1:
                time.sleep(random.uniform(0.05, 0.25))
                continue
            raise MnistFfnError(f"--storage {url}: cannot use the database ({reason[:200]})") from None
    raise AssertionError("unreachable")


class _JournalLock:
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


def open_study(spec: SweepSpec, storage, name: str):
    """Create the study (and enqueue its grid) or join it; refuse a study of the same name with another spec."""
    optuna = _optuna()
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        _wait_until_queued(study, spec, name)
        return study
    study.set_user_attr("spec", spec.fingerprint())
    study.set_user_attr("spec_file", str(spec.path))
    if spec.sampler == "grid":
        for point in spec.grid():
            for seed in spec.seeds:
                study.enqueue_trial(_fixed_params(point), user_attrs={"point": point, "seed": seed})
    study.set_user_attr("queued", True)  # other processes wait for this before they draw trials
    return study


def _wait_until_queued(study, spec: SweepSpec, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        attrs = study.user_attrs
        if "spec" in attrs and attrs["spec"] != spec.fingerprint():
            raise UsageError(
                f"--study {name}: exists with another spec ({attrs.get('spec_file', '?')}); "
                "name a new study with --study"
            )
        if attrs.get("queued"):
            return
        if time.monotonic() > deadline:
            raise MnistFfnError(f"--study {name}: its creator never finished setting it up; name a new study")
        time.sleep(0.2)


def _fixed_params(point: dict) -> dict:
    """Optuna params of an enqueued grid point: each choice as the JSON string `_suggest` offers it."""
    return {key: json.dumps(value) for key, value in point.items()}


# -- the sweep --------------------------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec,
    *,
    out: Path,
    storage_url: str | None,
    study_name: str,
    workers: int,
    trials: int | None,
    data_dir: Path,
    device: str,
    log=None,
    in_process: bool = False,
) -> dict:
    """Run (or continue, or join) the sweep and return its results.

    `in_process`: one worker, this process (for `compare`: its trials run one after another in the
    foreground anyway, and need no second torch start); `out` is then the caller's, already checked.
    """
    _optuna()
    if trials is not None:
        spec.trials = trials
    if not in_process:
        _check_out_folder(out, spec, study_name)
    if storage_url is None:
        _make_folder(out)  # the journal file lives there
    storage = open_storage(storage_url, out)
    study = open_study(spec, storage, study_name)  # refuses a study of this name with another spec
    _make_folder(out)
    _write_sweep_file(out, spec, study_name, storage_url)
    _recover_dead_trials(study)
    threads = None if in_process else max(1, (os.cpu_count() or 1) // workers)  # None: the config's own
    job = {
        "spec": spec,
        "out": out,
        "storage_url": storage_url,
        "study": study_name,
        "data_dir": data_dir,
        "device": device,
        "threads": threads,
        "in_process": in_process,
    }
    try:
        while _has_work(study, spec):  # again if trials of workers that died meanwhile were queued again
            if in_process:
                worker_main(job)
            else:
                _run_workers(study, spec, job, workers, log)
            _recover_dead_trials(study)
    except Interrupted as exc:
        name = signal.Signals(exc.signal_number).name
        raise TrainingInterrupted(
            f"stopped by {name}; each running trial saved its run folder; rerun the same command to continue",
            exc.signal_number,
        ) from None
    return _finish(out, study, spec)


def _run_workers(study, spec: SweepSpec, job: dict, workers: int, log) -> None:
    """Start `workers` processes and wait for them; one that dies is replaced while work remains."""
    processes = [_CONTEXT.Process(target=worker_main, args=(job,), daemon=False) for _ in range(workers)]
    for process in processes:
        process.start()
    try:
        while processes:
            for process in list(processes):
                process.join(timeout=0.5)
                if process.exitcode is None:
                    continue
                processes.remove(process)
                if process.exitcode != 0:  # a crash, out of memory, kill -9: its trial is run again
                    _recover_dead_trials(study)
                    if _has_work(study, spec):
                        replacement = _CONTEXT.Process(target=worker_main, args=(job,), daemon=False)
                        replacement.start()
                        processes.append(replacement)
                    if log:
                        log(f"a worker ended with exit code {process.exitcode}; its trial is queued again")
    finally:  # stopped by a signal: each worker saves its run and stops (SIGTERM), then the sweep ends
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()


def _finish(out: Path, study, spec: SweepSpec) -> dict:
    results = collect_results(study, spec)
    write_results(out, results)
    return results


def _check_out_folder(out: Path, spec: SweepSpec, study_name: str) -> None:
    """The same command again continues its own sweep; any other folder with files in it is refused."""
    record = out / SWEEP_FILE
    if record.exists():
        try:
            held = json.loads(record.read_text())
        except (ValueError, OSError):
            held = {}
        if held.get("spec") != spec.fingerprint() or held.get("study") != study_name:
            raise UsageError(f"--out {out}: holds another sweep (study {held.get('study', '?')}); choose another --out")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: exists and is not a sweep folder; choose an empty or new folder")


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistFfnError(f"--out {out}: cannot create the folder ({exc.strerror})") from None


def _write_sweep_file(out: Path, spec: SweepSpec, study_name: str, storage_url: str | None) -> None:
    record = {
        "spec": spec.fingerprint(),
        "spec_file": str(spec.path.resolve()),
        "study": study_name,
        "storage": storage_url,
    }
    write_text_atomically(out / SWEEP_FILE, json.dumps(record, indent=2) + "\n")


def _has_work(study, spec: SweepSpec) -> bool:
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return True  # the grid, a point's other seeds, or a retry
    if spec.sampler == "grid":
        return False
    return sum(1 for trial in study.get_trials(deepcopy=False) if trial.user_attrs.get("sampled")) < spec.trials


def _recover_dead_trials(study) -> None:
    """Fail the running trials of workers that died on this machine (or, with PostgreSQL, stopped their
    heartbeat anywhere) and enqueue each again with its run folder, to resume from its last.pt."""
    optuna = _optuna()
    from optuna.trial import TrialState

    with contextlib.suppress(Exception), warnings.catch_warnings():  # only PostgreSQL has heartbeats
        warnings.simplefilter("ignore")  # Optuna calls fail_stale_trials experimental
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
        if not pid:  # killed in the instant between drawing the trial and naming its worker
            age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
            if age < GRACE_SECONDS:
                continue
        elif worker_host != host or _process_alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        _requeue(study, trial._trial_id)


def _requeue(study, trial_id: int) -> None:
    """Enqueue a failed trial again with its params and user attributes, so with its run folder."""
    optuna = _optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental in Optuna's eyes, stable in ours
        retry = optuna.storages.RetryFailedTrialCallback(max_retry=None)
    retry(study, study._storage.get_trial(trial_id))


def _process_alive(pid: int) -> bool:
    """Whether `pid` runs on this machine; a zombie (killed, its parent gone too) is dead."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


# -- a worker ---------------------------------------------------------------------------------------------------


def worker_main(job: dict) -> None:
    """One worker process: draw trials from the study until there are none, train each."""
    import torch

    in_process = job["in_process"]
    if not in_process:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the sweep process, which stops the workers
        torch.set_num_threads(job["threads"])
    optuna = _optuna()
    spec: SweepSpec = job["spec"]
    storage = open_storage(job["storage_url"], job["out"])
    study = optuna.load_study(study_name=job["study"], storage=storage, pruner=_pruner(spec), sampler=_sampler(spec))
    while _has_work(study, spec):
        with warnings.catch_warnings():  # Optuna warns that its heartbeat expects optimize(); _Heartbeat keeps it
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # first: who to ask if it lives
        if spec.sampler == "grid" and "point" not in trial.user_attrs:  # the queue emptied as we asked
            trial.set_user_attr("discarded", True)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        try:
            _run_trial(study, trial, spec, job)
        except TrainingInterrupted as exc:  # saved in its run folder and queued again: a rerun resumes it
            if in_process:
                raise
            sys.exit(exc.exit_code)


def _pruner(spec: SweepSpec):
    optuna = _optuna()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, len(spec.seeds)), n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _sampler(spec: SweepSpec):
    optuna = _optuna()
    return optuna.samplers.TPESampler(seed=spec.seeds[0]) if spec.sampler == "tpe" else None


def _suggest(trial, spec: SweepSpec) -> tuple[dict, int]:
    """The trial's point and seed. Enqueued trials (the grid, retries, tpe's other seeds) get their fixed
    values back from the same suggest calls that let TPE sample a new point."""
    point = {}
    for key, value in spec.space.items():
        if isinstance(value, Range) and value.integer:
            point[key] = trial.suggest_int(key, int(value.low), int(value.high), log=value.log)
        elif isinstance(value, Range):
            point[key] = trial.suggest_float(key, value.low, value.high, log=value.log)
        else:
            # as JSON strings: Optuna's choices must be scalars, and model.hidden's are lists
            point[key] = json.loads(trial.suggest_categorical(key, [json.dumps(item) for item in value]))
    if "point" in trial.user_attrs:
        return trial.user_attrs["point"], trial.user_attrs["seed"]
    seed = spec.seeds[0]
    trial.set_user_attr("point", point)
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("sampled", True)  # counts toward the spec's trials
    for other in spec.seeds[1:]:  # a point TPE sampled runs once per seed too
        trial.study.enqueue_trial(trial.params, user_attrs={"point": point, "seed": other})
    return point, seed


def _run_trial(study, trial, spec: SweepSpec, job: dict) -> None:
    optuna = _optuna()
    from mnist_ffn.train import train

    point, seed = _suggest(trial, spec)
    out: Path = job["out"]
    relative = trial.user_attrs.get("run_folder") or spec.trial_folder(trial.number, point, seed)
    trial.set_user_attr("run_folder", relative)
    run = RunFolder(out / relative)
    config = point_config(spec.base, point, seed)
    if job["threads"] is not None:
        config.train.threads = job["threads"]

    def report(row: dict) -> None:
        trial.report(row["val_acc"], step=row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    finished = _finished_summary(run, config)
    if finished is not None:  # the run ended but its worker died before telling the study: keep it
        _tell_complete(study, trial, finished, finished["wall_seconds"])
        return
    heartbeat = _Heartbeat(study, trial)
    started = time.perf_counter()
    try:
        with heartbeat:
            resume = run.last_checkpoint.is_file()
            summary = train(
                None if resume else config,
                data_dir=job["data_dir"],
                out=run.path,
                device=job["device"],
                resume=resume,
                force=not resume,  # a folder without last.pt holds nothing worth keeping
                log=None,
                progress_bars=False,
                on_epoch=report,
            )
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    except TrainingInterrupted:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        _requeue(study, trial._trial_id)
        raise
    except (MnistFfnError, ConfigError) as exc:
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if job["in_process"]:
            raise  # compare: the run's own message, as `train` gives it
        return
    _tell_complete(study, trial, summary, time.perf_counter() - started)


def _tell_complete(study, trial, summary: dict, seconds: float) -> None:
    trial.set_user_attr("test_accuracy", summary["test_accuracy"])
    trial.set_user_attr("seconds", seconds)
    study.tell(trial, summary["best_val_accuracy"])


def _finished_summary(run: RunFolder, config) -> dict | None:
    """The summary of a run that already finished in this folder with this config, else None.

    The thread count may differ (a rerun with another --workers): a finished run stays finished.
    """
    on_disk = run.saved_config()
    if on_disk is None or not run.summary.is_file():
        return None
    if not same_but_threads(on_disk, config):
        return None
    try:
        return run.read_summary()
    except MnistFfnError:
        return None


class _Heartbeat:
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


# -- results ----------------------------------------------------------------------------------------------------


def collect_results(study, spec: SweepSpec) -> dict:
    """One row per point: mean and spread over the seeds finished, best validation accuracy first."""
    from optuna.trial import TrialState

    groups: dict[str, list] = {}
    labels: dict[str, dict] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        point = trial.user_attrs.get("point")
        if point is None:
            continue
        key = json.dumps(point, sort_keys=True)
        labels[key] = point
        groups.setdefault(key, []).append(trial)
    rows = []
    for key, trials in groups.items():
        values = [trial.value for trial in trials]
        tests = [trial.user_attrs.get("test_accuracy", math.nan) for trial in trials]
        seconds = [trial.user_attrs.get("seconds", math.nan) for trial in trials]
        rows.append(
            {
                "point": point_label(labels[key]),
                "params": labels[key],
                "seeds": len(trials),
                "val_mean": statistics.fmean(values),
                "val_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "test_mean": statistics.fmean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "seconds_mean": statistics.fmean(seconds),
                "run_folders": sorted(trial.user_attrs["run_folder"] for trial in trials),
            }
        )
    rows.sort(key=lambda row: -row["val_mean"])
    states = [trial.state.name for trial in study.get_trials(deepcopy=False)]
    results = {
        "study": study.study_name,
        "sampler": spec.sampler,
        "seeds": spec.seeds,
        "points": rows,
        "trials": {state: states.count(state) for state in sorted(set(states))},
    }
    if spec.sampler == "tpe" and len(groups) > 1:
        with contextlib.suppress(Exception):  # importances need enough finished trials
            import optuna

            results["importances"] = optuna.importance.get_param_importances(study)
    return results


def write_results(out: Path, results: dict) -> None:
    """results.csv for spreadsheets, results.json (with each point's values) for `mnist-ffn plot`."""
    write_text_atomically(out / RESULTS_JSON, strict_json(results) + "\n")
    lines = [",".join(RESULT_COLUMNS)]
    for row in results["points"]:
        cells = [f'"{row["point"]}"', str(row["seeds"])]
        cells += [f"{row[column]:.6g}" for column in RESULT_COLUMNS[2:]]
        lines.append(",".join(cells))
    write_text_atomically(out / RESULTS_FILE, "\n".join(lines) + "\n")


def report_folder(out: Path) -> dict:
    """The results of the sweep in `out`, as they stand (it may still be running)."""
    from mnist_ffn.sweep_spec import load_spec

    record_path = out / SWEEP_FILE
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        raise UsageError(f"--report {out}: not a sweep folder (no readable {SWEEP_FILE})") from None
    spec = load_spec(Path(record["spec_file"]))
    study = _optuna().load_study(study_name=record["study"], storage=open_storage(record["storage"], out))
    results = collect_results(study, spec)
    write_results(out, results)
    return results
