"""Run configuration: dataclasses with defaults, TOML files, `--set` overrides, validation.

Precedence: the defaults below < a `--config` TOML file < `--set section.key=value`.
Every problem found is reported at once, each naming its key. This module imports
no torch, so the CLI can parse and check a config before paying for that import.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ffn.errors import ConfigError

ACTIVATIONS = ("identity", "none", "relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softplus")
SCHEDULES = ("constant", "step", "cosine")
DATASETS = ("mnist", "fashion-mnist")
PRECISIONS = ("fp32", "bf16")
TRAIN_SET_SIZE = 60_000  # both MNIST and Fashion-MNIST ship 60k training and 10k test images


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [512, 256])  # [] is softmax regression
    activation: str = "relu"
    dropout: float = 0.0  # after each hidden activation; 0 keeps the default run fast and deterministic


@dataclass
class DataConfig:
    dataset: str = "mnist"
    verify_checksums: bool = True  # SHA-256 of the extracted files; turn off only for your own IDX files
    download: bool = True  # try torchvision's download when no local files are found


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    seed: int = 0
    val_size: int = 5_000  # the last N training images, held out to pick best.pt; the test set is never used for that
    limit: int = 0  # train on the first N training images only (0: all); the smoke-test knob
    label_smoothing: float = 0.0
    checkpoint_every: int = 0  # also save last.pt every N steps (0: at epoch ends only)
    eval_batch_size: int = 1_024  # no gradients kept, so large batches are cheap; larger ones only add memory on a CPU
    threads: int = 0  # CPU threads for torch (0: torch's default, one per physical core)
    precision: str = "fp32"  # bf16 autocasts matmuls; worth it on GPUs and CPUs with AMX
    compile: bool = False  # torch.compile the model; pays off only for long runs on a GPU


@dataclass
class OptimConfig:
    lr: float = 0.1  # peak learning rate; SGD with momentum on normalized MNIST tolerates a large one
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # constant | step | cosine (to zero at the last step)
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr first; helps large lr and heavy augmentation
    step_every: int = 5  # step schedule: multiply the lr by step_gamma every N epochs
    step_gamma: float = 0.1


@dataclass
class AugmentConfig:
    """Random distortions of training batches; all zero (off) by default, so plain runs stay fast."""

    rotate: float = 0.0  # max rotation in degrees
    scale: float = 0.0  # max relative zoom in or out, e.g. 0.1 for +-10%
    translate: float = 0.0  # max shift in pixels
    elastic_alpha: float = 0.0  # elastic distortion: the largest displacement, in pixels (about 2 is gentle)
    elastic_sigma: float = 4.0  # smoothness: the displacement field varies over about 2 * sigma pixels
    hflip: bool = False  # mirror left-right; right for clothing, wrong for digits


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


def _field_types(section_class: type) -> dict[str, object]:
    return typing.get_type_hints(section_class)


ALL_KEYS = [f"{section}.{name}" for section, cls in SECTIONS.items() for name in _field_types(cls)]


def load_config(config_file: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults < config file < overrides; raises ConfigError listing every problem."""
    merged = Config().to_dict()
    problems: list[str] = []
    if config_file is not None:
        _merge(merged, read_toml(config_file), str(config_file), problems)
    for override in overrides:
        parsed = parse_override(override, problems)
        if parsed is not None:
            _merge(merged, parsed, "--set", problems)
    return _build(merged, problems)


def config_from_dict(values: dict, origin: str = "config") -> Config:
    """Build a Config from a full or partial nested dict (e.g. one stored in a checkpoint)."""
    merged = Config().to_dict()
    problems: list[str] = []
    _merge(merged, values, origin, problems)
    return _build(merged, problems)


def _build(merged: dict, problems: list[str]) -> Config:
    # Keys with a wrong type kept their default, so range checks still run on everything else.
    config = Config(**{name: SECTIONS[name](**section) for name, section in merged.items()})
    problems = problems + validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config file is a folder: {path}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None


def parse_override(override: str, problems: list[str]) -> dict | None:
    """`section.key=value` -> {section: {key: value}}; the value is read as TOML, else as a bare string."""
    key, sep, raw_value = override.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        hint = _did_you_mean(key, ALL_KEYS) if key else ""
        problems.append(f"--set {override!r}: expected section.key=value, e.g. optim.lr=0.05{hint}")
        return None
    try:
        value = tomllib.loads(f"value = {raw_value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()  # lets `--set model.activation=tanh` work without TOML quotes
    section, _, name = key.partition(".")
    return {section: {name: value}}


def _merge(target: dict, source: dict, origin: str, problems: list[str]) -> None:
    for section, values in source.items():
        if section not in SECTIONS:
            problems.append(f"{section}: unknown section{_did_you_mean(section, list(SECTIONS))} (in {origin})")
            continue
        if not isinstance(values, dict):
            problems.append(f"{section}: must be a table of keys, got {values!r} (in {origin})")
            continue
        types = _field_types(SECTIONS[section])
        for name, value in values.items():
            key = f"{section}.{name}"
            if name not in types:
                problems.append(f"{key}: unknown key{_did_you_mean(key, ALL_KEYS)} (in {origin})")
                continue
            checked = _check_type(key, value, types[name], problems)
            if checked is not None:
                target[section][name] = checked


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
        return float(value)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if expected in (bool, str) and type(value) is expected:
        return value
    if typing.get_origin(expected) is list:
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        problems.append(f"{key}: must be a list of whole numbers like [512, 256], got {_show(value)}")
        return None
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    problems.append(f"{key}: must be {names[expected]}, got {_show(value)}")
    return None


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


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
    choose("data.dataset", data.dataset, DATASETS)
    require(train.epochs > 0, "train.epochs", "must be > 0", train.epochs)
    require(train.batch_size > 0, "train.batch_size", "must be > 0", train.batch_size)
    require(train.seed >= 0, "train.seed", "must be >= 0", train.seed)
    require(
        0 <= train.val_size < TRAIN_SET_SIZE, "train.val_size", f"must be >= 0 and < {TRAIN_SET_SIZE}", train.val_size
    )
    require(train.limit >= 0, "train.limit", "must be >= 0 (0 means all)", train.limit)
    require(0.0 <= train.label_smoothing < 1.0, "train.label_smoothing", "must be >= 0 and < 1", train.label_smoothing)
    require(train.checkpoint_every >= 0, "train.checkpoint_every", "must be >= 0", train.checkpoint_every)
    require(train.eval_batch_size > 0, "train.eval_batch_size", "must be > 0", train.eval_batch_size)
    require(train.threads >= 0, "train.threads", "must be >= 0 (0 means torch's default)", train.threads)
    choose("train.precision", train.precision, PRECISIONS)
    require(optim.lr > 0.0 and math.isfinite(optim.lr), "optim.lr", "must be > 0", optim.lr)
    require(0.0 <= optim.momentum < 1.0, "optim.momentum", "must be >= 0 and < 1", optim.momentum)
    require(not optim.nesterov or optim.momentum > 0, "optim.nesterov", "needs optim.momentum > 0", optim.nesterov)
    require(optim.weight_decay >= 0.0, "optim.weight_decay", "must be >= 0", optim.weight_decay)
    choose("optim.schedule", optim.schedule, SCHEDULES)
    require(optim.warmup_epochs >= 0.0, "optim.warmup_epochs", "must be >= 0", optim.warmup_epochs)
    require(optim.step_every > 0, "optim.step_every", "must be > 0", optim.step_every)
    require(0.0 < optim.step_gamma <= 1.0, "optim.step_gamma", "must be > 0 and <= 1", optim.step_gamma)
    require(0.0 <= augment.rotate <= 180.0, "augment.rotate", "must be between 0 and 180 degrees", augment.rotate)
    require(0.0 <= augment.scale < 1.0, "augment.scale", "must be >= 0 and < 1", augment.scale)
    require(0.0 <= augment.translate <= 14.0, "augment.translate", "must be between 0 and 14 pixels", augment.translate)
    require(augment.elastic_alpha >= 0.0, "augment.elastic_alpha", "must be >= 0", augment.elastic_alpha)
    require(augment.elastic_sigma > 0.0, "augment.elastic_sigma", "must be > 0", augment.elastic_sigma)
    return problems


def to_toml(config: Config) -> str:
    """The resolved config as TOML that `load_config` reads back to an equal Config."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines.extend(f"{name} = {_toml_value(value)}" for name, value in values.items())
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)
