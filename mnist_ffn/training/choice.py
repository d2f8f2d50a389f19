"""Which engine takes a run's steps and in which precision its matrix products run, chosen by timing them.

`train.engine = "auto"` and `train.precision = "auto"` (the defaults) leave the choice to the machine: a few steps of
the run's own network, at its own batch size and thread count, in each candidate (the hand-written engine and
autograd, each in fp32 and bf16), on a copy of the network and random inputs, so the run's weights and random
streams are untouched. The rule, in order of preference:

- the hand-written engine (the lesson's equations) unless autograd's step is at least 5% faster at that precision:
  a smaller gap is timing noise, and the hand-written one then wins;
- fp32 unless bf16's step is at least 10% faster: bfloat16 rounds every product's inputs to 8 bits of mantissa, a
  price paid only for a real gain.

The choice is cached per machine (CPU or GPU name, torch's SIMD level, threads, torch and mnist-ffn versions),
network shape and batch size in `step-choices.json` in mnist-ffn's cache folder ($MNIST_FFN_CACHE,
default ~/.cache/mnist-ffn/tensors, beside the decoded data sets), so it costs
a machine one timing per network and batch (a fraction of a second, plus the import autograd's optimizer needs).
Delete the file to time again. A run saves its choice in its checkpoints and a resumed run reuses it, so resume
stays bit-exact whatever the cache says later.

No timing where there is nothing to choose: a forced engine and precision, 2-D points and networks under
SMALL_NETWORK parameters (steps this short are Python's, not the products': fp32 and the hand-written engine), a
device without bfloat16 units (fp32), torch.compile or an Apple GPU (autograd).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import torch
from torch import nn

from mnist_ffn.catalog import tensor_cache_dir
from mnist_ffn.config import Config
from mnist_ffn.errors import WriteError
from mnist_ffn.files import strict_json, write_text_atomically
from mnist_ffn.training.autograd import AutogradEngine
from mnist_ffn.training.backprop import BackpropEngine
from mnist_ffn.training.devices import device_name
from mnist_ffn.version import __version__

AUTOGRAD_MARGIN = 0.95  # autograd's step must take <= 0.95x the hand-written one's to be chosen
BF16_MARGIN = 0.90  # bf16's step must take <= 0.90x fp32's to be chosen
SMALL_NETWORK = 100_000  # parameters; below this a step is too short for the products' precision to matter
TIMING_ROUNDS = 5  # the candidates take turns, so a slow moment of the machine falls on all of them
CACHE_FILE = "step-choices.json"
ENGINES = {"backprop": BackpropEngine, "autograd": AutogradEngine}


@dataclass(frozen=True)
class StepChoice:
    engine: str  # "backprop" or "autograd"
    precision: str  # "fp32" or "bf16"
    why: str  # one line for the start line and summary.json

    def as_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(saved) -> StepChoice | None:
        """A checkpoint's choice, or None where the checkpoint has none (or a damaged one)."""
        if not isinstance(saved, dict):
            return None
        engine, precision, why = saved.get("engine"), saved.get("precision"), saved.get("why")
        if engine not in ENGINES or precision not in ("fp32", "bf16") or not isinstance(why, str):
            return None
        return StepChoice(engine, precision, why)


def build_engine(model: nn.Sequential, config: Config, device: torch.device, choice: StepChoice):
    """The engine of `choice`, taking its steps on `model` (whose parameters it updates in place)."""
    if choice.engine == "autograd":
        return AutogradEngine(model, config, device, precision=choice.precision)
    train = config.train
    return BackpropEngine(
        model, config.model, config.optim, train.label_smoothing, max_batch=train.batch_size, precision=choice.precision
    )


def choose_step(config: Config, model: nn.Sequential, device: torch.device, *, points: bool) -> StepChoice:
    """The engine and precision `config` asks for, timed where it leaves the choice to the machine."""
    train = config.train
    engines = candidate_engines(config, device, model, points=points)
    precisions = candidate_precisions(config, device, model, points=points)
    if len(engines) == 1 and len(precisions) == 1:
        return StepChoice(engines[0], precisions[0], why_fixed(config, device, model, points=points))
    key = cache_key(config, model, device)
    with cache_locked() as cache:
        saved = StepChoice.from_dict(cache.entries.get(key)) if cache.entries is not None else None
        if saved is not None and saved.engine in engines and saved.precision in precisions:
            return saved
        times = time_candidates(config, model, device, engines, precisions)
        choice = pick(times, engines, precisions, train.batch_size)
        cache.save(key, choice)
    return choice


def legacy_choice(config: Config, device: torch.device) -> StepChoice:
    """What a run whose checkpoint predates saved choices trained with: the rule of those versions."""
    train = config.train
    precision = "fp32" if train.precision == "auto" else train.precision
    engine = train.engine
    if engine == "auto":
        only_autograd = precision == "bf16" or train.compile or device.type not in ("cpu", "cuda")
        engine = "autograd" if only_autograd else "backprop"
    return StepChoice(engine, precision, "as the run started (its checkpoint predates saved choices)")


def candidate_engines(config: Config, device: torch.device, model: nn.Sequential, *, points: bool) -> list[str]:
    train = config.train
    if train.engine != "auto":
        return [train.engine]
    if train.compile or device.type not in ("cpu", "cuda"):  # compile is autograd's; the hand step never ran on MPS
        return ["autograd"]
    if train.precision != "auto" or too_small_to_time(model, points=points):  # the lesson's engine, as before
        return ["backprop"]
    return ["backprop", "autograd"]


def candidate_precisions(config: Config, device: torch.device, model: nn.Sequential, *, points: bool) -> list[str]:
    precision = config.train.precision
    if precision != "auto":
        return [precision]
    if too_small_to_time(model, points=points) or not has_bf16_units(device):
        return ["fp32"]
    return ["fp32", "bf16"]


def too_small_to_time(model: nn.Sequential, *, points: bool) -> bool:
    return points or parameter_count(model) < SMALL_NETWORK


def why_fixed(config: Config, device: torch.device, model: nn.Sequential, *, points: bool) -> str:
    train = config.train
    if train.precision != "auto":
        return f"train.precision = {train.precision}"
    if points:
        return "fp32 for 2-D points: their networks are too small for bf16 to gain anything"
    if parameter_count(model) < SMALL_NETWORK:
        return f"fp32: under {SMALL_NETWORK:,} parameters a step is too short for bf16 to gain anything"
    if not has_bf16_units(device):
        return f"fp32: {device_name(device)} has no bfloat16 units"
    return "fp32: the only precision this engine offers here"


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def has_bf16_units(device: torch.device) -> bool:
    """Whether bfloat16 products can run natively (CPUs with AVX512-BF16 or AMX; GPUs from Ampere on)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    with contextlib.suppress(AttributeError, RuntimeError):  # a private probe: absent, it says no
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


# -- timing -------------------------------------------------------------------------------------------------------


def time_candidates(
    config: Config, model: nn.Sequential, device: torch.device, engines: list[str], precisions: list[str]
) -> dict[tuple[str, str], float]:
    """Seconds per step of each (engine, precision): the best of TIMING_ROUNDS turns, each of a few steps."""
    batch = config.train.batch_size
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    inputs, classes = linears[0].in_features, linears[-1].out_features
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's streams untouched
        generator = torch.Generator(device).manual_seed(0)
        x = torch.randn(batch, inputs, generator=generator, device=device)
        y = torch.randint(0, classes, (batch,), generator=generator, device=device)
        steppers = {}
        for engine in engines:
            for precision in precisions:
                candidate = build_engine(copy.deepcopy(model), config, device, StepChoice(engine, precision, ""))
                steppers[engine, precision] = candidate
        steps = steps_per_turn(steppers, x, y, device)
        best = dict.fromkeys(steppers, float("inf"))
        for _ in range(TIMING_ROUNDS):
            for name, stepper in steppers.items():
                best[name] = min(best[name], timed(stepper, x, y, steps, device) / steps)
    return best


def steps_per_turn(steppers: dict, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> int:
    """Enough steps for a turn to last about 20 ms, at most 10: the timing stays under a second or two."""
    slowest = 0.0
    for stepper in steppers.values():  # the first steps warm the kernels and caches up
        timed(stepper, x, y, 2, device)
        slowest = max(slowest, timed(stepper, x, y, 1, device))
    return max(1, min(10, round(0.02 / max(slowest, 1e-6))))


def timed(stepper, x: torch.Tensor, y: torch.Tensor, steps: int, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        stepper.step(x, y, 1e-3)
    synchronize(device)
    return time.perf_counter() - started


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick(times: dict[tuple[str, str], float], engines: list[str], precisions: list[str], batch: int) -> StepChoice:
    """The rule of the module docstring, and a line that says what the timing found."""

    def engine_at(precision: str) -> str:
        if "backprop" not in engines:
            return engines[0]
        if "autograd" in engines and times["autograd", precision] <= AUTOGRAD_MARGIN * times["backprop", precision]:
            return "autograd"
        return "backprop"

    fp32 = ("fp32", engine_at("fp32")) if "fp32" in precisions else None
    bf16 = ("bf16", engine_at("bf16")) if "bf16" in precisions else None
    found = []
    if fp32 and bf16:
        ratio = times[bf16[1], "bf16"] / times[fp32[1], "fp32"]
        precision, engine = bf16 if ratio <= BF16_MARGIN else fp32
        found.append(f"bf16's step {ratio:.2f}x fp32's")
    else:
        precision, engine = fp32 or bf16
    if "autograd" in engines and "backprop" in engines:
        ratio = times["autograd", precision] / times["backprop", precision]
        found.append(f"autograd's {ratio:.2f}x the hand-written one's")
    found.append(f"{batch / times[engine, precision]:,.0f} samples/s")
    return StepChoice(engine, precision, f"timed {date.today().isoformat()}: {', '.join(found)}")


# -- the cache ----------------------------------------------------------------------------------------------------


def cache_key(config: Config, model: nn.Sequential, device: torch.device) -> str:
    """What a step's speed depends on: the machine, its software, the network and the batch."""
    shape = "-".join(str(layer.out_features) for layer in model if isinstance(layer, nn.Linear))
    first = next(layer for layer in model if isinstance(layer, nn.Linear))
    machine = device_name(device)
    if device.type == "cpu":
        machine += f", {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    train, model_config = config.train, config.model
    network = f"{first.in_features}-{shape} {model_config.activation} dropout {model_config.dropout}"
    run = f"batch {train.batch_size}, engine {train.engine}, precision {train.precision}, compile {train.compile}"
    return f"{machine} | torch {torch.__version__}, mnist-ffn {__version__} | {network} | {run}"


class Cache:
    def __init__(self, path: Path):
        self.path = path
        self.entries: dict | None = None  # None: no cache to read or write here
        with contextlib.suppress(OSError, ValueError):
            entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            self.entries = entries if isinstance(entries, dict) else {}

    def save(self, key: str, choice: StepChoice) -> None:
        """Best effort: a cache that cannot be written costs the next run a timing, nothing more."""
        if self.entries is None:
            self.entries = {}
        self.entries[key] = choice.as_dict()
        with contextlib.suppress(OSError, WriteError):
            write_text_atomically(self.path, strict_json(self.entries) + "\n")


@contextlib.contextmanager
def cache_locked():
    """The cache, held by this process alone: two runs starting at once time one after the other, not against
    each other (each would slow the other's steps down), and the second reuses the first's choice."""
    folder = tensor_cache_dir()  # mnist-ffn's cache, beside the decoded data sets
    lock = None
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"{CACHE_FILE}.lock", "a")  # noqa: SIM115 - held until the timing is saved
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        yield Cache(folder / CACHE_FILE)
    finally:
        if lock is not None:
            lock.close()
