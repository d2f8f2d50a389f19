"""`mnist-ffn playground`'s sessions: TensorFlow Playground's lesson, trained by the CLI's own Trainer.

A page's setting (data set, features, layers, activation, learning rate, ...) becomes an ordinary
Config; a Session trains it with `training.trainer.Trainer`, the object `mnist-ffn train` runs, in a
run folder of its own, epoch by epoch as the page asks. After each slice of training the page gets a
Frame: the boundary over the plane, every hidden neuron's a = f(z) over the plane, the weights, and the
train and test loss and accuracy.

No web code here (web.playground_server serves it), so the tests drive a session directly.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from mnist_ffn.catalog import FEATURES, PLANE_SETS, POINTS
from mnist_ffn.config import ACTIVATION_FUNCTIONS, VALIDATION_SHARE, Config, config_from_dict
from mnist_ffn.data.plane import features, plane_grid
from mnist_ffn.errors import ConfigError, PointsError, TrainingDiverged, UsageError
from mnist_ffn.files import write_atomically
from mnist_ffn.messages import cut
from mnist_ffn.points_csv import TooManyPoints, parse_csv, read_csv
from mnist_ffn.quoting import command_line
from mnist_ffn.training.checkpoint import load_checkpoint, save_checkpoint
from mnist_ffn.training.devices import GLOBAL_RANDOM
from mnist_ffn.training.metrics import evaluate
from mnist_ffn.training.model import forward_with_activations, linear_layers
from mnist_ffn.training.run_folder import RunFolder, gradient_layers
from mnist_ffn.training.trace import ABSOLUTE, RELATIVE, STEP, Trace, finite_differences, trace
from mnist_ffn.training.trainer import Trainer

# What the page offers, each control's range: out of it, the page and the server refuse the setting.
# Wider and deeper than the Playground's 6 layers of 8, still small enough to draw every neuron.
MAX_LAYERS = 8
MAX_WIDTH = 64
MAX_EPOCHS = 10_000  # a session stops there; the Playground runs on, but by then nothing moves
LIMITS = {
    "noise": (0.0, 0.5),
    "test_share": (0.1, 0.9),
    "samples": (50, 5_000),
    "arms": (2, 8),
    "lr": (1e-5, 10.0),
    "batch": (1, 1_000),
    "momentum": (0.0, 0.99),
    "l1": (0.0, 1.0),
    "l2": (0.0, 1.0),
    "dropout": (0.0, 0.9),
    "seed": (0, 2**31 - 1),
}
INTEGERS = {"samples", "arms", "batch", "seed"}
DATA_SETS = (*PLANE_SETS, POINTS)
PAGE_ACTIVATIONS = ACTIVATION_FUNCTIONS  # one name for each function: identity, not also none
TRAIN_SLICE_SECONDS = 0.04  # training between two pictures while playing: what keeps 10+ redraws a second
BOUNDARY_CELLS = 64  # the boundary's grid along each axis (the page smooths it when it draws)
NEURON_CELLS = 24  # each neuron's map
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_POINTS = 5_000  # a CSV's too: every point is drawn on every picture
MIN_POINTS = 20
MAX_UPLOADS = 64  # uploaded CSVs kept at once (5 MB each at most)
UPLOAD_IDLE_SECONDS = 30 * 60  # as long as an idle tab's session is kept
MAX_STEPS_PER_EPOCH = 1_000  # a picture waits for an epoch: more steps than this and play stops being live
POINTS_FILE = "points.csv"  # a saved run's copy of the CSV it trained on
SHOWN_WIDTH = 16  # a chain rule's matrices: the first 16 rows and columns are sent, with the whole one's summary


@dataclass(frozen=True)
class Setting:
    """Everything the page's controls hold; the page's URL is this, as `key=value` pairs."""

    dataset: str = "circle"
    noise: float = 0.0
    test_share: float = 0.5
    samples: int = 500  # the Playground's
    arms: int = 2
    features: tuple[str, ...] = ("x1", "x2")
    hidden: tuple[int, ...] = (4, 2)  # the Playground's first network
    activation: str = "tanh"
    lr: float = 0.03
    batch: int = 10
    momentum: float = 0.0  # plain SGD, W <- W - lr dL/dW, as the lesson and the Playground
    l1: float = 0.0
    l2: float = 0.0
    dropout: float = 0.0
    seed: int = 0
    upload: str = ""  # an uploaded CSV's token, for dataset = points

    @classmethod
    def parse(cls, values: dict) -> Setting:
        """A setting from the page's `key=value` strings (or JSON values); one ConfigError listing every problem."""
        problems: list[str] = []
        fields = {field.name: field for field in dataclasses.fields(cls)}
        parsed: dict[str, object] = {}
        for key, raw in values.items():
            if key not in fields:
                problems.append(f"{cut(str(key))}: not a control of the playground")
                continue
            text = ",".join(str(item) for item in raw) if isinstance(raw, list | tuple) else str(raw).strip()
            try:
                parsed[key] = _parse_value(key, text)
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
        if problems:
            raise ConfigError(problems)
        setting = cls(**parsed)
        problems = setting.problems()
        if problems:
            raise ConfigError(problems)
        return setting

    def problems(self) -> list[str]:
        found = []
        if self.dataset not in DATA_SETS:
            found.append(f"dataset: must be one of {', '.join(DATA_SETS)}, got {cut(repr(self.dataset))}")
        if self.dataset == POINTS and not self.upload:
            found.append("dataset: points needs a CSV: upload one (a link cannot carry your file)")
        for key, (low, high) in LIMITS.items():
            value = getattr(self, key)
            if not (low <= value <= high):
                found.append(f"{key}: must be between {low:g} and {high:g}, got {value:g}")
        if not self.features or any(name not in FEATURES for name in self.features):
            found.append(f"features: choose one or more of {', '.join(FEATURES)}")
        elif len(set(self.features)) != len(self.features):
            found.append("features: each feature once")
        if len(self.hidden) > MAX_LAYERS:
            found.append(f"hidden: at most {MAX_LAYERS} layers, got {len(self.hidden)}")
        if any(not (1 <= width <= MAX_WIDTH) for width in self.hidden):
            found.append(f"hidden: every layer needs 1 to {MAX_WIDTH} neurons, got {', '.join(map(str, self.hidden))}")
        steps = math.ceil(self.samples * (1 - self.test_share) * (1 - VALIDATION_SHARE) / max(self.batch, 1))
        if self.dataset != POINTS and steps > MAX_STEPS_PER_EPOCH:  # a CSV's count is known once it is read
            found.append(_too_many_steps(steps))
        if self.activation not in PAGE_ACTIVATIONS:
            found.append(f"activation: must be one of {', '.join(PAGE_ACTIVATIONS)}, got {cut(repr(self.activation))}")
        return found

    def config(self, points_file: Path | None = None, points: int | None = None) -> Config:
        """The Config `mnist-ffn train` would run for this setting (data.points: the uploaded CSV's file, which
        holds `points` points)."""
        data = {"noise": self.noise, "test_share": self.test_share, "features": list(self.features)}
        if self.dataset == POINTS:
            data["points"] = str(points_file)
        else:
            data |= {"dataset": self.dataset, "samples": self.samples, "arms": self.arms}
        train_points = (points if points is not None else self.samples) * (1 - self.test_share)
        values = {
            "model": {"hidden": list(self.hidden), "activation": self.activation, "dropout": self.dropout},
            "data": data,
            "train": {
                "epochs": MAX_EPOCHS,
                "batch_size": self.batch,
                "seed": self.seed,
                "val_size": max(1, round(train_points * VALIDATION_SHARE)),
                "threads": 1,  # many small steps: one thread is the fastest, and every tab gets the same numbers
            },
            "optim": {
                "lr": self.lr,
                "momentum": self.momentum,
                "nesterov": False,
                "weight_decay": self.l2,
                "l1": self.l1,
                "schedule": "constant",  # the Playground's: a run of N epochs is the first N of a longer one
            },
        }
        return config_from_dict(values, "the playground's setting")


def _too_many_steps(steps: int) -> str:
    return (
        f"batch: {steps:,} steps an epoch is too many to watch live (at most {MAX_STEPS_PER_EPOCH:,}): "
        "raise the batch size or lower the points"
    )


def _parse_value(key: str, text: str) -> object:
    if key in ("dataset", "activation", "upload"):
        return text
    if key == "features":
        return tuple(name.strip() for name in text.split(",") if name.strip())
    if key == "hidden":
        if not text:
            return ()
        widths = [width.strip() for width in text.split(",")]
        if not all(re.fullmatch(r"[0-9]{1,4}", width) for width in widths):
            raise ValueError(f"widths separated by commas, e.g. 4,2; got {cut(repr(text))}")
        return tuple(int(width) for width in widths)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"must be a number, got {cut(repr(text))}") from None
    if not math.isfinite(value):
        raise ValueError(f"must be a number, got {cut(repr(text))}")
    if key in INTEGERS:
        if value != int(value):
            raise ValueError(f"must be a whole number, got {cut(repr(text))}")
        return int(value)
    return value


class Uploads:
    """CSV files the page uploaded, kept under their digest in a folder beside the saved runs while a tab trains on
    them: one that no tab has used for UPLOAD_IDLE_SECONDS is removed, and at most MAX_UPLOADS are kept (the least
    recently used go first). A saved run keeps a copy of its own (Session.save)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def add(self, name: str, content: bytes, in_use: set[str] = frozenset()) -> tuple[str, int, tuple[str, ...]]:
        """Check and keep an uploaded CSV; returns (its token, its point count, its classes). PointsError names
        the uploaded file's own name and the row. `in_use`: the tokens tabs train on now, never removed."""
        shown = _safe_name(name)
        if len(content) > MAX_UPLOAD_BYTES:
            raise PointsError(f"{shown}: larger than {MAX_UPLOAD_BYTES // 2**20} MB; the playground reads up to that")
        token = hashlib.sha256(content).hexdigest()[:16]
        try:
            points = parse_csv(content, shown, max_rows=MAX_POINTS)  # stops reading at the first point too many
        except TooManyPoints:
            raise PointsError(_point_count_problem(shown, f"more than {MAX_POINTS:,}")) from None
        if len(points.labels) < MIN_POINTS:
            raise PointsError(_point_count_problem(shown, f"{len(points.labels):,}"))
        kept = self.folder / f"{token}.csv"  # by its digest alone: the same bytes under another name are this file
        if not kept.exists():  # nothing is written before the file is accepted
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomically(kept, lambda file: file.write(content))
        os.utime(kept)  # used now
        self.forget_old(in_use | {token})
        return token, len(points.labels), points.classes

    def find(self, token: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{16}", token):
            raise UsageError("upload: not a CSV this server was given")
        kept = self.folder / f"{token}.csv"
        if not kept.is_file():
            raise UsageError("upload: the CSV is no longer on the server; upload it again")
        os.utime(kept)  # used now
        return kept

    def forget_old(self, in_use: set[str]) -> None:
        """Remove the uploads no tab has used for UPLOAD_IDLE_SECONDS, then the least recently used beyond
        MAX_UPLOADS; never one in `in_use`."""
        now = time.time()
        kept = []
        for path in self.folder.glob("*.csv"):
            with contextlib.suppress(OSError):  # another request removed it meanwhile
                kept.append((path.stat().st_mtime, path))
        kept.sort()
        unused = [(used, path) for used, path in kept if path.stem not in in_use]
        excess = len(kept) - MAX_UPLOADS
        for number, (used, path) in enumerate(unused):
            if now - used > UPLOAD_IDLE_SECONDS or number < excess:
                path.unlink(missing_ok=True)


def _point_count_problem(name: str, count: str) -> str:
    return (
        f"{name}: {count} points; the playground trains on {MIN_POINTS} to {MAX_POINTS:,} (every one is drawn on "
        "every picture); `mnist-ffn train --set data.points=FILE` takes more"
    )


def _safe_name(name: str) -> str:
    """An uploaded file's own name as a file name here: its last part, plain characters only, ending in .csv."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).name).strip("._")[:100] or "points"
    return stem if stem.lower().endswith(".csv") else f"{stem}.csv"


@dataclass
class Frame:
    """What the page draws after a slice of training; tensors go to the page as base64 bytes."""

    epoch: int
    train_loss: float | None  # None: not a number (a network that diverged)
    train_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    boundary_class: bytes  # (BOUNDARY_CELLS^2,) uint8: the class the network gives each cell, rows bottom up
    boundary_confidence: bytes  # (BOUNDARY_CELLS^2,) uint8: its probability, 0-255
    neurons: list[dict]  # per hidden layer: {"width", "scale": [max |a| per neuron], "maps": int8 bytes}
    weights: list[dict]  # per Linear layer: {"rows", "columns", "values": float32 bytes}, rows = out
    # per Linear layer, the lowest first: the last epoch's mean ||dL/dz|| (metrics.csv's grad_norm_K); [] before one
    gradient_norms: list[float | None]
    # the backward view (asked for): per hidden layer dL/dz over the plane, as `neurons`; per Linear layer dL/dW of
    # the training loss, as `weights`. None when not asked for
    backward: list[dict] | None = None
    weight_gradients: list[dict] | None = None

    def to_json(self) -> dict:
        def encoded(value):
            if isinstance(value, bytes):
                return base64.b64encode(value).decode("ascii")
            if isinstance(value, list):
                return [encoded(item) for item in value]
            if isinstance(value, dict):
                return {key: encoded(item) for key, item in value.items()}
            return value

        return {field.name: encoded(getattr(self, field.name)) for field in dataclasses.fields(self)}


class Session:
    """One page's network: a Trainer on a run folder of its own, trained a slice at a time."""

    def __init__(self, setting: Setting, folder: Path, points_file: Path | None = None):
        self.setting = setting
        self.config = setting.config(points_file, len(read_csv(points_file).labels) if points_file else None)
        self.run = RunFolder(folder)
        self.random_state = torch.get_rng_state()
        with self._own_random():
            self.trainer = Trainer(self.config, self.run, torch.device("cpu"), log=None, progress_bars=False,
                                   resume_command="")  # fmt: skip
            self.trainer.load_data(folder)  # a 2-D set reads no files: generated from the seed, or the CSV
            self.trainer.start_engine(None)  # 2-D points: the hand-written engine in fp32, untimed
            if self.trainer.steps_per_epoch > MAX_STEPS_PER_EPOCH:
                raise UsageError(_too_many_steps(self.trainer.steps_per_epoch))
            self.trainer.run_id = self.run.create(self.config, force=False)
        self.raw = self.trainer.raw
        self.stopped = ""  # why training stopped for good: diverged, or reached MAX_EPOCHS
        self.last_used = time.monotonic()
        extent = self.raw.info.scale * 1.05
        self.extent = extent
        self.boundary_inputs = self._grid_inputs(BOUNDARY_CELLS, extent)
        self.neuron_inputs = self._grid_inputs(NEURON_CELLS, extent)
        # the backward view's labels over the plane: each cell's nearest training point's
        self.neuron_labels = self._nearest_labels(plane_grid(extent, NEURON_CELLS))

    @property
    def epoch(self) -> int:
        return self.trainer.progress.epoch

    @contextmanager
    def _own_random(self):
        """torch's generator holds this session's state while it trains: the dropout masks and the initial weights
        come from torch's process-wide generator, which every tab would otherwise share; each session keeps its own
        state and trains holding GLOBAL_RANDOM, so a tab's numbers never depend on what another tab did meanwhile."""
        with GLOBAL_RANDOM:
            others = torch.get_rng_state()
            torch.set_rng_state(self.random_state)
            try:
                yield
            finally:
                self.random_state = torch.get_rng_state()
                torch.set_rng_state(others)

    def _finite(self) -> bool:
        return all(bool(torch.isfinite(parameter).all()) for parameter in self.trainer.model.parameters())

    def _check_finite(self) -> None:
        if not self._finite():
            raise UsageError(
                "this network diverged and its weights are no longer numbers: nothing to download or save; "
                "lower the learning rate"
            )

    def _nearest_labels(self, xy: torch.Tensor) -> torch.Tensor:
        """The label of each point's nearest training point: what a point of the plane is taken to be."""
        return self.raw.train_labels[torch.cdist(xy.float(), self.raw.train_points.float()).argmin(dim=1)]

    def _grid_inputs(self, cells: int, extent: float) -> torch.Tensor:
        """The network's inputs over the plane, rows from the bottom up as the page's y axis."""
        return features(plane_grid(extent, cells), list(self.raw.info.features), self.raw.info.scale)

    def points(self) -> dict:
        """The train and test points and the plane's extent, sent once when the session starts."""
        return {
            "extent": self.extent,
            "classes": list(self.raw.info.classes),
            "train": _points(self.raw.train_points, self.raw.train_labels),
            "test": _points(self.raw.test_points, self.raw.test_labels),
            "layers": [len(self.raw.info.features), *self.setting.hidden, len(self.raw.info.classes)],
            "features": list(self.raw.info.features),
        }

    def train(self, *, epochs: int = 0, seconds: float = 0.0) -> None:
        """At least `epochs` epochs, then more until `seconds` have passed; the CLI's own epoch, step for step."""
        if self.stopped:
            return
        started = time.perf_counter()
        never_stops = SimpleNamespace(received=None)  # the page pauses between epochs; no signal stops one
        with self._own_random():
            self._train(epochs, seconds, started, never_stops)

    def _train(self, epochs: int, seconds: float, started: float, never_stops) -> None:
        done = 0
        while done < epochs or (seconds and time.perf_counter() - started < seconds):
            if self.epoch >= MAX_EPOCHS:
                self.stopped = f"stopped at the playground's last epoch, {MAX_EPOCHS:,}"
                return
            try:
                self.trainer.train_epoch(never_stops)
                self.trainer.finish_epoch()
            except TrainingDiverged:
                lost = self.trainer.progress.epoch + 1
                self.stopped = (
                    f"the loss overflowed at epoch {lost}: the learning rate is too large for this network; "
                    "lower it (the setting then starts anew)"
                )
                return
            done += 1

    def frame(self, backward: bool = False) -> Frame:
        model = self.trainer.model
        classes = len(self.raw.info.classes)
        splits = self.trainer.splits
        train = evaluate(model, splits["train"], 4096, classes)  # evaluation mode: what the network now knows
        test = evaluate(model, splits["test"], 4096, classes)
        with torch.inference_mode():
            probabilities = torch.softmax(model.eval()(self.boundary_inputs), dim=1)
            confidence, winner = probabilities.max(dim=1)
            neurons = [_neuron_maps(a) for a in forward_with_activations(model, self.neuron_inputs)[1]]
        return Frame(
            epoch=self.epoch,
            train_loss=_number(train.loss),
            train_accuracy=_number(train.accuracy),
            test_loss=_number(test.loss),
            test_accuracy=_number(test.accuracy),
            boundary_class=winner.to(torch.uint8).numpy().tobytes(),
            boundary_confidence=(confidence * 255).round().to(torch.uint8).numpy().tobytes(),
            neurons=neurons,
            weights=[_weights(layer.weight) for layer in linear_layers(model)],
            gradient_norms=self._gradient_norms(),
            **(self._backward_view() if backward else {}),
        )

    def _gradient_norms(self) -> list[float | None]:
        history = self.trainer.progress.history
        last = history[-1] if history else {}
        norms = [last.get(f"grad_norm_{k}") for k in range(1, gradient_layers(history[-1:]) + 1)]
        return [None if norm is None else _number(norm) for norm in norms]

    def _backward_view(self) -> dict:
        """dL/dz of every hidden neuron over the plane (each cell labelled as its nearest training point, the loss
        of that one point: the mean's dL/dz times the cells) and dL/dW of the training loss: one step of the engine
        each, on copies (training.trace)."""
        model = self.trainer.model
        if not self._finite():
            return {"backward": [], "weight_gradients": []}
        grid = trace(model, self.config, self.neuron_inputs, self.neuron_labels)
        maps = [_neuron_maps(layer.grad_z * len(self.neuron_labels)) for layer in grid.layers[:-1]]
        inputs, labels = self.trainer.splits["train"].slice(0, len(self.trainer.splits["train"]))
        whole = trace(model, self.config, inputs, labels)
        return {"backward": maps, "weight_gradients": [_weights(layer.grad_weight) for layer in whole.layers]}

    def chain_rule(self, values: dict) -> dict:
        """Every number of the chain rule for one point, the clicked `point` [x1, x2] (labelled `label`, or as its
        nearest training point) or the training point `index`; with the gradient check of every weight."""
        point, label, labelled = self._chosen_point(values)
        self._check_finite()
        inputs = features(point.reshape(1, 2), list(self.raw.info.features), self.raw.info.scale)
        labels = torch.tensor([label])
        traced = trace(self.trainer.model, self.config, inputs, labels)
        check = finite_differences(self.trainer.model, self.config, inputs, labels)
        return _chain_rule_json(traced, check, point, label, labelled, self)

    def _chosen_point(self, values: dict) -> tuple[torch.Tensor, int, str]:
        classes = len(self.raw.info.classes)
        if values.get("index") is not None:
            index = values["index"]
            count = len(self.raw.train_labels)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
                raise UsageError(f"index: a training point's number, 0 to {count - 1}, got {cut(repr(index))}")
            return self.raw.train_points[index].float(), int(self.raw.train_labels[index]), "its own"
        point = values.get("point")
        if (
            not isinstance(point, list)
            or len(point) != 2
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in point)
            or not all(math.isfinite(v) for v in point)
        ):
            raise UsageError("point: two numbers [x1, x2], the place clicked on the plane")
        if max(abs(v) for v in point) > self.extent:
            raise UsageError(
                f"the point ({point[0]:.3g}, {point[1]:.3g}) is outside the plane, which runs from "
                f"{-self.extent:.3g} to {self.extent:.3g}: click inside the picture"
            )
        xy = torch.tensor(point, dtype=torch.float32)
        label = values.get("label")
        if label is None:
            return xy, int(self._nearest_labels(xy.reshape(1, 2))[0]), "its nearest training point's"
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < classes:
            raise UsageError(f"label: a class number, 0 to {classes - 1}, got {cut(repr(label))}")
        return xy, label, "chosen"

    def checkpoint_bytes(self, path: Path) -> bytes:
        """The network as it is now, as a checkpoint `eval`, `export` and `train --resume` read (a last.pt)."""
        if self.epoch == 0:
            raise UsageError("train at least one epoch first (step or play)")
        self._check_finite()
        with self._own_random():  # the checkpoint holds this session's generator, for --resume
            self.trainer._save(path)
        return path.read_bytes()

    def save(self, folder: Path) -> Path:
        """An ordinary run folder of the network as it is now: the run `mnist-ffn train` makes of this setting
        with `train.epochs` = the epochs trained so far (config.toml, metrics.csv, last.pt, best.pt, summary.json).
        With the constant learning rate, `mnist-ffn train --config` on its config.toml trains the same numbers."""
        if self.epoch == 0:
            raise UsageError("train at least one epoch first (step or play)")
        self._check_finite()
        trainer = self.trainer
        final = dataclasses.replace(self.config, train=dataclasses.replace(self.config.train, epochs=self.epoch))
        target = RunFolder(folder)
        kept = trainer.config, trainer.run, trainer.run_id
        with target.locked("save"), self._own_random():
            if final.data.points:  # the run keeps its own copy of the uploaded CSV: it outlives the upload
                copy = (folder / POINTS_FILE).absolute()
                data = Path(final.data.points).read_bytes()
                write_atomically(copy, lambda file: file.write(data))
                final = dataclasses.replace(final, data=dataclasses.replace(final.data, points=str(copy)))
            run_id = target.create(final, force=False)
            try:
                trainer.config, trainer.run, trainer.run_id = final, target, run_id
                best = load_checkpoint(self.run.best_checkpoint)
                save_checkpoint(target.best_checkpoint, {**best, "config": final.to_dict(), "run_id": run_id})
                trainer.save_epoch_end()  # last.pt and metrics.csv
                target.write_summary(trainer.summarize())
            finally:
                trainer.config, trainer.run, trainer.run_id = kept
        return folder

    def eval_command(self, folder: Path) -> str:
        return command_line("mnist-ffn", "eval", folder / "best.pt")


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _points(xy: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"xy": [round(value, 4) for value in xy.flatten().tolist()], "labels": labels.tolist()}


def _weights(matrix: torch.Tensor) -> dict:
    rows, columns = matrix.shape
    return {"rows": rows, "columns": columns, "values": matrix.detach().float().contiguous().numpy().tobytes()}


def _vector(tensor: torch.Tensor | None) -> list[float] | None:
    return None if tensor is None else tensor.reshape(-1).tolist()


def _shown_matrix(tensor: torch.Tensor) -> list[list[float]]:
    return tensor[:SHOWN_WIDTH, :SHOWN_WIDTH].tolist()


def _chain_rule_json(traced: Trace, check, point: torch.Tensor, label: int, labelled: str, session: Session) -> dict:
    """The chain rule for the page: vectors whole (a layer has at most MAX_WIDTH neurons), matrices cut to their
    first SHOWN_WIDTH rows and columns, each with its whole one's largest |value| and worst relative difference."""
    differences, agreements = check.relative_differences(traced), check.agreements(traced)
    layers = []
    for number, (layer, estimate_w, estimate_b, (rel_w, rel_b), (ok_w, ok_b)) in enumerate(
        zip(traced.layers, check.weight, check.bias, differences, agreements, strict=True), 1
    ):
        vector, matrix = _vector, _shown_matrix  # short names: a table of 20 lines
        layers.append({
            "layer": number,
            "rows": layer.weight.shape[0],
            "columns": layer.weight.shape[1],
            "x": vector(layer.x), "z": vector(layer.z), "a": vector(layer.a), "slope": vector(layer.slope),
            "grad_a": vector(layer.grad_a), "grad_z": vector(layer.grad_z),
            "weight": matrix(layer.weight), "bias": vector(layer.bias),
            "grad_weight": matrix(layer.grad_weight), "grad_bias": vector(layer.grad_bias),
            "estimate_weight": matrix(estimate_w), "estimate_bias": vector(estimate_b),
            "relative_weight": matrix(rel_w), "relative_bias": vector(rel_b),
            "weight_update": matrix(layer.weight_update), "bias_update": vector(layer.bias_update),
            "worst_relative": float(max(rel_w.max(), rel_b.max())),
            "disagreements": int((~ok_w).sum() + (~ok_b).sum()),
            "grad_z_norm": float(layer.grad_z.norm()),
            "grad_weight_norm": float(layer.grad_weight.norm()),
        })  # fmt: skip
    disagreements = sum(layer["disagreements"] for layer in layers)
    return {
        "point": [float(v) for v in point],
        "label": label,
        "labelled": labelled,
        "features": list(session.raw.info.features),
        "classes": list(session.raw.info.classes),
        "activation": session.setting.activation,
        "epoch": session.epoch,
        "lr": traced.lr,
        "l1": session.setting.l1,
        "l2": session.setting.l2,
        "loss": traced.loss,
        "probabilities": [float(v) for v in traced.probabilities[0]],
        "target": [float(v) for v in traced.target[0]],
        "layers": layers,
        "shown_width": SHOWN_WIDTH,
        "check": {
            "step": STEP,
            "relative": RELATIVE,
            "absolute": ABSOLUTE,
            "disagreements": disagreements,
            "weights": sum(layer["rows"] * (layer["columns"] + 1) for layer in layers),
        },
        "note": "" if len(layers) > 1 else "no hidden layer: softmax regression, a chain rule of one link",
    }


def _neuron_maps(a: torch.Tensor) -> dict:
    """One layer's a = f(z) over the grid, (cells, width): each neuron's map scaled by its own max |a| to int8."""
    a = torch.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)  # a diverged network draws blank maps
    scale = a.abs().amax(dim=0).clamp_min(1e-12)  # (width,)
    maps = (a / scale * 127).round().to(torch.int8).t().contiguous()  # (width, cells): one map after another
    return {"width": a.shape[1], "scale": [float(value) for value in scale], "maps": maps.numpy().tobytes()}
