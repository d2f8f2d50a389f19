"""Choosing the engine and the products' precision (mnist_ffn.training.choice): the rule, the timing, the cache, and
the choice a run keeps for life (saved in its checkpoints, reused on resume, said in the start line and summary)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mnist_ffn.config import load_config
from mnist_ffn.training import choice
from mnist_ffn.training.checkpoint import load_checkpoint, save_checkpoint
from mnist_ffn.training.choice import StepChoice, choose_step, pick
from mnist_ffn.training.model import build_model
from mnist_ffn.training.trainer import train
from tests.helpers import finish_process, run_cli, start_forked

CPU = torch.device("cpu")
BIG = "model.hidden=[128]"  # 101,770 parameters: just over choice.SMALL_NETWORK, yet quick to time


def chosen(settings, *, device=CPU, points=False):
    config = load_config(None, settings)
    return choose_step(config, build_model(config.model), device, points=points)


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch, tmp_path):
    """A cache of this test's own: what another test timed is not this one's to find."""
    monkeypatch.setenv("MNIST_FFN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def no_timing(monkeypatch):
    def refuse(*args):
        raise AssertionError("timed, where nothing was left to time")

    monkeypatch.setattr(choice, "time_candidates", refuse)


@pytest.fixture
def bf16_units(monkeypatch):
    """bfloat16 products run on every CPU (emulated where it has no bf16 units): the rule's path, on any CPU."""
    monkeypatch.setattr(choice, "has_bf16_units", lambda device: device.type == "cpu")


def test_nothing_is_timed_where_the_config_or_the_network_leaves_no_choice(no_timing, bf16_units):
    small = chosen(["model.hidden=[16]"])
    assert (small.engine, small.precision) == ("backprop", "fp32") and "parameters" in small.why
    points = chosen([BIG], points=True)
    assert (points.engine, points.precision) == ("backprop", "fp32") and "2-D points" in points.why
    forced = chosen([BIG, "train.precision=bf16"])  # a forced precision keeps the lesson's engine
    assert (forced.engine, forced.precision, forced.why) == ("backprop", "bf16", "train.precision = bf16")
    assert chosen([BIG, "train.engine=autograd", "train.precision=fp32"]).engine == "autograd"
    assert chosen([BIG, "train.compile=true", "train.precision=fp32"]).engine == "autograd"  # compile is autograd's
    compiled = chosen([BIG, "train.compile=true"])  # each candidate compiled would cost more than it saves
    assert (compiled.engine, compiled.precision) == ("autograd", "fp32") and "torch.compile" in compiled.why
    apple = chosen([BIG], device=torch.device("mps"))
    assert (apple.engine, apple.precision) == ("autograd", "fp32")  # no hand-written step, no bf16 units probed


def test_without_bf16_units_only_the_engines_are_timed(monkeypatch):
    monkeypatch.setattr(choice, "has_bf16_units", lambda device: False)
    timed = []

    def fake_times(config, model, device, engines, precisions):
        timed.append((engines, precisions))
        return {(engine, precision): 1.0 for engine in engines for precision in precisions}

    monkeypatch.setattr(choice, "time_candidates", fake_times)
    result = chosen([BIG])
    assert timed == [(["backprop", "autograd"], ["fp32"])]
    assert (result.engine, result.precision) == ("backprop", "fp32")  # a tie keeps the hand-written engine


@pytest.mark.parametrize(
    ("bf16", "autograd", "expected"),
    [
        (0.91, 1.0, ("backprop", "fp32")),  # bf16 9% faster: not worth its rounding
        (0.89, 1.0, ("backprop", "bf16")),
        (1.0, 0.96, ("backprop", "fp32")),  # autograd 4% faster: timing noise
        (1.0, 0.94, ("autograd", "fp32")),
        (0.5, 0.9, ("autograd", "bf16")),  # autograd's bf16 step against the hand-written bf16 one
    ],
)
def test_the_rule_keeps_bf16_and_autograd_only_past_their_margins(bf16, autograd, expected):
    times = {("backprop", "fp32"): 1.0, ("autograd", "fp32"): autograd, ("backprop", "bf16"): bf16}
    times["autograd", "bf16"] = bf16 * autograd
    result = pick(times, ["backprop", "autograd"], ["fp32", "bf16"], batch=100)
    assert (result.engine, result.precision) == expected
    assert result.why.startswith("timed ") and "samples/s" in result.why


def test_a_timed_choice_leaves_the_run_untouched_and_is_cached_per_network_and_batch(bf16_units, monkeypatch):
    config = load_config(None, [BIG, "train.batch_size=32"])
    torch.manual_seed(7)
    model = build_model(config.model)
    weights = [parameter.detach().clone() for parameter in model.parameters()]
    random_state = torch.get_rng_state()
    first = choose_step(config, model, CPU, points=False)  # a real timing of all four candidates
    assert torch.equal(torch.get_rng_state(), random_state), "the run's random stream is not drawn from"
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True)), "nor its weights moved"
    assert first.why.startswith("timed ")
    cache = json.loads((Path(os.environ["MNIST_FFN_CACHE"]) / choice.CACHE_FILE).read_text())
    assert StepChoice.from_dict(cache[choice.cache_key(config, model, CPU)]) == first

    timings = []
    monkeypatch.setattr(choice, "time_candidates", lambda *args: timings.append(args) or {})
    assert choose_step(config, model, CPU, points=False) == first  # from the cache
    assert timings == []
    other_batch = load_config(None, [BIG, "train.batch_size=64"])
    fallback = choose_step(other_batch, model, CPU, points=False)  # timed anew: the fake ran no candidate
    assert len(timings) == 1
    assert (fallback.engine, fallback.precision) == ("backprop", "fp32") and "no candidate ran" in fallback.why
    cache = json.loads((Path(os.environ["MNIST_FFN_CACHE"]) / choice.CACHE_FILE).read_text())
    assert list(cache) == [choice.cache_key(config, model, CPU)], "a choice nothing ran for is not cached"


def test_a_candidate_that_cannot_run_here_is_left_out_and_named(bf16_units, monkeypatch):
    real_build = choice.build_engine

    def build(model, config, device, step):
        if step.engine == "autograd" and step.precision == "bf16":
            raise RuntimeError("no bf16 kernel for this operation")
        return real_build(model, config, device, step)

    monkeypatch.setattr(choice, "build_engine", build)
    result = chosen([BIG, "train.batch_size=32"])  # a real timing of the other three
    assert result.why.startswith("timed ") and result.why.endswith("autograd in bf16 failed to run"), result.why
    assert (result.engine, result.precision) != ("autograd", "bf16")


def test_a_run_holding_the_timing_turn_too_long_is_not_waited_for_forever(bf16_units, monkeypatch):
    import fcntl

    monkeypatch.setattr(choice, "LOCK_WAIT", 0.3)
    monkeypatch.setattr(choice, "time_candidates", times_favouring("backprop", "bf16"))
    folder = Path(os.environ["MNIST_FFN_CACHE"])
    folder.mkdir()
    with open(folder / f"{choice.CACHE_FILE}.lock", "a") as held:  # another run, stuck mid-timing
        fcntl.flock(held, fcntl.LOCK_EX)
        result = chosen([BIG])
    assert (result.engine, result.precision) == ("backprop", "bf16")


@pytest.mark.parametrize("damage", ["garbage", "a list", "a folder where the cache goes"])
def test_a_damaged_or_unwritable_cache_costs_a_timing_not_the_run(damage, bf16_units, monkeypatch, tmp_path):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MNIST_FFN_CACHE", str(folder))
    folder.mkdir()
    cache_file = folder / choice.CACHE_FILE
    if damage == "garbage":
        cache_file.write_bytes(b"\xff{not json")
    elif damage == "a list":
        cache_file.write_text("[1, 2]")
    else:
        cache_file.mkdir()
    fake = {(e, p): 1.0 for e in ("backprop", "autograd") for p in ("fp32", "bf16")}
    monkeypatch.setattr(choice, "time_candidates", lambda *args: fake)
    result = chosen([BIG])
    assert (result.engine, result.precision) == ("backprop", "fp32")
    if damage != "a folder where the cache goes":
        assert list(json.loads(cache_file.read_text()).values()) == [result.as_dict()]  # replaced by a good one
    else:
        assert result.why.endswith(f"; not cached ({folder} is not writable)"), result.why


def test_two_runs_starting_at_once_time_once(tiny_data, tmp_path):
    """The second waits for the first's timing (two timings at once would slow each other's steps) and reuses it."""
    env = {"MNIST_FFN_CACHE": str(tmp_path / "cache")}
    settings = [flag for setting in RUN for flag in ("--set", setting)] + ["--set", "train.epochs=1"]
    runs = [tmp_path / name for name in ("first", "second")]
    processes = [
        start_forked("train", "--data-dir", tiny_data, "--out", run, "--quiet", *settings, env=env) for run in runs
    ]
    for process in processes:
        result = finish_process(process)
        assert result.returncode == 0, result.stderr
    whys = [json.loads((run / "summary.json").read_text())["precision_why"] for run in runs]
    assert whys[0].startswith("timed ")
    assert whys[0] == whys[1], "the same timing, samples/s and all: one process timed, the other read it"


# -- a run keeps its choice ---------------------------------------------------------------------------------------

RUN = ["data.verify_checksums=false", "train.val_size=100", "train.epochs=2", "train.batch_size=50", BIG]


class StopAfterFirstEpoch(Exception):
    pass


def stop_after_first_epoch(row):
    if row["epoch"] == 1:
        raise StopAfterFirstEpoch


def times_favouring(engine, precision):
    def fake(config, model, device, engines, precisions):
        times = {(e, p): 1.0 for e in engines for p in precisions}
        times[engine, precision] = 0.5
        return times

    return fake


def test_a_resumed_run_keeps_its_choice_whatever_the_cache_says_later(tiny_data, tmp_path, bf16_units, monkeypatch):
    """bf16 chosen at the start; the cache then says fp32; the resumed run trains on in bf16 and ends bit for bit
    where the uninterrupted bf16 run ends."""
    monkeypatch.setattr(choice, "time_candidates", times_favouring("backprop", "bf16"))
    quiet = {"data_dir": tiny_data, "log": None, "progress_bars": False}
    whole = train(load_config(None, RUN), out=tmp_path / "whole", **quiet)
    assert (whole["engine"], whole["precision"]) == ("backprop", "bf16")
    assert whole["precision_why"].startswith("timed ")
    with pytest.raises(StopAfterFirstEpoch):
        train(load_config(None, RUN), out=tmp_path / "stopped", on_epoch=stop_after_first_epoch, **quiet)

    (tmp_path / "cache" / choice.CACHE_FILE).unlink()
    monkeypatch.setattr(choice, "time_candidates", times_favouring("autograd", "fp32"))
    assert chosen(RUN).precision == "fp32", "a new run would now train in fp32"
    resumed = train(None, out=tmp_path / "stopped", resume=True, **quiet)
    assert (resumed["engine"], resumed["precision"], resumed["precision_why"]) == (
        "backprop",
        "bf16",
        whole["precision_why"],
    )
    expected, actual = (load_checkpoint(tmp_path / run / "last.pt") for run in ("whole", "stopped"))
    for name, value in expected["model"].items():
        assert torch.equal(value, actual["model"][name]), f"{name}: resume in bf16 is not bit-exact"


def test_a_checkpoint_from_before_saved_choices_resumes_with_the_rule_of_its_time(tiny_data, tmp_path, no_timing):
    quiet = {"data_dir": tiny_data, "log": None, "progress_bars": False}
    old_config = load_config(None, [*RUN, "train.precision=fp32"])  # earlier versions wrote fp32, their only default
    with pytest.raises(StopAfterFirstEpoch):
        train(old_config, out=tmp_path / "old", on_epoch=stop_after_first_epoch, **quiet)
    last = tmp_path / "old" / "last.pt"
    checkpoint = load_checkpoint(last)
    del checkpoint["step"]
    save_checkpoint(last, checkpoint)
    resumed = train(None, out=tmp_path / "old", resume=True, **quiet)
    assert (resumed["engine"], resumed["precision"]) == ("backprop", "fp32")
    assert "predates" in resumed["precision_why"]


def test_a_run_resumed_where_its_choice_cannot_run_says_so_and_changes_it(tiny_data, tmp_path, monkeypatch):
    """bf16 chosen on a CPU with bf16 units; resumed on one without, it trains on in fp32 and says why."""
    monkeypatch.setattr(choice, "has_bf16_units", lambda device: True)
    monkeypatch.setattr(choice, "time_candidates", times_favouring("backprop", "bf16"))
    quiet = {"data_dir": tiny_data, "log": None, "progress_bars": False}
    with pytest.raises(StopAfterFirstEpoch):
        train(load_config(None, RUN), out=tmp_path / "run", on_epoch=stop_after_first_epoch, **quiet)
    monkeypatch.setattr(choice, "has_bf16_units", lambda device: False)
    resumed = train(None, out=tmp_path / "run", resume=True, **quiet)
    assert (resumed["engine"], resumed["precision"]) == ("backprop", "fp32")
    assert "no bfloat16 units" in resumed["precision_why"], resumed["precision_why"]
    forced = choice.resumed_choice(
        StepChoice("backprop", "bf16", "train.precision = bf16").as_dict(),
        load_config(None, [*RUN, "train.precision=bf16"]),
        CPU,
    )
    assert forced.precision == "bf16", "a precision the config names is kept: it was asked for"
    apple = choice.resumed_choice(
        StepChoice("backprop", "fp32", "timed").as_dict(), load_config(None, RUN), torch.device("mps")
    )
    assert apple.engine == "autograd" and "no hand-written step" in apple.why


def test_an_old_bf16_checkpoint_resumes_with_autograd_as_its_versions_trained_it():
    """Before saved choices, bf16 was autograd's alone: `train.precision = "bf16"` with the engine left to auto."""
    config = load_config(None, [*RUN, "train.precision=bf16"])
    old = choice.resumed_choice(None, config, CPU)
    assert (old.engine, old.precision) == ("autograd", "bf16") and "predates" in old.why


def test_the_start_line_says_which_engine_and_precision_train_and_why(tiny_data, tmp_path):
    result = run_cli(
        "train", "--data-dir", tiny_data, "--out", tmp_path / "run", *[f for s in RUN for f in ("--set", s)],
        "--set", "train.precision=bf16", "--set", "train.epochs=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = next(line for line in result.stdout.splitlines() if line.startswith("training "))
    assert first.endswith("; hand-written backprop in bf16 (train.precision = bf16)"), first
