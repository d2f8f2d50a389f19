"""Sweeps on Optuna: many runs of the same training code, in worker processes, on one or many machines.

Each trial is one point of the spec's space with one seed, trained by `train_into` (kept if finished,
resumed if interrupted, as `compare` trains each activation) into its own run folder
`OUT/trials/<number>-<point>-seed<seed>/`. Workers on one machine are processes that share the CPU
threads; workers on many machines share one Optuna study in PostgreSQL (or in the default journal
file, on a shared file system).

Exactly once: the process that creates the study enqueues every grid point x seed, and workers
only pop enqueued trials (Optuna hands a waiting trial to one worker only); GridSampler alone could
give two workers the same point. A trial whose worker died (kill -9, out of memory, a lost machine)
is failed and enqueued again with the same run folder, so its rerun resumes from that folder's
last.pt: the result is the same as if it had never died. Dead workers are found by process id on
this machine and, with PostgreSQL, by Optuna's heartbeat from any machine (through the sweep server,
by the time stamp each worker's heartbeat writes in its trial).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import multiprocessing
import os
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

from mnist_ffn.errors import (
    ConfigError,
    DamagedFile,
    DataError,
    Interrupted,
    MnistFfnError,
    TrainingDiverged,
    TrainingInterrupted,
    UsageError,
)
from mnist_ffn.experiments import storage as sweep_storage
from mnist_ffn.experiments.results import collect_results, latest_by_folder, write_results
from mnist_ffn.experiments.run_once import train_into
from mnist_ffn.experiments.spec import Range, SweepSpec, load_spec, point_config, spec_toml
from mnist_ffn.experiments.storage import (
    JOURNAL_FILE,
    Heartbeat,
    failures_as_one_line,
    open_storage,
    optuna_module,
    repair_journal,
    storage_failure,
    without_password,
)
from mnist_ffn.files import write_text_atomically
from mnist_ffn.training.signals import ignore_ctrl_c

SWEEP_FILE = "sweep.json"  # which study and spec an out folder belongs to
SPEC_COPY = "spec.toml"  # the spec as the sweep runs it, written out whole: what --report reads
SWEEP_RECORD_KEYS = {"spec": str, "spec_file": str, "study": str, "storage": (str, type(None))}
STORAGE_LOST = 3  # a worker's exit code: it could not reach or write the study (its reason is in the queue)
WORKER_FAILED = 4  # a worker's exit code: an error that is nobody's input (its reason is in the queue)

# Workers are forked from a server process that has imported torch and Optuna once but never run
# either: each worker starts in milliseconds instead of paying the imports, and inherits no threads
# (forking a process whose torch thread pools already run is what is unsafe).
_CONTEXT = multiprocessing.get_context(
    "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
)
if _CONTEXT.get_start_method() == "forkserver":
    _CONTEXT.set_forkserver_preload(["torch", "optuna", "mnist_ffn.training.trainer"])


# -- the study ---------------------------------------------------------------------------------------------------


def open_study(spec: SweepSpec, storage, name: str, log=None):
    """Create the study (and enqueue its grid) or join it; refuse a study of the same name with another spec."""
    optuna = optuna_module()
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=False)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        _wait_until_queued(study, spec, name, log)
        return study
    study.set_user_attr("creator", _worker_name())  # first: who to ask whether the queue is still being filled
    study.set_user_attr("points", spec.points_digests)
    study.set_user_attr("spec", spec.fingerprint())
    study.set_user_attr("spec_file", str(spec.path))
    _enqueue_grid(study, spec, log)
    return study


def _enqueue_grid(study, spec: SweepSpec, log) -> None:
    """Queue every grid point x seed not queued yet (all of them, unless a creator was stopped halfway)."""
    if spec.sampler == "grid":
        queued = {
            (json.dumps(trial.user_attrs["point"], sort_keys=True), trial.user_attrs["seed"])
            for trial in study.get_trials(deepcopy=False)
            if "point" in trial.user_attrs
        }
        missing = [
            (point, seed)
            for point in spec.grid()
            for seed in spec.seeds
            if (json.dumps(point, sort_keys=True), seed) not in queued
        ]
        if log and len(missing) > 1000:
            log(f"queuing {len(missing):,} trials")
        for point, seed in missing:
            study.enqueue_trial(_fixed_params(point), user_attrs={"point": point, "seed": seed})
    study.set_user_attr("queued", True)  # other processes wait for this before they draw trials


def _wait_until_queued(study, spec: SweepSpec, name: str, log, timeout: float = 120) -> None:
    """Wait for the study's creator to queue the grid; take over from a creator that died halfway."""
    deadline = time.monotonic() + timeout
    while True:
        attrs = study.user_attrs
        check_same_points(attrs.get("points"), spec, f"--study {name}")
        if "spec" in attrs and attrs["spec"] != spec.fingerprint():
            raise UsageError(
                f"--study {name}: exists with another spec ({attrs.get('spec_file', '?')}); "
                "name a new study with --study"
            )
        if attrs.get("queued"):
            return
        creator_died = "creator" in attrs and not _worker_alive(attrs["creator"])
        if creator_died or time.monotonic() > deadline:  # stopped while queuing: this process finishes it
            study.set_user_attr("creator", _worker_name())
            if "spec" not in attrs:
                study.set_user_attr("spec", spec.fingerprint())
                study.set_user_attr("spec_file", str(spec.path))
            _enqueue_grid(study, spec, log)
            return
        time.sleep(0.2)


def _fixed_params(point: dict) -> dict:
    """Optuna params of an enqueued grid point: each choice as the JSON string `_suggest` offers it."""
    return {key: json.dumps(value) for key, value in point.items()}


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _on_this_machine(name: str) -> bool:
    return name.rpartition(":")[0] == socket.gethostname()


def _worker_alive(name: str) -> bool:
    """Whether the process named `host:pid` may still run: only this machine's processes can be asked."""
    host, _, pid = name.rpartition(":")
    return host != socket.gethostname() or not pid.isdigit() or _process_alive(int(pid))


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
    warn=None,
) -> dict:
    """Run (or continue, or join) the sweep and return its results; results["failed"] lists the trials
    that failed, each with its reason.

    `log(line)` gets progress lines, `warn(line)` what was repaired on the way (a damaged journal).
    """
    optuna_module()
    if trials is not None:
        spec.trials = trials
        size = spec.size_problem()
        if size:
            raise ConfigError([f"--trials {trials}: {size}"])
    from mnist_ffn.training.devices import pick_device

    pick_device(device)  # a device this machine lacks is one line here, not one per trial
    check_data(spec, data_dir)
    notes = _check_out_folder(out, spec, study_name, storage_url)
    with failures_as_one_line(storage_url, out):
        if storage_url is None:
            _make_folder(out)  # the journal file lives there
            repaired = repair_journal(out)
            if repaired:
                notes.append(repaired)
            # before the queue: a start stopped while queuing leaves a folder that this command continues
            _write_sweep_files(out, spec, study_name, storage_url)
        for note in notes:
            if warn:
                warn(note)
        storage = open_storage(storage_url, out)
        study = open_study(spec, storage, study_name, log)  # refuses a study of this name with another spec
        if storage_url is not None:  # after: a study refused in the database leaves no folder behind
            _make_folder(out)
            _write_sweep_files(out, spec, study_name, storage_url)
        _recover_dead_trials(study)
        _retry_failed_trials(study)
        threads = max(1, usable_cores() // workers)
        job = {
            "spec": spec,
            "out": out,
            "storage_url": storage_url,
            "study": study_name,
            "data_dir": data_dir,
            "device": device,
            "threads": threads,
        }
        try:
            while True:
                if _has_work(study, spec):  # again if trials of workers that died meanwhile were queued again
                    _run_workers(study, spec, job, workers, log)
                    _recover_dead_trials(study)
                    continue
                wait = _unnamed_trials_wait(study)
                if wait is None:
                    break
                if log:
                    log(f"a trial's worker stopped before it named itself; it is queued again in {wait:.0f} s")
                time.sleep(wait)
                _recover_dead_trials(study)
        except Interrupted as exc:
            name = signal.Signals(exc.signal_number).name
            raise TrainingInterrupted(
                f"stopped by {name}; each running trial saved its run folder; rerun the same command to continue",
                exc.signal_number,
            ) from None
        results = collect_results(study, spec)
        write_results(out, results)
        return results


def check_data(spec: SweepSpec, data_dir: Path) -> None:
    """Read the data every trial will read, once, before anything is queued: missing or damaged files are one line
    here, not the same failure once per trial (and for MNIST, decoded into the tensor cache the trials read)."""
    from mnist_ffn.data.load import load_data

    points = spec.grid() if spec.sampler == "grid" else [{}]
    seen = set()
    for point in points:
        data = point_config(spec.base, point, spec.seeds[0]).data
        key = json.dumps(dataclasses.asdict(data), sort_keys=True)
        if key not in seen:
            seen.add(key)
            raw = load_data(data, data_dir, spec.seeds[0])
            if data.points:
                spec.points_digests[data.points] = raw.info.sha256["points"]


def check_same_points(held: dict | None, spec: SweepSpec, where: str) -> None:
    """A sweep trains every trial on its CSVs as they were when it began: a rerun or another machine that finds one
    changed is refused, naming it (`held`: the digests the sweep began with; None from before they were kept)."""
    for path, digest in (held or {}).items():
        now = spec.points_digests.get(path)
        if now is not None and now != digest:
            raise DataError(
                f"{where}: data.points {path} has changed since this sweep began (SHA-256 {digest[:12]}..., now "
                f"{now[:12]}...); restore it, or sweep the new file into a new --out and --study"
            )


def _run_workers(study, spec: SweepSpec, job: dict, workers: int, log) -> None:
    """Start `workers` processes and wait for them; one killed by a signal is replaced while work remains.

    A worker that could not reach the study, or met an error that is nobody's input, says why in the
    queue and exits with its own code: then every worker stops and the sweep ends with that one line."""
    reasons = _CONTEXT.SimpleQueue()
    job = {**job, "reasons": reasons}

    def start():
        process = _CONTEXT.Process(target=worker_main, args=(job,), daemon=False)
        process.start()
        return process

    processes = [start() for _ in range(workers)]
    try:
        while processes:
            for process in list(processes):
                process.join(timeout=0.5)
                if process.exitcode is None:
                    continue
                processes.remove(process)
                if process.exitcode in (STORAGE_LOST, WORKER_FAILED):
                    raise MnistFfnError(reasons.get() if not reasons.empty() else "a worker failed")
                if process.exitcode != 0:  # a crash, out of memory, kill -9: its trial is run again
                    _recover_dead_trials(study)
                    if _has_work(study, spec):
                        processes.append(start())
                    if log:
                        log(f"a worker ended with exit code {process.exitcode}; its trial is queued again")
    finally:  # stopped by a signal or a lost study: each worker saves its run and stops (SIGTERM)
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join()


def _check_out_folder(out: Path, spec: SweepSpec, study_name: str, storage_url: str | None) -> list[str]:
    """The same command again continues its own sweep; any other folder with files in it is refused.

    Returns what is worth a warning: a damaged sweep.json (rewritten once the study's own record has
    confirmed the spec) or a deleted journal (the study is made anew; finished run folders are kept)."""
    record = out / SWEEP_FILE
    if not record.exists():
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UsageError(f"--out {out}: exists and is not a sweep folder; choose an empty or new folder")
        return []
    try:
        held = read_sweep_record(out)
    except DamagedFile as exc:
        return [f"{exc}; rewritten from this command, whose spec the study's own record confirms"]
    check_same_points(held.get("points"), spec, f"--out {out}")
    if held["spec"] != spec.fingerprint() or held["study"] != study_name:
        raise UsageError(f"--out {out}: holds another sweep (study {held['study']}); choose another --out")
    if storage_url is None and held["storage"] is None and not (out / JOURNAL_FILE).exists():
        return [
            f"{out / JOURNAL_FILE}: missing, so the study's record is lost; it is made anew from the spec, "
            "and every run folder that finished is kept, not trained again"
        ]
    return []


def read_sweep_record(out: Path) -> dict:
    """sweep.json, checked: which study and spec the folder belongs to; DamagedFile says what is wrong."""
    path = out / SWEEP_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise DamagedFile(f"{path}: damaged, not the {SWEEP_FILE} mnist-ffn writes ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise DamagedFile(f"{path}: damaged, not the {SWEEP_FILE} mnist-ffn writes (not a JSON object)")
    wrong = [key for key, kind in SWEEP_RECORD_KEYS.items() if not isinstance(record.get(key, ...), kind)]
    if wrong:
        raise DamagedFile(f"{path}: damaged, not the {SWEEP_FILE} mnist-ffn writes (no valid {', '.join(wrong)})")
    return record


def _make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistFfnError(f"--out {out}: cannot create the folder ({exc.strerror})") from None


def _write_sweep_files(out: Path, spec: SweepSpec, study_name: str, storage_url: str | None) -> None:
    """sweep.json (which study, which spec, where) and the spec itself, so that --report needs nothing else."""
    record = {
        "spec": spec.fingerprint(),
        "spec_file": str(spec.path.resolve()),
        "study": study_name,
        "storage": without_password(storage_url),  # a rerun's libpq finds the password in ~/.pgpass or PGPASSWORD
        "points": spec.points_digests,
    }
    write_text_atomically(out / SWEEP_FILE, json.dumps(record, indent=2) + "\n")
    comment = f"the spec of the sweep in this folder, written out whole from {spec.path.name}: --report reads it"
    write_text_atomically(out / SPEC_COPY, spec_toml(spec, comment))


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
    optuna = optuna_module()
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna calls fail_stale_trials experimental
        optuna.storages.fail_stale_trials(study)  # only PostgreSQL has heartbeats; the journal returns at once
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker is None:  # killed in the instant between drawing the trial and naming its worker
            age = (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
            if age < sweep_storage.GRACE_SECONDS:
                continue
        elif _on_this_machine(worker):
            if _worker_alive(worker):  # its process id says, whatever its beats
                continue
        elif not sweep_storage.beat_is_stale(trial):  # on another machine: alive while it beats (or no beats)
            continue
        try:
            if not study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process recovered it first
        _requeue(study, trial._trial_id)


def _unnamed_trials_wait(study) -> float | None:
    """Seconds until the youngest running trial that no worker has named passes the grace period, or None where
    there is none. Such a trial's worker stopped between drawing it and naming itself (a database that refused the
    second write, a kill in that instant), or is another machine's in those milliseconds: only the grace period
    tells them apart, and a sweep that ended before it would leave the trial unrun."""
    from optuna.trial import TrialState

    now = datetime.datetime.now()
    ages = [
        (now - trial.datetime_start).total_seconds() if trial.datetime_start else 0.0
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if "worker" not in trial.user_attrs
    ]
    if not ages:
        return None
    return max(0.0, sweep_storage.GRACE_SECONDS - min(ages)) + 0.5


def _retry_failed_trials(study) -> None:
    """Queue again each trial that failed through no fault of its config (a full disk, a damaged last.pt that
    was since removed), in its run folder. A diverged trial stays failed: it would diverge again.

    Each retry names the trial it retries, so that when two processes start at once and both queue one,
    the worker that draws the second sees the first and discards its own (`_is_duplicate_retry`)."""
    from optuna.trial import TrialState

    for trial in latest_by_folder(study).values():
        if trial.state == TrialState.FAIL and trial.user_attrs.get("retry"):
            _requeue(study, trial._trial_id, retry_of=trial.number)


def _requeue(study, trial_id: int, retry_of: int | None = None) -> None:
    """Enqueue a failed trial again with its params and user attributes, so with its run folder."""
    trial = study._storage.get_trial(trial_id)
    # not "sampled": the point counts once toward a tpe sweep's trials, however often it is run
    dropped = ("error", "retry", "worker", "sampled", "retry_of")
    attrs = {key: value for key, value in trial.user_attrs.items() if key not in dropped}
    if retry_of is not None:
        attrs["retry_of"] = retry_of
    params = trial.params or trial.system_attrs.get("fixed_params", {})  # killed before its first suggest call
    study.enqueue_trial(params, user_attrs=attrs)


def _is_duplicate_retry(study, trial) -> bool:
    retry_of = trial.user_attrs.get("retry_of")
    if retry_of is None:
        return False
    return any(
        other.user_attrs.get("retry_of") == retry_of and other.number < trial.number
        for other in study.get_trials(deepcopy=False)
    )


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
    """One worker process: draw trials from the study until there are none, train each.

    A lost study (the database stopped, the journal's disk full) ends the worker with STORAGE_LOST and its
    reason in the queue, for the sweep's one line; the trial it ran stays running and is resumed on rerun."""
    import torch

    ignore_ctrl_c()  # Ctrl-C reaches the sweep process, which stops the workers
    torch.set_num_threads(job["threads"])
    try:
        _draw_and_train(job)
    except TrainingInterrupted as exc:  # saved in its run folder and queued again: a rerun resumes it
        sys.exit(exc.exit_code)
    except Exception as exc:
        reason = storage_failure(exc, job["storage_url"], job["out"])
        job["reasons"].put(reason or f"a worker stopped: {exc if isinstance(exc, MnistFfnError) else repr(exc)}")
        sys.exit(STORAGE_LOST if reason else WORKER_FAILED)


def _draw_and_train(job: dict) -> None:
    optuna = optuna_module()
    spec: SweepSpec = job["spec"]
    storage = open_storage(job["storage_url"], job["out"])
    study = optuna.load_study(study_name=job["study"], storage=storage, pruner=_pruner(spec), sampler=_sampler(spec))
    while _has_work(study, spec):
        trial = _draw(study, spec)
        if trial is None:  # another worker took the last queued trial as we asked
            break
        trial.set_user_attr("worker", _worker_name())  # first: who to ask if it lives
        if sweep_storage.beats_by_attribute(study._storage):  # and that it lives, before anything can fail
            trial.set_user_attr(sweep_storage.BEAT_ATTR, time.time())
        if _is_duplicate_retry(study, trial):  # another process queued the same retry first
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        _run_trial(study, trial, spec, job)


def _draw(study, spec: SweepSpec):
    """The next queued trial, now running; for tpe a new one where none is queued. None where a grid's queue is
    empty: study.ask() would create a trial there, which could only be failed, and the study would keep it."""
    optuna = optuna_module()
    with warnings.catch_warnings():  # Optuna warns that its heartbeat expects optimize(); Heartbeat keeps it
        warnings.simplefilter("ignore", UserWarning)
        if spec.sampler != "grid":
            return study.ask()
        study._thread_local.cached_all_trials = None  # as ask() does: read the queue as it is now
        trial_id = study._pop_waiting_trial_id()  # what ask() pops, without the new trial it makes otherwise
        return None if trial_id is None else optuna.Trial(study, trial_id)


def _pruner(spec: SweepSpec):
    optuna = optuna_module()
    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=max(2, len(spec.seeds)), n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _sampler(spec: SweepSpec):
    optuna = optuna_module()
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
    """Train one trial in its run folder: kept if it finished there, resumed from its last.pt, else new.

    A trial that fails is told FAIL with its reason; `retry` says whether a rerun tries it again: yes for
    what lies outside its config (a full disk, a damaged file), no for a diverged run or a config the
    machine cannot train (it would fail again)."""
    optuna = optuna_module()
    point, seed = _suggest(trial, spec)
    out: Path = job["out"]
    relative = trial.user_attrs.get("run_folder") or spec.trial_folder(trial.number, point, seed)
    trial.set_user_attr("run_folder", relative)
    config = point_config(spec.base, point, seed)
    config.train.threads = job["threads"]

    def report(row: dict) -> None:
        trial.report(row["val_acc"], step=row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned()

    try:
        with Heartbeat(study, trial):
            trained = train_into(
                out / relative, config, data_dir=job["data_dir"], device=job["device"], on_epoch=report,
                points_digest=spec.points_digests.get(config.data.points, ""),
                another_file="restore it: a sweep trains every trial on the file it began with",
            )  # fmt: skip
    except optuna.TrialPruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    except TrainingInterrupted:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        _requeue(study, trial._trial_id)
        raise
    except MnistFfnError as exc:
        trial.set_user_attr("error", str(exc))
        trial.set_user_attr("retry", not isinstance(exc, TrainingDiverged | ConfigError))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return
    _tell_complete(study, trial, trained.summary)


def _tell_complete(study, trial, summary: dict) -> None:
    trial.set_user_attr("test_accuracy", summary["test_accuracy"])
    trial.set_user_attr("seconds", summary["wall_seconds"])  # every process's share, not only the last one's
    study.tell(trial, summary["best_val_accuracy"])


# -- the results of a folder ------------------------------------------------------------------------------------


def report_folder(out: Path, warn=None) -> dict:
    """The results of the sweep in `out`, as they stand (it may still be running)."""
    try:
        record = read_sweep_record(out)
    except FileNotFoundError:
        raise UsageError(f"--report {out}: not a sweep folder (no {SWEEP_FILE})") from None
    copy = out / SPEC_COPY
    spec = load_spec(copy if copy.is_file() else Path(record["spec_file"]))  # folders from before the copy
    if record["storage"] is None and not (out / JOURNAL_FILE).is_file():
        raise MnistFfnError(f"--report {out}: {JOURNAL_FILE} is missing, so there is no study to report")
    with failures_as_one_line(record["storage"], out):
        repaired = repair_journal(out) if record["storage"] is None else None
        storage = open_storage(record["storage"], out)
        study = optuna_module().load_study(study_name=record["study"], storage=storage)
        results = collect_results(study, spec)
        write_results(out, results)
    if repaired and warn:
        warn(repaired)
    return results


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (a container's or `taskset`'s share), not every core
    the machine has, which os.cpu_count() counts."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1
