"""optuna-dashboard on a finished sweep's journal file: started on loopback as the docs say, its HTTP API gives the
study, each trial's parameters, value and state, and the user attribute that names the trial's run folder.

Without optuna-dashboard (the dashboard extra) this skips, except under CI=true, where it fails.
"""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.browser import DIRECT
from tests.helpers import free_port, require_modules, run_cli
from tests.sweeps import trials_of, write_spec

SPACE = """
[space]
model.activation = ["relu", "tanh"]
optim.lr = { low = 0.01, high = 0.2, log = true }

[sweep]
sampler = "tpe"
trials = 3
seeds = [0]
pruner = "none"
"""


def dashboard_command() -> Path:
    """The `optuna-dashboard` command installed beside this Python (the extra's console script)."""
    command = Path(sys.executable).parent / "optuna-dashboard"
    if not command.exists():
        found = shutil.which("optuna-dashboard")
        assert found, "optuna-dashboard is installed but its command is not on PATH"
        command = Path(found)
    return command


def get(url: str) -> dict:
    with DIRECT.open(url, timeout=10) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_optuna_dashboard_reads_a_finished_sweeps_journal_trials_params_values_and_run_folders(tiny_template, tmp_path):
    require_modules("optuna", "optuna_dashboard", install="pip install -e '.[sweep,dashboard]'")
    data = shutil.copytree(tiny_template[0], tmp_path / "data")
    spec = write_spec(tmp_path, SPACE)
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", data, "--quiet")
    assert result.returncode == 0, result.stderr
    study_name = json.loads((out / "sweep.json").read_text())["study"]
    trials = {trial.number: trial for trial in trials_of(out)}
    assert len(trials) == 3

    port = free_port()
    server = subprocess.Popen(
        [str(dashboard_command()), str(out / "journal.log"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                studies = get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.2)
        (study,) = studies
        assert study["study_name"] == study_name
        detail = get(f"{base}/api/studies/{study['study_id']}")
        assert len(detail["trials"]) == 3
        for shown in detail["trials"]:
            trial = trials[shown["number"]]
            assert shown["state"] == "Complete" and shown["values"] == [trial.value]
            params = {param["name"]: param["param_external_value"] for param in shown["params"]}
            assert params == {name: str(value) for name, value in trial.params.items()}
            assert set(params) == {"model.activation", "optim.lr"}
            attrs = {attr["key"]: attr["value"] for attr in shown["user_attrs"]}
            run_folder = Path(attrs["run_folder"])
            folder = run_folder if run_folder.is_absolute() else out / run_folder
            assert (folder / "best.pt").is_file() and (folder / "metrics.csv").is_file(), attrs
        assert detail["best_trials"][0]["values"] == [max(trial.value for trial in trials.values())]
    finally:
        server.terminate()
        server.wait(timeout=30)
