"""TensorBoard event files: read back with TensorBoard's own readers (EventAccumulator, EventMultiplexer) for a
run, a compare folder and a sweep; each epoch once after kill -9 and resume; a run whose event files were deleted
resumes; off by config or without the package, nothing is written.

Without the tensorboard package (the tensorboard extra) these skip, except under CI=true, where they fail.
"""

import csv
import functools
import json
import math
import shutil

import pytest

from mnist_ffn.training import event_log
from tests.helpers import finish_process, require_modules, run_cli, start_forked, write_dataset
from tests.sweeps import write_spec
from tests.test_resilience import stop_itself_at, wait_until_stopped

TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train", "val_acc": "accuracy/val"}
TAGS |= {
    "lr": "learning_rate",
    "grad_norm_1": "gradient/norm_layer_1",
    "update_ratio_2": "gradient/update_ratio_layer_2",
}


@pytest.fixture(autouse=True)
def _needs_tensorboard():
    require_modules("tensorboard", install="pip install -e '.[tensorboard]'")


def accumulator(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})  # 0: keep every event
    events.Reload()
    return events


def metrics(folder) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def assert_events_are_the_metrics(folder) -> None:
    """Every epoch of metrics.csv once in the event files, with its numbers (float32 there; six digits in the CSV)."""
    events, rows = accumulator(folder), metrics(folder)
    for key, tag in TAGS.items():
        logged = [(event.step, event.value) for event in events.Scalars(tag)]
        assert [step for step, _ in logged] == [int(row["epoch"]) for row in rows], (tag, logged)
        for (_, value), row in zip(logged, rows, strict=True):
            assert math.isclose(value, float(row[key]), rel_tol=1e-5, abs_tol=1e-12), (tag, value, row[key])


def test_a_runs_events_hold_metrics_csv_its_config_and_its_hyperparameters_with_final_metrics(tmp_path):
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    result = run_cli("train", "--set", "data.dataset=circle", "--set", "train.epochs=6", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert_events_are_the_metrics(out)
    events = accumulator(out)
    assert len(events.Scalars("time/epoch_seconds")) == 6
    (text,) = events.Tensors("config/text_summary")
    config_toml = (out / "config.toml").read_text().split("\n", 1)[1]  # without its run-identity line
    assert text.tensor_proto.string_val[0].decode() == "```toml\n" + config_toml + "```"
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.activation"].string_value == "relu" and hparams["train.epochs"].number_value == 6
    assert hparams["data.dataset"].string_value == "circle" and hparams["model.hidden"].string_value == "[16, 16]"
    summary = json.loads((out / "summary.json").read_text())
    (accuracy,) = events.Scalars("hparam/test_accuracy")
    assert math.isclose(accuracy.value, summary["test_accuracy"], rel_tol=1e-6) and accuracy.step == 6


def test_off_by_config_or_without_the_package_no_event_file_is_written(tmp_path, monkeypatch):
    off = tmp_path / "off"
    flags = ["--set", "data.dataset=xor", "--set", "train.epochs=2", "--quiet"]
    assert run_cli("train", *flags, "--set", "train.tensorboard=false", "--out", off).returncode == 0
    assert not list(off.glob("events.*"))
    monkeypatch.setattr(event_log, "tensorboard_installed", lambda: False)  # as without the tensorboard extra
    missing = tmp_path / "missing"
    assert run_cli("train", *flags, "--out", missing).returncode == 0
    assert not list(missing.glob("events.*")) and (missing / "summary.json").is_file()


@pytest.fixture(scope="module")
def kill_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-data")
    write_dataset(root / "MNIST" / "raw", train=1200, test=200)
    return root


KILL_FLAGS = [
    "--set",
    "data.verify_checksums=false",
    "--set",
    "train.val_size=200",
    "--set",
    "train.batch_size=32",
    "--set",
    "train.epochs=4",
]
KILL_FLAGS += ["--set", "train.checkpoint_every=7", "--set", "model.hidden=[64]", "--set", "train.engine=backprop"]


def test_kill_9_then_resume_leaves_every_epoch_once_with_metrics_csvs_numbers(kill_data, tmp_path):
    """32 steps an epoch: killed at step 75 (in epoch 3, after a mid-epoch checkpoint), then in the resumed process
    at its 2nd fsync (inside a save); each resume purges what was logged and writes the rows its last.pt holds."""
    out = tmp_path / "run"
    command = ["train", "--data-dir", kill_data, "--out", out, "--quiet", *KILL_FLAGS]
    for moment, count in (("step", 75), ("fsync", 2)):
        process = start_forked(*command, preexec_fn=functools.partial(stop_itself_at, moment, count))
        assert wait_until_stopped(process), f"the run ended before its {count}th {moment}"
        process.kill()
        process.communicate()
        command = ["train", "--resume", out, "--data-dir", kill_data, "--quiet"]
    assert finish_process(start_forked(*command)).returncode == 0
    # the first process's and the last one's: the second died inside its first save, before an epoch's end, and a
    # process makes its file at its first epoch's end
    assert len(list(out.glob("events.out.tfevents.*"))) == 2
    assert_events_are_the_metrics(out)
    assert len(accumulator(out).Tensors("config/text_summary")) == 1


def test_a_run_whose_event_files_were_deleted_resumes_and_logs_every_epoch_again(kill_data, tmp_path):
    out = tmp_path / "run"
    command = ["train", "--data-dir", kill_data, "--out", out, "--quiet", *KILL_FLAGS]
    process = start_forked(*command, preexec_fn=functools.partial(stop_itself_at, "step", 80))
    assert wait_until_stopped(process)
    process.kill()
    process.communicate()
    for path in out.glob("events.out.tfevents.*"):
        path.unlink()
    resumed = finish_process(start_forked("train", "--resume", out, "--data-dir", kill_data, "--quiet"))
    assert resumed.returncode == 0, resumed.stderr
    assert_events_are_the_metrics(out)


def test_force_replaces_an_old_runs_curves_instead_of_mixing_them(tmp_path):
    out = tmp_path / "run"
    assert (
        run_cli("train", "--set", "data.dataset=circle", "--set", "train.epochs=5", "--out", out, "-q").returncode == 0
    )
    again = run_cli("train", "--set", "data.dataset=xor", "--set", "train.epochs=2", "--out", out, "--force", "-q")
    assert again.returncode == 0, again.stderr
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert_events_are_the_metrics(out)  # two epochs of xor, not five of circle


def multiplexer(folder):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer(size_guidance={"scalars": 0}).AddRunsFromDirectory(str(folder))
    runs.Reload()
    return runs


def test_logdir_on_a_compare_folder_shows_one_run_per_activation(tmp_path):
    out = tmp_path / "compare"
    result = run_cli("compare", "--dataset", "circle", "--out", out, "--set", "train.epochs=3")
    assert result.returncode == 0, result.stderr
    runs = multiplexer(out)
    assert sorted(runs.Runs()) == ["identity", "relu", "sigmoid", "tanh"]
    for activation in runs.Runs():
        assert [event.step for event in runs.Scalars(activation, "loss/val")] == [1, 2, 3]
        assert_events_are_the_metrics(out / activation)


def test_logdir_on_a_sweep_folder_shows_one_run_per_trial(tiny_template, tmp_path):
    require_modules("optuna", install="pip install -e '.[sweep]'")
    data = shutil.copytree(tiny_template[0], tmp_path / "data")
    spec = write_spec(tmp_path, '[space]\nmodel.activation = ["relu", "tanh"]\n[sweep]\nseeds = [0]\npruner = "none"\n')
    out = tmp_path / "sweep"
    result = run_cli("sweep", spec, "--out", out, "--data-dir", data, "--quiet")
    assert result.returncode == 0, result.stderr
    runs = multiplexer(out)
    assert len(runs.Runs()) == 2 and all(run.startswith("trials") for run in runs.Runs())
    for run in runs.Runs():
        assert [event.step for event in runs.Scalars(run, "loss/train")] == [1, 2]
        assert runs.Scalars(run, "hparam/test_accuracy")


def test_an_event_file_that_cannot_be_written_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    import errno

    from tensorboard.summary.writer.record_writer import RecordWriter

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RecordWriter, "write", full_disk)
    out = tmp_path / "run"
    result = run_cli("train", "--set", "data.dataset=circle", "--set", "train.epochs=4", "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write TensorBoard's event file" in lines[0] and "No space left" in lines[0]
    assert (out / "summary.json").is_file() and len(metrics(out)) == 4
