"""Every bad input: a non-zero exit, one clear line, no traceback, and nothing in an existing run lost.

Each case runs the real command against a finished run folder and checks, byte for byte and by
modification time, that every file in that folder is exactly as it was.
"""

import gzip
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_FLAGS, assert_one_line_error, make_digits, run_cli, write_dataset, write_idx


@dataclass
class Scene:
    data: Path  # good tiny data
    run: Path  # a finished run trained on it
    workdir: Path

    def bad_data(self, name: str, damage) -> Path:
        """A copy of the good data with one file damaged by `damage(raw_folder)`."""
        root = self.workdir / name
        shutil.copytree(self.data, root)
        damage(root / "MNIST" / "raw")
        return root

    def copy_of_best(self, name: str, change=None) -> Path:
        path = self.workdir / name
        if change is None:
            shutil.copy(self.run / "best.pt", path)
        else:
            checkpoint = torch.load(self.run / "best.pt", weights_only=True)
            change(checkpoint)
            torch.save(checkpoint, path)
        return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory, tiny_template) -> Scene:
    workdir = tmp_path_factory.mktemp("bad-input")
    data, run = (shutil.copytree(source, workdir / source.name) for source in tiny_template)
    return Scene(data=data, run=run, workdir=workdir)


def snapshot(folder: Path) -> dict:
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.iterdir())
    }


@dataclass
class Case:
    name: str
    args: object  # callable(scene) -> list of CLI arguments
    code: int
    fragments: list[str] = field(default_factory=list)


def train_over_run(*extra):
    """`train --out RUN --force`: the most destructive command, so bad input must stop it before it deletes."""
    return lambda scene: ["train", "--data-dir", scene.data, "--out", scene.run, "--force", *TINY_FLAGS, *extra]


def train_on(damage, *extra):
    def args(scene):
        data = scene.bad_data(damage.__name__, damage)
        return ["train", "--data-dir", data, "--out", scene.run, "--force", *TINY_FLAGS, *extra]

    return args


def truncate_gz(raw):
    path = raw / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-300])


def wrong_magic(raw):
    images, _ = make_digits(600, 0)
    write_idx(raw / "train-images-idx3-ubyte.gz", images, (600, 28, 28), magic_type=0x42)


def counts_disagree(raw):
    _, labels = make_digits(599, 0)
    write_idx(raw / "train-labels-idx1-ubyte.gz", labels, (599,))


def wrong_image_size(raw):
    write_idx(raw / "train-images-idx3-ubyte.gz", bytes(600 * 20 * 20), (600, 20, 20))


def missing_file(raw):
    (raw / "t10k-images-idx3-ubyte.gz").unlink()


def no_files(raw):
    shutil.rmtree(raw.parent)


def corrupt_payload(raw):
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-10]))


def evil_pickle(scene):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {scene.workdir / 'payload-ran'}",))

    path = scene.workdir / "evil.pt"
    torch.save({"format": "mnist-ffn checkpoint", "payload": Payload()}, path)
    return ["eval", path, "--data-dir", scene.data]


def eval_of(make_path, *extra):
    return lambda scene: ["eval", make_path(scene), "--data-dir", scene.data, *extra]


def junk_file(scene):
    path = scene.workdir / "junk.pt"
    path.write_text("not a checkpoint at all")
    return path


def truncated_checkpoint(scene):
    path = scene.workdir / "truncated.pt"
    path.write_bytes((scene.run / "best.pt").read_bytes()[:5000])
    return path


def plain_state_dict(scene):
    path = scene.workdir / "state_dict.pt"
    torch.save(torch.load(scene.run / "best.pt", weights_only=True)["model"], path)
    return path


def newer_format(scene):
    return scene.copy_of_best("v99.pt", lambda checkpoint: checkpoint.update(format_version=99))


def other_architecture(scene):
    def widen(checkpoint):
        checkpoint["config"]["model"]["hidden"] = [64]

    return scene.copy_of_best("other-architecture.pt", widen)


def bad_config_in_checkpoint(scene):
    def spoil(checkpoint):
        checkpoint["config"]["model"]["activation"] = "wobbly"

    return scene.copy_of_best("bad-config.pt", spoil)


def other_data_set(scene):
    return scene.copy_of_best("best-copy.pt")


def damaged_checkpoint(name, spoil):
    """A copy of best.pt with one trusted field damaged by `spoil(checkpoint)`."""
    return lambda scene: scene.copy_of_best(f"{name}.pt", spoil)


def damaged_last(name, spoil):
    """`train --resume` of a copy of the run whose last.pt has one resume field damaged."""

    def args(scene):
        run = scene.workdir / name
        shutil.copytree(scene.run, run)
        checkpoint = torch.load(run / "last.pt", weights_only=True)
        spoil(checkpoint)
        torch.save(checkpoint, run / "last.pt")
        return ["train", "--resume", run, "--data-dir", scene.data]

    return args


def out_under_a_file(scene):
    blocker = scene.workdir / "a-file"
    blocker.write_text("not a folder")
    return ["train", "--data-dir", scene.data, "--out", blocker / "run", *TINY_FLAGS]


def val_free_run(scene):
    run = scene.workdir / "no-val"
    if not run.exists():
        flags = ["--set", "data.verify_checksums=false", "--set", "train.val_size=0", "--set", "train.epochs=1"]
        assert run_cli("train", "--data-dir", scene.data, "--out", run, "--quiet", *flags).returncode == 0
    return ["eval", run / "best.pt", "--data-dir", scene.data, "--split", "val", "--json"]


CASES = [
    # data
    Case("no data files", train_on(no_files, "--set", "data.download=false"), 1, ["MNIST not found", "--data-dir"]),
    Case("one file missing", train_on(missing_file), 1, ["lacks t10k-images-idx3-ubyte"]),
    Case("truncated gz", train_on(truncate_gz), 1, ["train-images-idx3-ubyte.gz", "truncated or corrupt gzip"]),
    Case("wrong magic number", train_on(wrong_magic), 1, ["train-images-idx3-ubyte.gz", "wrong magic number"]),
    Case("image/label counts disagree", train_on(counts_disagree), 1, ["holds 600 images but", "599 labels"]),
    Case("wrong image size", train_on(wrong_image_size), 1, ["images are 20x20 pixels, expected 28x28"]),
    Case("truncated payload", train_on(corrupt_payload), 1, ["t10k-labels-idx1-ubyte.gz", "truncated or padded"]),
    Case(
        "checksum mismatch",
        lambda scene: ["train", "--data-dir", scene.data, "--out", scene.run, "--force", "--set", "train.val_size=100"],
        1,
        ["train-images-idx3-ubyte.gz", "does not match the original MNIST file"],
    ),
    Case("val_size leaves no training images", train_over_run("--set", "train.val_size=600"), 1, ["train.val_size"]),
    # config
    Case("unknown key", train_over_run("--set", "optim.lrate=0.1"), 2, ["optim.lrate: unknown key", "did you mean"]),
    Case("wrong type", train_over_run("--set", "train.epochs=three"), 2, ["train.epochs: must be a whole number"]),
    Case("lr <= 0", train_over_run("--set", "optim.lr=0"), 2, ["optim.lr: must be > 0"]),
    Case("batch_size <= 0", train_over_run("--set", "train.batch_size=0"), 2, ["train.batch_size: must be > 0"]),
    Case("val_size >= 60000", train_over_run("--set", "train.val_size=60000"), 2, ["train.val_size: must be"]),
    Case("negative dropout", train_over_run("--set", "model.dropout=-0.1"), 2, ["model.dropout: must be >= 0"]),
    Case("dropout >= 1", train_over_run("--set", "model.dropout=1"), 2, ["model.dropout: must be >= 0 and < 1"]),
    Case("unknown activation", train_over_run("--set", "model.activation=swish2"), 2, ["model.activation", "relu"]),
    Case("unknown schedule", train_over_run("--set", "optim.schedule=zigzag"), 2, ["optim.schedule", "cosine"]),
    Case(
        "all config errors at once",
        train_over_run("--set", "optim.lr=-1", "--set", "model.dropout=2", "--set", "optim.moment=0.9"),
        2,
        ["optim.lr", "model.dropout", "optim.moment: unknown key"],
    ),
    Case(
        "missing config file",
        lambda scene: ["train", "--config", scene.workdir / "nope.toml", "--out", scene.run, "--force"],
        2,
        ["config file not found"],
    ),
    # run folders
    Case(
        "--out is an existing run",
        lambda scene: ["train", "--data-dir", scene.data, "--out", scene.run, *TINY_FLAGS],
        2,
        ["already holds a run", "--resume", "--force"],
    ),
    Case(
        "--resume with --set",
        lambda scene: ["train", "--resume", scene.run, "--set", "train.epochs=9"],
        2,
        ["--resume continues a run with its saved config"],
    ),
    Case(
        "--resume without last.pt",
        lambda scene: ["train", "--resume", scene.workdir, "--data-dir", scene.data],
        2,
        ["no last.pt there"],
    ),
    Case(
        "--resume on other data",
        lambda scene: ["train", "--resume", scene.run, "--data-dir", scene.bad_data("small", small_data)],
        1,
        ["resume with the data the run started with"],
    ),
    # checkpoints
    Case("not a checkpoint", eval_of(junk_file), 1, ["junk.pt: not a checkpoint"]),
    Case("truncated checkpoint", eval_of(truncated_checkpoint), 1, ["truncated.pt: not a checkpoint, or truncated"]),
    Case("pickled code", evil_pickle, 1, ["evil.pt: refused", "never runs"]),
    Case("plain state dict", eval_of(plain_state_dict), 1, ["not an mnist-ffn checkpoint"]),
    Case("newer format", eval_of(newer_format), 1, ["format version 99", "reads version 1"]),
    Case("other architecture", eval_of(other_architecture), 1, ["weights do not fit the architecture"]),
    Case("invalid config inside", eval_of(bad_config_in_checkpoint), 1, ["model.activation", "wobbly"]),
    Case(
        "eval on the wrong data set",
        eval_of(other_data_set, "--dataset", "fashion-mnist"),
        1,
        ["was trained on MNIST, not fashion-mnist"],
    ),
    Case("eval of a missing checkpoint", eval_of(lambda scene: scene.workdir / "nope.pt"), 1, ["no such checkpoint"]),
    # configs that pass the type checks but that training cannot do: refused before --force deletes anything
    Case("infinite warm-up", train_over_run("--set", "optim.warmup_epochs=inf"), 2, ["optim.warmup_epochs", "finite"]),
    Case("NaN learning rate", train_over_run("--set", "optim.lr=nan"), 2, ["optim.lr: must be a finite number"]),
    Case("seed beyond 64 bits", train_over_run("--set", f"train.seed={2**64}"), 2, ["train.seed: must be between"]),
    Case("threads 1e20", train_over_run("--set", "train.threads=1e20"), 2, ["train.threads: must be a whole number"]),
    Case("threads 10**10", train_over_run("--set", "train.threads=10000000000"), 2, ["train.threads: must be between"]),
    Case(
        "a network larger than memory",
        train_over_run("--set", "model.hidden=[1000000000]"),
        2,
        ["model.hidden", "795,000,000,010 parameters", "TiB to train", "of memory"],
    ),
    Case("elastic sigma 1e-9", train_over_run("--set", "augment.elastic_sigma=1e-9"), 2, ["augment.elastic_sigma"]),
    # the operating system says no
    Case("--out under a file", out_under_a_file, 1, ["a-file/run: cannot create the folder", "Not a directory"]),
    Case(
        "--out name too long",
        lambda scene: ["train", "--data-dir", scene.data, "--out", scene.workdir / ("x" * 300), *TINY_FLAGS],
        1,
        ["cannot create the folder", "File name too long"],
    ),
    # damaged checkpoints: every field is checked before it is used
    Case(
        "normalization without std",
        eval_of(damaged_checkpoint("no-std", lambda c: c["normalization"].pop("std"))),
        1,
        ["damaged checkpoint: normalization.std is missing"],
    ),
    Case(
        "config that is not a table",
        eval_of(damaged_checkpoint("config-list", lambda c: c.update(config=[1, 2]))),
        1,
        ["damaged checkpoint: its config is not a table"],
    ),
    Case(
        "classes of the wrong length",
        eval_of(damaged_checkpoint("classes", lambda c: c.update(classes=["a", "b"]))),
        1,
        ["classes is not a list of 10 names"],
    ),
    Case(
        "weights that are not tensors",
        eval_of(damaged_checkpoint("weights", lambda c: c.update(model={"0.weight": "heavy"}))),
        1,
        ["model is not a table of tensors"],
    ),
    Case(
        "resume: progress of the wrong type",
        damaged_last("bad-progress", lambda c: c["progress"].update(epoch="two")),
        1,
        ["progress.epoch is 'two'", "cannot be resumed"],
    ),
    Case(
        "resume: no optimizer state",
        damaged_last("no-optimizer", lambda c: c.pop("optimizer")),
        1,
        ["optimizer is missing", "cannot be resumed"],
    ),
    Case(
        "resume: random state is not a tensor",
        damaged_last("bad-rng", lambda c: c["rng"].update(torch=[1, 2, 3])),
        1,
        ["rng.torch is not a generator state"],
    ),
    # messages that must name the real cause
    Case("eval --split val without a val split", val_free_run, 2, ["--split val", "train.val_size = 0"]),
    Case(
        "eval --dataset bogus",
        eval_of(lambda scene: scene.run / "best.pt", "--dataset", "bogus"),
        2,
        ["'bogus' is not one of 'mnist', 'fashion-mnist'"],
    ),
    Case(
        "compare with an activation twice",
        lambda scene: ["compare", "--activations", "relu,tanh,relu", "--data-dir", scene.data],
        2,
        ["relu listed twice"],
    ),
    Case(
        "compare with identity and none",
        lambda scene: ["compare", "--activations", "identity,none", "--data-dir", scene.data],
        2,
        ["identity and none (the same function) listed twice"],
    ),
]


def small_data(raw):
    shutil.rmtree(raw)
    write_dataset(raw, train=300, test=50)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_line_and_destroys_nothing(scene, case):
    before = snapshot(scene.run)
    result = run_cli(*case.args(scene))
    assert_one_line_error(result, case.code, *case.fragments)
    assert snapshot(scene.run) == before, "the existing run folder changed"
    assert not (scene.workdir / "payload-ran").exists()


# -- bad input with no run folder to protect: one line, the exit code, no traceback ------------------------


OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # a closed port: no network


def test_missing_data_when_offline(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path / "empty", env=OFFLINE)
    assert_one_line_error(
        result,
        1,
        "MNIST not found",
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "--data-dir",
        "MNIST_FFN_DATA",
    )


def test_unknown_activation_exits_2_naming_the_choices(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path, "--set", "model.activation=bogus")
    assert_one_line_error(result, 2, "model.activation", "bogus", "relu", "tanh", "sigmoid", "identity")


def test_unknown_config_key_exits_2_with_a_suggestion(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path, "--set", "optim.lrr=0.1")
    assert_one_line_error(result, 2, "optim.lrr: unknown key", "did you mean optim.lr?")


def test_several_config_problems_are_listed_together(tmp_path):
    result = run_cli("train", "--data-dir", tmp_path, "--set", "optim.lr=0", "--set", "train.batch_size=-3")
    assert_one_line_error(result, 2, "optim.lr: must be > 0", "train.batch_size: must be > 0")


@pytest.mark.parametrize("args", [["train", "--device", "tpu"], ["eval"], ["frobnicate"]])
def test_typer_usage_errors_exit_2_without_traceback(args):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_eval_of_a_missing_checkpoint(tmp_path):
    assert_one_line_error(run_cli("eval", tmp_path / "nope.pt"), 1, "nope.pt: no such checkpoint file")


def test_eval_of_a_file_that_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    assert_one_line_error(run_cli("eval", junk), 1, "junk.pt: not a checkpoint")


def test_a_message_quotes_what_it_was_given_cut_short_however_long_it_was(tmp_path):
    """A megabyte passed as a value, ten thousand unknown keys, a value Click itself refuses: each is one line of
    a readable length that still says what was wrong and where."""
    huge = "x" * 1_000_000
    many_keys = tmp_path / "many.toml"
    many_keys.write_text("[optim]\n" + "".join(f"key{index} = 1\n" for index in range(10_000)))
    cases = [
        (["train", "--set", f"data.dataset={huge}"], 2, ["data.dataset: must be one of", "(1,000,002 characters)"]),
        (["train", "--dataset", huge], 2, ["--dataset", "(1,000,000 characters)"]),
        (["train", "--config", many_keys], 2, ["optim.key0: unknown key", "and 9,990 more problems"]),
        (["train", "--set", f"optim.{huge}=1"], 2, ["unknown key", "(1,000,006 characters)"]),
        (["eval", tmp_path / "x.pt", "--split", huge], 2, ["--split", "(1,000,000 characters)"]),
    ]
    for args, code, fragments in cases:
        result = run_cli(*args)
        assert_one_line_error(result, code, *fragments)
        assert len(result.stderr) < 1_500, (args[:2], len(result.stderr))
    assert not (tmp_path / "runs").exists() and sorted(path.name for path in tmp_path.iterdir()) == ["many.toml"]


def test_numbers_too_long_and_lists_too_deep_are_one_line_wherever_they_are_written(tmp_path):
    """A 5,000-digit number or lists nested a thousand deep, in --set, a config file or a sweep spec (Python refuses
    to read either): one line, exit 2, nothing created."""
    digits, deep = "9" * 5_000, "[" * 1_000 + "]" * 1_000
    config = tmp_path / "big.toml"
    config.write_text(f"[train]\nseed = {digits}\n")
    nested = tmp_path / "deep.toml"
    nested.write_text(f"[model]\nhidden = {deep}\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(f"[space]\ntrain.epochs = [1, {digits}]\n[sweep]\nseeds = [0]\n")
    for args in (["train", "--set", f"train.seed={digits}"], ["train", "--set", f"model.hidden={deep}"],
                 ["train", "--config", config], ["train", "--config", nested], ["sweep", spec, "--out", tmp_path / "s"],
                 ["sweep", "lesson", "--set", f"train.epochs={digits}", "--out", tmp_path / "s"],
                 ["compare", "--set", f"train.seed={digits}"]):  # fmt: skip
        result = run_cli(*args)
        assert_one_line_error(result, 2, "4,300 digits")
        assert len(result.stderr) < 500
    assert sorted(path.name for path in tmp_path.iterdir()) == ["big.toml", "deep.toml", "spec.toml"]
