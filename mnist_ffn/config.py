"""Run configuration: dataclasses with defaults, TOML files, `--set` overrides, validation.

Precedence: the defaults below < a `--config` TOML file < `--set section.key=value`.
Every problem found is reported at once, each naming its key. This module imports
no torch, so the CLI can parse and check a config before paying for that import.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ffn.catalog import DATASETS, FEATURES, MAX_CLASSES, PLANE_SETS, POINTS
from mnist_ffn.errors import ConfigError, PointsError
from mnist_ffn.files import NotARegularFile, open_regular
from mnist_ffn.messages import cut, shown
from mnist_ffn.points_csv import read_csv

ACTIVATIONS = ("identity", "none", "relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softplus")
ACTIVATION_ALIASES = {"none": "identity"}  # another name people use for a function: the one table of them
ACTIVATION_FUNCTIONS = tuple(name for name in ACTIVATIONS if name not in ACTIVATION_ALIASES)


def activation_function(name: str) -> str:
    """The function an activation's name stands for: `none` is identity."""
    return ACTIVATION_ALIASES.get(name, name)


# What `compare` trains by default: no non-linearity, the two classic squashing functions, and ReLU.
LESSON_ACTIVATIONS = ("identity", "sigmoid", "tanh", "relu")
SCHEDULES = ("constant", "step", "cosine")
DATASET_NAMES = (*DATASETS, *PLANE_SETS, POINTS)
PRECISIONS = ("auto", "fp32", "bf16")
ENGINES = ("auto", "backprop", "autograd")
TRAIN_SET_SIZE = 60_000  # both MNIST and Fashion-MNIST ship 60k training and 10k test images
MAX_SEED = 2**63 - 1  # torch seeds are 64-bit, and the augmentation generator takes seed + 1
MAX_THREADS = 4_096  # torch.set_num_threads takes a C int; no CPU has more cores than this
BYTES_PER_PARAMETER = 4 * 5  # float32 weights, gradients, momentum, and the copies a checkpoint save makes


def documented(default, doc: str):
    """A config key: its default and the one line that documents it (the configuration page, `train --help`)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class ModelConfig:
    hidden: list[int] = documented(
        [512, 256], "widths of the hidden layers; `[]` is softmax regression (one linear layer)"
    )
    activation: str = documented(
        "relu", "`identity` (or `none`), `relu`, `leaky_relu`, `elu`, `gelu`, `silu`, `tanh`, `sigmoid`, `softplus`"
    )
    # 0 keeps the default run fast and deterministic
    dropout: float = documented(0.0, "dropout probability after each hidden activation")


@dataclass
class DataConfig:
    dataset: str = documented(
        "mnist", "`mnist`, `fashion-mnist`, or a 2-D set: `circle`, `xor`, `gauss`, `spiral` (`points`: a CSV's)"
    )
    # turn off only for your own IDX files
    verify_checksums: bool = documented(True, "check the SHA-256 of each extracted file against the originals")
    download: bool = documented(True, "let torchvision download the files when none are found")
    points: str = documented("", "2-D: a CSV file of `x1,x2,label` rows (header optional); setting it selects it")
    samples: int = documented(1000, "2-D: how many points a generated set has (train, validation and test)")
    noise: float = documented(0.0, "2-D: the generated sets' noise, 0 to 0.5, as the Playground's 0-50%")
    test_share: float = documented(0.5, "2-D: the share of the points held out as the test set")
    arms: int = documented(2, "2-D: `spiral`'s arms, one class each")
    features: list[str] = documented(
        ["x1", "x2"], "2-D: the network's inputs: `x1`, `x2`, `x1^2`, `x2^2`, `x1*x2`, `sin_x1`, `sin_x2`"
    )


@dataclass
class TrainConfig:
    # 5 epochs with label smoothing 0.1: the best of 16 recipes by validation accuracy (sweeps/tune-default.toml)
    epochs: int = documented(5, "passes over the training images")
    batch_size: int = documented(128, "images per SGD step")
    seed: int = documented(0, "seeds the weights, the shuffling, dropout and augmentation (0 to 2**63 - 1)")
    # the test set is never used to choose anything
    val_size: int = documented(
        5_000, "the last N training images, held out to pick `best.pt` (0: none; `best.pt` is then the last epoch)"
    )
    limit: int = documented(0, "train on the first N training images only (0: all); the smoke-test knob")
    label_smoothing: float = documented(0.1, "cross-entropy label smoothing")
    checkpoint_every: int = documented(0, "also save `last.pt` every N steps (0: at epoch ends only)")
    # no gradients kept, so large batches are cheap; larger ones only add memory on a CPU
    eval_batch_size: int = documented(1_024, "batch size for validation and test evaluation")
    threads: int = documented(0, "CPU threads for torch (0: torch's default, one per physical core)")
    precision: str = documented(
        "auto",
        "the matrix products' precision: `fp32`, `bf16` (float32 accumulation, master weights and loss), or `auto`: "
        "bf16 where a few timed steps of this network run at least 10% faster in it (CPUs with AMX or AVX512-BF16, "
        "recent GPUs), else fp32",
    )
    compile: bool = documented(False, "`torch.compile` the model; pays off only for long runs on a GPU")
    # ||dL/dz|| is what both engines have at hand each step (the hand-written one folds dL/dW into the momentum
    # buffer under plain momentum); the norms cost about 1% of a step
    grad_norms: bool = documented(
        True,
        "record each layer's gradient norm, the norm of dL/dz (the mean over the epoch's steps), and update-to-weight "
        "ratio in metrics.csv (`grad_norm_K`, `update_ratio_K`; not under `train.compile`)",
    )
    # as Lightning does: TensorBoard's files whenever its package is there (CSV always), once per epoch
    tensorboard: bool = documented(
        True,
        "write TensorBoard event files into the run folder, once per epoch (losses, accuracies, learning rate, time, "
        "gradient norms; the config as text; the hyperparameters with the final metrics), when the `tensorboard` "
        "package is installed (the tensorboard extra)",
    )
    engine: str = documented(
        "auto",
        "`backprop` (the lesson's equations, by hand), `autograd` (`loss.backward()` + `torch.optim.SGD`), "
        "or `auto`: backprop unless autograd's step is timed at least 5% faster (and autograd for `train.compile`)",
    )


@dataclass
class OptimConfig:
    # SGD with momentum on normalized MNIST tolerates a large one (0.2 makes a network without activation diverge)
    lr: float = documented(0.1, "peak learning rate of `torch.optim.SGD`")
    momentum: float = documented(0.9, "SGD momentum")
    nesterov: bool = documented(True, "Nesterov momentum")
    weight_decay: float = documented(5e-4, "L2 penalty")
    # TensorFlow Playground's other regularization: it pushes small weights to exactly zero
    l1: float = documented(0.0, "L1 penalty on the weights (not the biases): adds l1 * sign(w) to dL/dw")
    schedule: str = documented("cosine", "`constant`, `step` or `cosine` (to zero at the last step)")
    # helps a large lr and heavy augmentation
    warmup_epochs: float = documented(0.0, "linear warm-up from 0 to `optim.lr` over this many epochs")
    step_every: int = documented(5, "`step` schedule: multiply the learning rate by `optim.step_gamma` every N epochs")
    step_gamma: float = documented(0.1, "`step` schedule factor")


@dataclass
class AugmentConfig:
    """Random distortions of training batches; all zero (off) by default, so plain runs stay fast."""

    rotate: float = documented(0.0, "random rotation of training images, up to this many degrees")
    scale: float = documented(0.0, "random zoom, up to this fraction either way")
    translate: float = documented(0.0, "random shift, up to this many pixels")
    elastic_alpha: float = documented(0.0, "elastic distortion, displacing pixels up to about this many pixels")
    # the field varies over about 2 * sigma pixels
    elastic_sigma: float = documented(4.0, "smoothness of the elastic field, in pixels (at least 0.5)")
    hflip: bool = documented(False, "mirror half the images left-right (for clothing, not digits)")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {f.name: f.default_factory().__class__ for f in dataclasses.fields(Config)}


@functools.cache  # a config is read key by key; evaluating a class's annotations each time costs more than that
def _field_types(section_class: type) -> dict[str, object]:
    return typing.get_type_hints(section_class)


ALL_KEYS = [f"{section}.{name}" for section, cls in SECTIONS.items() for name in _field_types(cls)]


# A 2-D set has a few hundred points, not 60,000 images: what a key left unset means there. Small networks on
# many short epochs, as the Playground trains them, at a third of MNIST's learning rate; a validation split of a
# tenth of the training points. The spiral needs more width and time. Chosen by runs over seeds 0-4 on circle and
# xor (relu and tanh: 97-100% test accuracy) and 0-2 on spiral (relu: 92-99%). One thread: a step of a few hundred
# numbers is over before a second thread has started (3x faster, and the same weights to the bit).
VALIDATION_SHARE = 0.1  # of a 2-D set's training points, held out to pick best.pt

PLANE_DEFAULTS = {
    "model.hidden": [16, 16],
    "train.epochs": 100,
    "train.batch_size": 32,
    "train.val_size": 50,
    "train.eval_batch_size": 4096,
    "optim.lr": 0.03,
    "train.label_smoothing": 0.0,
    "train.threads": 1,
}
DATA_SET_DEFAULTS = {name: PLANE_DEFAULTS for name in (*PLANE_SETS, POINTS)} | {
    "spiral": {**PLANE_DEFAULTS, "model.hidden": [32, 32], "train.epochs": 300},
}


def load_config(config_file: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults < config file < overrides; raises ConfigError listing every problem."""
    merged = Config().to_dict()
    problems: list[str] = []
    given: set[str] = set()
    if config_file is not None:
        values = read_toml(config_file)
        points_relative_to(values, config_file.parent)  # a path in a file is read from that file's folder
        _merge(merged, values, str(config_file), problems)
        given |= _keys_of(values)
    for override in overrides:
        parsed = parse_override(override, problems)
        if parsed is not None:
            points_relative_to(parsed, Path.cwd())  # a path typed on the command line, from where it was typed
            _merge(merged, parsed, "--set", problems)
            given |= _keys_of(parsed)
    return _build(_with_data_set_defaults(merged, given), problems)


def points_relative_to(values: dict, folder: Path) -> None:
    """A relative `data.points` in `values` (a config file's, a spec's or --set's) made absolute from `folder`:
    a run records where its data is, so that it finds it again from any folder it is evaluated, resumed or
    retrained from (the fingerprint in its checkpoints says whether the file is still the one it trained on)."""
    data = values.get("data")
    if isinstance(data, dict) and "points" in data:
        data["points"] = absolute(data["points"], folder)


def absolute(path: object, folder: Path) -> object:
    """A path (or a list of them, as a sweep's space has) made absolute from `folder`; `~` is the home folder.
    Anything else, and the empty path ("no file"), is left for the type checks to judge."""
    if isinstance(path, list):
        return [absolute(item, folder) for item in path]
    if not isinstance(path, str) or not path:
        return path
    return os.path.abspath(os.path.join(folder, os.path.expanduser(path)))


def config_from_dict(values: dict, origin: str = "config") -> Config:
    """Build a Config from a full or partial nested dict (e.g. one stored in a checkpoint, or a sweep's base)."""
    merged = Config().to_dict()
    problems: list[str] = []
    _merge(merged, values, origin, problems)
    return _build(_with_data_set_defaults(merged, _keys_of(values)), problems)


def _keys_of(values: dict) -> set[str]:
    return {f"{section}.{name}" for section, keys in values.items() if isinstance(keys, dict) for name in keys}


def _with_data_set_defaults(merged: dict, given: set[str]) -> dict:
    """`data.points = FILE` alone selects the CSV's points; a 2-D set takes PLANE_DEFAULTS for what was not given."""
    data = merged.get("data", {})
    if data.get("points") and "data.dataset" not in given:
        data["dataset"] = POINTS
    if data.get("dataset") in DATA_SET_DEFAULTS:
        for key, value in DATA_SET_DEFAULTS[data["dataset"]].items():
            section, _, name = key.partition(".")
            if key not in given:
                merged[section][name] = value
    if data.get("dataset") == POINTS and "train.val_size" not in given:
        held_out = validation_of_csv(data.get("points"), data.get("test_share"))
        if held_out is not None:
            merged["train"]["val_size"] = held_out
    return merged


def validation_of_csv(points: object, test_share: object) -> int | None:
    """A CSV's validation split where none was asked for: a tenth of its training points (as the generated sets'
    50 of 500), so that a file of any size trains; None where the file cannot be read yet (reading it for
    training then says why, naming the file and the row)."""
    if not isinstance(points, str) or not points or not isinstance(test_share, float) or not 0 < test_share < 1:
        return None
    try:
        count = len(read_csv(Path(points)).labels)
    except PointsError:
        return None
    training = count - max(1, round(count * test_share))  # as data.load_data holds out the test share
    return max(1, round(training * VALIDATION_SHARE)) if training > 1 else 0


def _build(merged: dict, problems: list[str]) -> Config:
    # Keys with a wrong type kept their default, so range checks still run on everything else.
    config = Config(**{name: SECTIONS[name](**section) for name, section in merged.items()})
    problems = problems + validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def read_toml(path: Path) -> dict:
    try:
        with open_regular(path) as file:
            return tomllib.load(file)
    except (RecursionError, ValueError) as exc:
        if isinstance(exc, tomllib.TOMLDecodeError | UnicodeDecodeError):
            raise ConfigError([f"{path}: not valid TOML ({cut(str(exc), 200)})"]) from None
        raise ConfigError([f"{path}: {TOO_LARGE}"]) from None
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config file is a folder: {path}"]) from None
    except NotARegularFile as exc:
        raise ConfigError([f"{path}: {exc.strerror}, not a config file"]) from None


def parse_override(override: str, problems: list[str]) -> dict | None:
    """`section.key=value` -> {section: {key: value}}; the value is read as TOML, else as a bare string."""
    key, sep, raw_value = override.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        hint = _did_you_mean(key, ALL_KEYS) if key else ""
        problems.append(f"--set {shown(override)}: expected section.key=value, e.g. optim.lr=0.05{hint}")
        return None
    try:
        value = tomllib.loads(f"value = {raw_value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()  # lets `--set model.activation=tanh` work without TOML quotes
    except (RecursionError, ValueError):  # a number Python will not convert, lists nested past the stack
        problems.append(f"--set {cut(key)}: {TOO_LARGE}")
        return None
    section, _, name = key.partition(".")
    return {section: {name: value}}


def _merge(target: dict, source: dict, origin: str, problems: list[str]) -> None:
    for section, values in source.items():
        if section not in SECTIONS:
            problems.append(f"{cut(section)}: unknown section{_did_you_mean(section, list(SECTIONS))} (in {origin})")
            continue
        if not isinstance(values, dict):
            problems.append(f"{cut(section)}: must be a table of keys, got {shown(values)} (in {origin})")
            continue
        types = _field_types(SECTIONS[section])
        for name, value in values.items():
            key = f"{section}.{name}"
            if name not in types:
                problems.append(f"{cut(key)}: unknown key{_did_you_mean(key, ALL_KEYS)} (in {origin})")
                continue
            checked = _check_type(key, value, types[name], problems)
            if checked is not None:
                target[section][name] = checked


TOO_LARGE = "a value mnist-ffn cannot read: a number of more than 4,300 digits, or lists nested hundreds deep"


# Names other tools use for the same knob; difflib cannot guess these from spelling alone.
SYNONYMS = {"learning_rate": "lr", "layers": "hidden", "widths": "hidden", "wd": "weight_decay", "bs": "batch_size"}


def _did_you_mean(word: str, candidates: list[str]) -> str:
    section, _, name = word.rpartition(".")
    if name in SYNONYMS:
        word = f"{section}.{SYNONYMS[name]}" if section else SYNONYMS[name]
    matches = [word] if word in candidates else difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not matches:  # `optim.learning_rate` or a bare `lr`: compare the last part alone
        tails = {candidate.rpartition(".")[2]: candidate for candidate in candidates}
        close = difflib.get_close_matches(word.rpartition(".")[2], list(tails), n=1, cutoff=0.6)
        matches = [tails[close[0]]] if close else []
    return f"; did you mean {matches[0]}?" if matches else ""


def _check_type(key: str, value: object, expected: object, problems: list[str]) -> object | None:
    """Return the value converted to the expected type, or None after recording a problem."""
    if expected is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            problems.append(f"{key}: must be a finite number, got {_show(value)}")
            return None
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (bool, str) and type(value) is expected:
        return value
    if typing.get_origin(expected) is list and typing.get_args(expected) == (str,):
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        problems.append(f'{key}: must be a list of names like ["x1", "x2"], got {_show(value)}')
        return None
    if typing.get_origin(expected) is list:
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        problems.append(f"{key}: must be a list of whole numbers like [512, 256], got {_show(value)}")
        return None
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    problems.append(f"{key}: must be {names[expected]}, got {_show(value)}")
    return None


def _show(value: object) -> str:
    return shown(value)


def validate(config: Config) -> list[str]:
    """Range and choice checks; returns one message per problem, each naming its key."""
    problems: list[str] = []

    def require(ok: bool, key: str, rule: str, value: object) -> None:
        if not ok:
            problems.append(f"{key}: {rule}, got {_show(value)}")

    def choose(key: str, value: str, choices: tuple[str, ...]) -> None:
        require(value in choices, key, f"must be one of {', '.join(choices)}", value)

    model, data, train, optim, augment = config.model, config.data, config.train, config.optim, config.augment
    require(all(width > 0 for width in model.hidden), "model.hidden", "every width must be > 0", model.hidden)
    choose("model.activation", model.activation, ACTIVATIONS)
    require(0.0 <= model.dropout < 1.0, "model.dropout", "must be >= 0 and < 1", model.dropout)
    choose("data.dataset", data.dataset, DATASET_NAMES)
    plane = data.dataset in (*PLANE_SETS, POINTS)
    require(
        (data.dataset == POINTS) == bool(data.points),
        "data.points",
        "selects the CSV's points (data.dataset = points); leave data.dataset unset with it",
        data.points,
    )
    require(20 <= data.samples <= 1_000_000, "data.samples", "must be between 20 and 1,000,000", data.samples)
    require(0.0 <= data.noise <= 0.5, "data.noise", "must be between 0 and 0.5", data.noise)
    require(0.05 <= data.test_share <= 0.9, "data.test_share", "must be between 0.05 and 0.9", data.test_share)
    require(2 <= data.arms <= MAX_CLASSES, "data.arms", f"must be between 2 and {MAX_CLASSES}", data.arms)
    unknown = [name for name in data.features if name not in FEATURES] if isinstance(data.features, list) else []
    require(
        isinstance(data.features, list)
        and data.features
        and not unknown
        and len(set(data.features)) == len(data.features),
        "data.features",
        f"must be a list of distinct names from {', '.join(FEATURES)}",
        data.features,
    )
    if plane:
        for name, enabled in dataclasses.asdict(augment).items():
            require(
                not enabled or name == "elastic_sigma",
                f"augment.{name}",
                "moves pixels of images; a 2-D data set has none",
                enabled,
            )
    require(train.epochs > 0, "train.epochs", "must be > 0", train.epochs)
    require(train.batch_size > 0, "train.batch_size", "must be > 0", train.batch_size)
    require(0 <= train.seed <= MAX_SEED, "train.seed", "must be between 0 and 2**63 - 1", train.seed)
    require(
        0 <= train.val_size < TRAIN_SET_SIZE, "train.val_size", f"must be >= 0 and < {TRAIN_SET_SIZE}", train.val_size
    )
    require(train.limit >= 0, "train.limit", "must be >= 0 (0 means all)", train.limit)
    require(0.0 <= train.label_smoothing < 1.0, "train.label_smoothing", "must be >= 0 and < 1", train.label_smoothing)
    require(train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0", train.checkpoint_every)
    require(train.eval_batch_size > 0, "train.eval_batch_size", "must be > 0", train.eval_batch_size)
    require(
        0 <= train.threads <= MAX_THREADS,
        "train.threads",
        f"must be between 0 (torch's default) and {MAX_THREADS}",
        train.threads,
    )
    choose("train.precision", train.precision, PRECISIONS)
    choose("train.engine", train.engine, ENGINES)
    require(
        train.engine != "backprop" or not train.compile,
        "train.engine",
        "backprop runs without torch.compile; use auto or autograd with compile",
        train.engine,
    )
    require(optim.lr > 0.0 and math.isfinite(optim.lr), "optim.lr", "must be > 0", optim.lr)
    require(0.0 <= optim.momentum < 1.0, "optim.momentum", "must be >= 0 and < 1", optim.momentum)
    require(not optim.nesterov or optim.momentum > 0, "optim.nesterov", "needs optim.momentum > 0", optim.nesterov)
    require(optim.weight_decay >= 0.0, "optim.weight_decay", "must be >= 0", optim.weight_decay)
    require(optim.l1 >= 0.0 and math.isfinite(optim.l1), "optim.l1", "must be >= 0", optim.l1)
    choose("optim.schedule", optim.schedule, SCHEDULES)
    require(optim.warmup_epochs >= 0.0, "optim.warmup_epochs", "must be >= 0", optim.warmup_epochs)
    require(optim.step_every > 0, "optim.step_every", "must be > 0", optim.step_every)
    require(0.0 < optim.step_gamma <= 1.0, "optim.step_gamma", "must be > 0 and <= 1", optim.step_gamma)
    require(0.0 <= augment.rotate <= 180.0, "augment.rotate", "must be between 0 and 180 degrees", augment.rotate)
    require(0.0 <= augment.scale < 1.0, "augment.scale", "must be >= 0 and < 1", augment.scale)
    require(0.0 <= augment.translate <= 14.0, "augment.translate", "must be between 0 and 14 pixels", augment.translate)
    require(augment.elastic_alpha >= 0.0, "augment.elastic_alpha", "must be >= 0", augment.elastic_alpha)
    # The field is drawn on a grid of 28 / (2 sigma) cells: below half a pixel it is noise, and the grid explodes.
    require(augment.elastic_sigma >= 0.5, "augment.elastic_sigma", "must be >= 0.5 pixels", augment.elastic_sigma)
    if all(width > 0 for width in model.hidden):
        problems.extend(_memory_problems(model, train, data))
    return problems


def network_size(data: DataConfig) -> tuple[int, int]:
    """(inputs, classes) of the network a data set asks for, as the config knows it before the data is read: a
    CSV's classes are counted at most (MAX_CLASSES)."""
    if data.dataset in DATASETS:
        info = DATASETS[data.dataset]
        return info.inputs, len(info.classes)
    inputs = len(data.features) if isinstance(data.features, list) else 2
    return inputs, data.arms if data.dataset == "spiral" else MAX_CLASSES if data.dataset == POINTS else 2


def training_bytes(model: ModelConfig, batch_size: int, inputs: int, classes: int) -> tuple[int, int]:
    """(parameters, bytes) a run needs: BYTES_PER_PARAMETER each, plus a batch of activations and their gradients."""
    widths = [inputs, *model.hidden, classes]
    parameters = sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths))
    activations = 4 * 4 * batch_size * sum(widths)  # z, a, dropout mask and gradient per unit, float32
    return parameters, parameters * BYTES_PER_PARAMETER + activations


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not every platform reports it
        return None


def _memory_problems(model: ModelConfig, train: TrainConfig, data: DataConfig) -> list[str]:
    """Refuse a network that cannot fit in this machine's memory before anything is created or deleted."""
    available = physical_memory()
    parameters, needed = training_bytes(model, max(train.batch_size, 0), *network_size(data))
    if available is None or needed <= available:
        return []
    return [
        f"model.hidden: {_show(model.hidden)} with batch {train.batch_size} has {parameters:,} parameters and "
        f"needs about {_bytes(needed)} to train, more than this machine's {_bytes(available)} of memory"
    ]


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def key_docs() -> list[tuple[str, object, str]]:
    """(section.key, default, doc) for every config key, in order: the one source of the README table."""
    defaults = Config().to_dict()
    return [
        (f"{section}.{item.name}", defaults[section][item.name], item.metadata["doc"])
        for section, cls in SECTIONS.items()
        for item in dataclasses.fields(cls)
    ]


def reference_table() -> str:
    """The README's config table, in Markdown."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{name}` | `{toml_value(default)}` | {doc} |" for name, default, doc in key_docs()]
    return "\n".join(rows) + "\n"


def reference_text() -> str:
    """The same keys for `mnist-ffn train --help`."""
    return "\n\n".join(f"{name} = {toml_value(default)}: {doc.replace('`', '')}" for name, default, doc in key_docs())


def same_but_threads(a: Config, b: Config) -> bool:
    """Whether two configs are the same run but for the thread count: a folder trained with 2 threads is still
    this run when resumed or kept with 1 (its numbers after that point depend on the count, so a preset's figures
    name it), as a sweep's workers split the CPU differently from one start to the next."""
    return dataclasses.replace(a, train=dataclasses.replace(a.train, threads=0)) == dataclasses.replace(
        b, train=dataclasses.replace(b.train, threads=0)
    )


def to_toml(config: Config) -> str:
    """The resolved config as TOML that `load_config` reads back to an equal Config."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{name} = {toml_value(value)}" for name, value in values.items())
        lines.append("")
    return "\n".join(lines)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)
