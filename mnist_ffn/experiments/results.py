"""A sweep's results, read from its study: one row per point, and one line per trial that failed.

Each run folder is one point x seed, so each counts once, by the last trial that worked in it: a trial
run again after its worker died, or retried after a failure, replaces the one before. A point is ranked
only once every seed has finished; a point with a pruned, failed or pending seed is listed after the
ranked ones, as partial, since a mean over the seeds that survived the pruner flatters it.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from pathlib import Path

from mnist_ffn.experiments.spec import SweepSpec, point_label
from mnist_ffn.files import strict_json, write_text_atomically

RESULTS_FILE = "results.csv"
RESULTS_JSON = "results.json"
RESULT_COLUMNS = ("point", "seeds", "complete", "val_mean", "val_std", "test_mean", "test_std", "seconds_mean")


def latest_by_folder(study) -> dict[str, object]:
    """run folder -> the last trial that worked in it (trials that only drew an empty queue have no folder)."""
    latest: dict[str, object] = {}
    for trial in study.get_trials(deepcopy=False):
        folder = trial.user_attrs.get("run_folder")
        if folder is not None and (folder not in latest or trial.number > latest[folder].number):
            latest[folder] = trial
    return latest


def failed_trials(study) -> list[dict]:
    """Each run folder whose last trial failed, with the reason, and whether a rerun tries it again."""
    from optuna.trial import TrialState

    failures = []
    for folder, trial in sorted(latest_by_folder(study).items()):
        if trial.state == TrialState.FAIL and "error" in trial.user_attrs:
            failures.append(
                {
                    "trial": trial.number,
                    "point": point_label(trial.user_attrs["point"]),
                    "seed": trial.user_attrs["seed"],
                    "run_folder": folder,
                    "error": trial.user_attrs["error"],
                    "retried_on_rerun": bool(trial.user_attrs.get("retry")),
                }
            )
    return failures


def collect_results(study, spec: SweepSpec) -> dict:
    """One row per point: mean and spread over its finished seeds; points with every seed finished first."""
    from optuna.trial import TrialState

    groups: dict[str, list] = {}
    labels: dict[str, dict] = {}
    latest = latest_by_folder(study)
    for trial in latest.values():
        if trial.state != TrialState.COMPLETE:
            continue
        key = json.dumps(trial.user_attrs["point"], sort_keys=True)
        labels[key] = trial.user_attrs["point"]
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
                "complete": len(trials) == len(spec.seeds),
                "val_mean": statistics.fmean(values),
                "val_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "test_mean": statistics.fmean(tests),
                "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
                "seconds_mean": statistics.fmean(seconds),
                "run_folders": sorted(trial.user_attrs["run_folder"] for trial in trials),
            }
        )
    rows.sort(key=lambda row: (not row["complete"], -row["val_mean"]))
    # one state per point x seed: its run folder's last trial, or waiting in the queue for its first
    states = [trial.state.name for trial in latest.values()]
    states += ["WAITING"] * sum(
        "run_folder" not in trial.user_attrs and "point" in trial.user_attrs
        for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    )
    results = {
        "study": study.study_name,
        "sampler": spec.sampler,
        "seeds": spec.seeds,
        "points": rows,
        "trials": {state: states.count(state) for state in sorted(set(states))},
        "failed": failed_trials(study),
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
        cells = ['"' + row["point"].replace('"', '""') + '"', str(row["seeds"]), str(row["complete"]).lower()]
        cells += [f"{row[column]:.6g}" for column in RESULT_COLUMNS[3:]]
        lines.append(",".join(cells))
    write_text_atomically(out / RESULTS_FILE, "\n".join(lines) + "\n")
