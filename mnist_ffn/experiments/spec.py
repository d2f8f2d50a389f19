"""A sweep spec: the TOML file `mnist-ffn sweep` reads, checked whole before anything runs.

    [base]                      # the run every trial starts from
    config = "default"          # optional: a preset's name, or a TOML file (relative to the spec's folder)
    train.epochs = 5            # any `section.key` that `train --set` takes

    [space]                     # one entry per swept config key
    model.activation = ["identity", "relu"]                  # a list: categorical
    optim.lr = { low = 0.01, high = 0.3, log = true }         # a range: int or float by the key's type

    [sweep]
    sampler = "grid"            # grid (lists only) or tpe
    trials = 20                 # tpe: how many points to try
    seeds = [0, 1, 2]           # every point runs once per seed, so every result has a spread
    objective = "val_acc"       # the held-out validation accuracy; the test set never chooses
    pruner = "median"           # median or none
    run_folder = "trials/{number}-{point}-seed{seed}"   # optional: where each trial's run folder goes

No optuna or torch here: a spec is checked, and every problem reported at once (each naming its
key, exit code 2), before the sweep extra is even needed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mnist_ffn.config import (
    ALL_KEYS,
    MAX_SEED,
    SECTIONS,
    Config,
    absolute,
    config_from_dict,
    load_config,
    parse_override,
    points_relative_to,
    read_toml,
    to_toml,
    toml_value,
)
from mnist_ffn.errors import ConfigError
from mnist_ffn.presets import resolve

SAMPLERS = ("grid", "tpe")
PRUNERS = ("median", "none")
OBJECTIVES = ("val_acc",)
SWEEP_KEYS = {"sampler", "trials", "seeds", "objective", "pruner", "run_folder"}
# {number}: the trial's number (0000, 0001, ...), {point}: "activation=relu,hidden=100x100",
# {values}: "relu-100x100", {seed}: the seed; every trial must get its own folder.
DEFAULT_RUN_FOLDER = "trials/{number}-{point}-seed{seed}"
RANGE_KEYS = {"low", "high", "log"}
MAX_TRIALS = 10_000  # points x seeds in one sweep: days of training at a few seconds each; a typo beyond that
FOLDER_LABEL_CHARACTERS = 80  # a longer label is cut, and a digest of the whole label keeps it apart from others


@dataclass(frozen=True)
class Range:
    low: float
    high: float
    log: bool = False
    integer: bool = False  # int keys (e.g. train.batch_size) draw whole numbers


@dataclass
class SweepSpec:
    path: Path
    base: Config
    space: dict[str, list | Range]  # section.key -> choices, or a range
    sampler: str = "grid"
    trials: int = 0
    seeds: list[int] = field(default_factory=lambda: [0])
    objective: str = "val_acc"
    pruner: str = "median"
    run_folder: str = DEFAULT_RUN_FOLDER
    # a CSV's path -> the fingerprint of its bytes when the sweep began (set by the sweep once it has read them):
    # every trial trains on that file as it was, on every machine, or is refused
    points_digests: dict[str, str] = field(default_factory=dict)

    def trial_folder(self, number: int, point: dict[str, object], seed: int) -> str:
        """The run folder of trial `number` (relative to the sweep folder), from the run_folder template."""
        label = point_label(point)
        values = "-".join(part.partition("=")[2] for part in label.split(","))
        return self.run_folder.format(
            number=f"{number:04d}", point=_folder_safe(label), values=_folder_safe(values), seed=seed
        )

    def trial_count(self) -> int:
        """How many trials the sweep runs: every grid point, or `trials` sampled points, once per seed."""
        if self.sampler == "grid":
            points = math.prod(len(value) for value in self.space.values() if isinstance(value, list))
        else:
            points = self.trials
        return points * len(self.seeds)

    def size_problem(self) -> str | None:
        """Why the sweep is too big to start, before a single trial is queued; None if it is not."""
        count = self.trial_count()
        if count <= MAX_TRIALS:
            return None
        what = "grid points" if self.sampler == "grid" else "trials"
        points = count // len(self.seeds)
        return (
            f"{points:,} {what} x {len(self.seeds)} seeds = {count:,} trials; a sweep runs at most "
            f"{MAX_TRIALS:,}: sweep fewer values, or split it into several sweeps"
        )

    def grid(self) -> list[dict[str, object]]:
        """Every point of a grid space, in a stable order (the spec's key order, each list's order)."""
        keys = list(self.space)
        choices = [self.space[key] for key in keys]
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*choices)]

    def fingerprint(self) -> str:
        """What makes two sweeps the same sweep: the base config, the space and the sweep settings."""
        space = {
            key: value if isinstance(value, list) else [value.low, value.high, value.log, value.integer]
            for key, value in self.space.items()
        }
        settings = [self.sampler, self.trials, self.seeds, self.objective, self.pruner, self.run_folder]
        parts = [to_toml(self.base), space, settings] + ([self.points_digests] if self.points_digests else [])
        text = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def point_config(base: Config, point: dict[str, object], seed: int) -> Config:
    """The config of one trial: the base with the point's values and the seed."""
    values = base.to_dict()
    for key, value in {**point, "train.seed": seed}.items():
        section, _, name = key.partition(".")
        values[section][name] = value
    return config_from_dict(values, origin="the sweep")


def point_label(point: dict[str, object]) -> str:
    """A short name for a point, for folder names and tables: 'activation=relu,hidden=100x100'."""
    parts = []
    for key, value in point.items():
        name = key.rpartition(".")[2]
        if isinstance(value, list):
            shown = "x".join(str(item) for item in value) or "none"
        elif isinstance(value, float):
            shown = repr(value)  # the shortest text that reads back as this value: 0.1 and 0.1001 stay apart
        else:
            shown = str(value)
        parts.append(f"{name}={shown}")
    return ",".join(parts) or "base"


def _folder_safe(label: str) -> str:
    """The label as a folder name; where characters had to be replaced or the label cut, a digest of the whole
    label follows, so that two labels never give one folder."""
    safe = "".join(character if character.isascii() and (character.isalnum() or character in "=.,-x+") else "_"
                   for character in label)  # fmt: skip
    if safe == label and len(safe) <= FOLDER_LABEL_CHARACTERS:
        return safe
    digest = hashlib.sha256(label.encode()).hexdigest()[:10]
    return f"{safe[:FOLDER_LABEL_CHARACTERS]}-{digest}"


def spec_toml(spec: SweepSpec, comment: str) -> str:
    """The spec as a TOML file that `load_spec` reads back to the same spec (the base written out whole)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for section, values in spec.base.to_dict().items():
        lines += ["", f"[base.{section}]"]
        lines += [f"{name} = {toml_value(value)}" for name, value in values.items()]
    lines += ["", "[space]"]
    for key, value in spec.space.items():
        if isinstance(value, Range):
            low, high = (int(end) if value.integer else end for end in (value.low, value.high))
            shown = f"{{ low = {toml_value(low)}, high = {toml_value(high)}, log = {toml_value(value.log)} }}"
        else:
            shown = toml_value(value)
        lines.append(f"{key} = {shown}")
    lines += ["", "[sweep]"]
    settings = {"sampler": spec.sampler, "seeds": spec.seeds, "objective": spec.objective, "pruner": spec.pruner}
    if spec.sampler == "tpe":
        settings["trials"] = spec.trials
    lines += [f"{key} = {toml_value(value)}" for key, value in {**settings, "run_folder": spec.run_folder}.items()]
    return "\n".join(lines) + "\n"


def load_spec(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> SweepSpec:
    """Read and check a spec; raises ConfigError listing every problem, each naming its key.

    `overrides` are `sweep --set` values on top of the file: `sweep.KEY=...` and `space.SECTION.KEY=...`
    go to those tables, any other `SECTION.KEY=...` to [base] (e.g. a tiny budget for a shipped spec).
    """
    problems: list[str] = []
    raw = read_toml(path)
    for override in overrides:
        _apply_override(raw, override, problems)
    for section in raw:
        if section not in ("base", "space", "sweep"):
            problems.append(f"[{section}]: unknown section; a spec has [base], [space] and [sweep]")
    base = _read_base(path, raw.get("base", {}), problems)
    space = _read_space(raw.get("space", {}), base, path.parent, problems)
    spec = SweepSpec(path=path, base=base, space=space)
    _read_settings(raw.get("sweep", {}), spec, problems)
    if spec.sampler == "grid":
        for key, value in space.items():
            if isinstance(value, Range):
                problems.append(f"space.{key}: the grid sampler needs a list of values, not a range")
    if base.train.val_size == 0:
        problems.append("base train.val_size: must be > 0, since trials are judged on validation accuracy")
    if not problems:
        size = spec.size_problem()
        if size:
            problems.append(f"[sweep]: {size}")
        elif spec.sampler == "grid":
            problems.extend(_collisions(spec))
    if problems:
        raise ConfigError([f"{path}: {problem}" for problem in problems])
    return spec


def _collisions(spec: SweepSpec) -> list[str]:
    """Two grid points that would share a label in the table, or two trials one run folder."""
    problems = []
    labels: dict[str, dict] = {}
    folders: dict[str, tuple] = {}
    number = 0
    for point in spec.grid():
        label = point_label(point)
        if label in labels:
            problems.append(f"[space]: {labels[label]} and {point} are both labelled {label!r}")
        labels[label] = point
        for seed in spec.seeds:
            folder = spec.trial_folder(number, point, seed)
            if folder in folders:
                problems.append(
                    f"sweep.run_folder: {folders[folder]} and {(point, seed)} would share the run folder {folder!r}; "
                    "add {number} to the template"
                )
                return problems
            folders[folder] = (point, seed)
            number += 1
    return problems


def _apply_override(raw: dict, override: str, problems: list[str]) -> None:
    parsed = parse_override(override, problems)
    if parsed is None:
        return
    ((section, values),) = parsed.items()
    ((name, value),) = values.items()
    if f"{section}.{name}" in ("data.points", "space.data.points"):  # typed here: read from the current folder
        value = absolute(value, Path.cwd())
    table_name, path = (section, name.split(".")) if section in ("sweep", "space") else ("base", [section, name])
    table = raw.setdefault(table_name, {})
    for part in path[:-1]:
        inner = table.get(part)
        if not isinstance(inner, dict):
            inner = table[part] = {}
        table = inner
    table[path[-1]] = value


def _flatten(table: dict, prefix: str = "") -> dict[str, object]:
    """{"train": {"epochs": 5}} and {"train.epochs": 5} both -> {"train.epochs": 5}; ranges stay tables."""
    flat: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and not (set(value) & {"low", "high"}) and name.count(".") == 0:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _read_base(path: Path, table: object, problems: list[str]) -> Config:
    if not isinstance(table, dict):
        problems.append("[base]: must be a table")
        return Config()
    table = dict(table)
    config_file = table.pop("config", None)
    overrides: dict[str, dict] = {}
    for key, value in _flatten(table).items():
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = value
    points_relative_to(overrides, path.parent)  # as `config =`: a path in the spec is read from its folder
    try:
        if config_file is not None:
            if not isinstance(config_file, str):
                raise ConfigError([f"config: must be a preset's name or a path, got {config_file!r}"])
            base = load_config(resolve(config_file, "preset", option="config", relative_to=path.parent))
            return config_from_dict(_merge(base.to_dict(), overrides), origin="[base]")
        return config_from_dict(overrides, origin="[base]")
    except ConfigError as exc:
        problems.extend(f"base {problem}" for problem in exc.problems)
        return Config()


def _merge(values: dict, overrides: dict) -> dict:
    for section, keys in overrides.items():
        if isinstance(keys, dict) and section in values:
            values[section].update(keys)
        else:
            values[section] = keys  # config_from_dict reports the unknown section
    return values


def _read_space(table: object, base: Config, spec_folder: Path, problems: list[str]) -> dict[str, list | Range]:
    space: dict[str, list | Range] = {}
    if not isinstance(table, dict):
        problems.append("[space]: must be a table")
        return space
    for key, value in _flatten(table).items():
        where = f"space.{key}"
        if key == "data.points":
            value = absolute(value, spec_folder)
            if base.data.dataset != "points":  # the base's other keys took MNIST's defaults, not a CSV's
                problems.append(
                    f"{where}: the base trains on {base.data.dataset}; set [base] data.points to one of these files "
                    "too, so that every trial starts from a CSV's defaults"
                )
                continue
        if key not in ALL_KEYS:
            problems.append(f"{where}: unknown config key")
            continue
        if key == "train.seed":
            problems.append(f"{where}: seeds are set by [sweep] seeds, so every point runs once per seed")
            continue
        section, _, name = key.partition(".")
        kind = typing.get_type_hints(SECTIONS[section])[name]
        if isinstance(value, list):
            if not value:
                problems.append(f"{where}: an empty list; give at least one value")
                continue
            if len({json.dumps(item) for item in value}) < len(value):
                problems.append(f"{where}: a value is listed twice")
            bad = [_value_problem(base, key, item) for item in value]
            problems.extend(f"{where}: {problem}" for problem in bad if problem)
            space[key] = list(value)
        elif isinstance(value, dict):
            found = _read_range(where, value, kind, problems)
            if found is not None:
                for end in (found.low, found.high):
                    problem = _value_problem(base, key, int(end) if found.integer else end)
                    if problem:
                        problems.append(f"{where}: {problem}")
                space[key] = found
        else:
            problems.append(f"{where}: must be a list of values or a range {{ low = ..., high = ... }}")
    if not space:
        problems.append("[space]: no keys to sweep")
    return space


def _read_range(where: str, table: dict, kind: object, problems: list[str]) -> Range | None:
    unknown = set(table) - RANGE_KEYS
    if unknown:
        problems.append(f"{where}: unknown range keys {', '.join(sorted(unknown))}; a range has low, high, log")
        return None
    if kind not in (int, float):
        problems.append(f"{where}: a range needs a number key, this one takes {getattr(kind, '__name__', kind)}")
        return None
    low, high, log = table.get("low"), table.get("high"), table.get("log", False)
    numbers = all(isinstance(end, int | float) and not isinstance(end, bool) for end in (low, high))
    if not numbers or not isinstance(log, bool):
        problems.append(f"{where}: low and high must be numbers and log true or false")
        return None
    if kind is int and not all(isinstance(end, int) for end in (low, high)):
        problems.append(f"{where}: low and high must be whole numbers for this key")
        return None
    if not low < high:
        problems.append(f"{where}: low must be below high, got {low} and {high}")
        return None
    if log and low <= 0:
        problems.append(f"{where}: a log range needs low > 0, got {low}")
        return None
    return Range(low=low, high=high, log=log, integer=kind is int)


def _value_problem(base: Config, key: str, value: object) -> str:
    """'' when `value` is valid for `key` on top of the base config, else the config's own complaint."""
    section, _, name = key.partition(".")
    values = base.to_dict()
    values[section][name] = value
    try:
        config_from_dict(values)
    except ConfigError as exc:
        return "; ".join(problem for problem in exc.problems if key in problem) or "; ".join(exc.problems)
    return ""


def _read_settings(table: object, spec: SweepSpec, problems: list[str]) -> None:
    if not isinstance(table, dict):
        problems.append("[sweep]: must be a table")
        return
    for key in set(table) - SWEEP_KEYS:
        problems.append(f"sweep.{key}: unknown key; [sweep] takes {', '.join(sorted(SWEEP_KEYS))}")
    sampler = table.get("sampler", "grid")
    if sampler not in SAMPLERS:
        problems.append(f"sweep.sampler: must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    else:
        spec.sampler = sampler
    trials = table.get("trials", 0)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 0:
        problems.append(f"sweep.trials: must be a whole number >= 1, got {trials!r}")
    elif spec.sampler == "tpe" and trials == 0:
        problems.append("sweep.trials: the tpe sampler needs a number of trials")
    else:
        spec.trials = trials
    seeds = table.get("seeds", [0])
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED for seed in seeds)
    ):
        problems.append(f"sweep.seeds: must be a list of seeds like [0, 1, 2], got {seeds!r}")
    elif len(set(seeds)) < len(seeds):
        problems.append(f"sweep.seeds: a seed is listed twice in {seeds}")
    else:
        spec.seeds = seeds
    for key, choices in (("objective", OBJECTIVES), ("pruner", PRUNERS)):
        value = table.get(key, getattr(spec, key))
        if value not in choices:
            problems.append(f"sweep.{key}: must be one of {', '.join(choices)}, got {value!r}")
        else:
            setattr(spec, key, value)
    run_folder = table.get("run_folder", DEFAULT_RUN_FOLDER)
    problem = _run_folder_problem(run_folder, len(spec.seeds))
    if problem:
        problems.append(f"sweep.run_folder: {problem}, got {run_folder!r}")
    else:
        spec.run_folder = run_folder


def _run_folder_problem(template: object, seeds: int) -> str | None:
    """Why the template could give two trials one folder, or a folder outside the sweep's; None if it cannot."""
    if not isinstance(template, str):
        return "must be a string"
    try:
        folder = template.format(number="0000", point="p", values="v", seed=0)
    except (KeyError, IndexError, ValueError):
        return "may use only {number}, {point}, {values} and {seed}"
    if not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
        return "must be a folder inside the sweep's folder"
    if "{number}" in template:
        return None
    if "{point}" not in template and "{values}" not in template:
        return "needs {number}, or {point} or {values}, so that each trial gets its own folder"
    if seeds > 1 and "{seed}" not in template:
        return "needs {seed} when there are several seeds"
    return None
