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
device without bfloat16 units (fp32), torch.compile or an Apple GPU (autograd in fp32: compiling each candidate
would cost more than it could save). A candidate that fails to run here is left out and named in the reason; if
none runs, the hand-written engine trains in fp32. A resumed run on a device that cannot keep its choice (no
bfloat16 units, no hand-written step) says so and changes it.
"""

from __future__ import annotations

import contextlib
import copy
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
from mnist_ffn.training.model import count_parameters, linear_layers
from mnist_ffn.version import __version__

AUTOGRAD_MARGIN = 0.95  # autograd's step must take <= 0.95x the hand-written one's to be chosen
BF16_MARGIN = 0.90  # bf16's step must take <= 0.90x fp32's to be chosen
SMALL_NETWORK = 100_000  # parameters; below this a step is too short for the products' precision to matter
TIMING_ROUNDS = 5  # the candidates take turns, so a slow moment of the machine falls on all of them
LOCK_WAIT = 60.0  # seconds to wait for another run's timing before timing alongside it
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
        model, config.model, config.optim, train.label_smoothing, max_batch=train.batch_size,
        precision=choice.precision, grad_norms=train.grad_norms,
    )  # fmt: skip


def choose_step(config: Config, model: nn.Sequential, device: torch.device, *, points: bool) -> StepChoice:
    """The engine and precision `config` asks for, timed where it leaves the choice to the machine."""
    engines = candidate_engines(config, device, model, points=points)
    precisions = candidate_precisions(config, device, model, points=points)
    if len(engines) == 1 and len(precisions) == 1:
        return StepChoice(engines[0], precisions[0], why_fixed(config, device, model, points=points))
    key = cache_key(config, model, device)
    folder = tensor_cache_dir()  # mnist-ffn's cache, beside the decoded data sets
    saved = Cache(folder / CACHE_FILE).choice(key, engines, precisions)
    if saved is not None:  # the common case: no lock to take
        return saved
    with timing_turn(folder):
        cache = Cache(folder / CACHE_FILE)  # read again: the run this one waited for may have timed it
        saved = cache.choice(key, engines, precisions)
        if saved is not None:
            return saved
        times = time_candidates(config, model, device, engines, precisions)
        choice = pick(times, engines, precisions, config.train.batch_size)
        if not times:
            return choice  # nothing ran: the next run tries again rather than read a guess
        if not cache.save(key, choice):
            choice = StepChoice(choice.engine, choice.precision, f"{choice.why}; not cached ({folder} is not writable)")
    return choice


def resumed_choice(saved, config: Config, device: torch.device) -> StepChoice:
    """A resumed run's choice: its checkpoint's (bit-exact resume), unless this device cannot keep it."""
    choice = StepChoice.from_dict(saved) or legacy_choice(config, device)
    here = device_name(device)
    if choice.engine == "backprop" and device.type not in ("cpu", "cuda"):
        choice = StepChoice("autograd", choice.precision, f"autograd: {here} runs no hand-written step")
    if choice.precision == "bf16" and config.train.precision == "auto" and not has_bf16_units(device):
        why = f"fp32: the run started in bf16, but {here} has no bfloat16 units"
        choice = StepChoice(choice.engine, "fp32", why)
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
    if config.train.compile or too_small_to_time(model, points=points) or not has_bf16_units(device):
        return ["fp32"]
    return ["fp32", "bf16"]


def too_small_to_time(model: nn.Sequential, *, points: bool) -> bool:
    return points or count_parameters(model) < SMALL_NETWORK


def why_fixed(config: Config, device: torch.device, model: nn.Sequential, *, points: bool) -> str:
    train = config.train
    if train.precision != "auto":
        return f"train.precision = {train.precision}"
    if train.compile:
        return 'fp32: torch.compile\'s step is not timed (train.precision = "bf16" asks for bf16)'
    if points:
        return "fp32 for 2-D points: their networks are too small for bf16 to gain anything"
    if count_parameters(model) < SMALL_NETWORK:
        return f"fp32: under {SMALL_NETWORK:,} parameters a step is too short for bf16 to gain anything"
    if not has_bf16_units(device):
        return f"fp32: {device_name(device)} has no bfloat16 units"
    return "fp32: the only precision this engine offers here"


def has_bf16_units(device: torch.device) -> bool:
    """Whether bfloat16 products are worth timing here: GPUs from Ampere on, and CPUs where oneDNN runs bf16 products
    (AVX-512 cores: natively with AVX512-BF16 or AMX, converted in registers on older ones, which the timing then
    finds no faster). Elsewhere bf16 is emulated, slowly."""
    if device.type == "cuda":  # Ampere (compute capability 8.0) and later; earlier GPUs emulate bf16, slowly
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu":
        return False
    with contextlib.suppress(AttributeError, RuntimeError):  # a private probe: absent, it says no
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


# -- timing -------------------------------------------------------------------------------------------------------


def time_candidates(
    config: Config, model: nn.Sequential, device: torch.device, engines: list[str], precisions: list[str]
) -> dict[tuple[str, str], float]:
    """Seconds per step of each (engine, precision): the best of TIMING_ROUNDS turns, each of a few steps. A
    candidate that fails to build or step here (an operation its device lacks, memory) is left out."""
    batch = config.train.batch_size
    linears = linear_layers(model)
    inputs, classes = linears[0].in_features, linears[-1].out_features
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the run's streams untouched
        generator = torch.Generator(device).manual_seed(0)
        x = torch.randn(batch, inputs, generator=generator, device=device)
        y = torch.randint(0, classes, (batch,), generator=generator, device=device)
        steppers = {}
        for engine in engines:
            for precision in precisions:
                with contextlib.suppress(RuntimeError, ValueError, TypeError):  # torch's errors, OOM among them
                    candidate = build_engine(copy.deepcopy(model), config, device, StepChoice(engine, precision, ""))
                    timed(candidate, x, y, 2, device)  # the first steps warm the kernels and caches up
                    steppers[engine, precision] = candidate
        best = dict.fromkeys(steppers, float("inf"))
        if steppers:
            steps = steps_per_turn(steppers, x, y, device)
            for _ in range(TIMING_ROUNDS):
                for name, stepper in steppers.items():
                    best[name] = min(best[name], timed(stepper, x, y, steps, device) / steps)
        del steppers  # the copies' weights and optimizer state, before the run allocates its own
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return best


def steps_per_turn(steppers: dict, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> int:
    """Enough steps for a turn to last about 20 ms, at most 10: the timing stays under a second or two."""
    slowest = 0.0
    for stepper in steppers.values():
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
    """The rule of the module docstring among the candidates that ran, and a line that says what the timing found."""
    ran = {name: seconds for name, seconds in times.items() if name[0] in engines and name[1] in precisions}
    failed = [
        f"{engine} in {precision}" for engine in engines for precision in precisions if (engine, precision) not in ran
    ]
    if not ran:
        return StepChoice("backprop", "fp32", f"fp32, hand-written: no candidate ran here ({', '.join(failed)} failed)")

    def engine_at(precision: str) -> str | None:
        here = [engine for engine in engines if (engine, precision) in ran]
        if len(here) == 2 and ran["autograd", precision] <= AUTOGRAD_MARGIN * ran["backprop", precision]:
            return "autograd"
        return "backprop" if "backprop" in here else (here[0] if here else None)

    fp32 = ("fp32", engine_at("fp32")) if engine_at("fp32") else None
    bf16 = ("bf16", engine_at("bf16")) if engine_at("bf16") else None
    found = []
    if fp32 and bf16:
        ratio = ran[bf16[1], "bf16"] / ran[fp32[1], "fp32"]
        precision, engine = bf16 if ratio <= BF16_MARGIN else fp32
        found.append(f"bf16's step {ratio:.2f}x fp32's")
    else:
        precision, engine = fp32 or bf16
    if ("autograd", precision) in ran and ("backprop", precision) in ran:
        ratio = ran["autograd", precision] / ran["backprop", precision]
        found.append(f"autograd's {ratio:.2f}x the hand-written one's")
    found.append(f"{batch / ran[engine, precision]:,.0f} samples/s")
    if failed:
        found.append(f"{', '.join(failed)} failed to run")
    return StepChoice(engine, precision, f"timed {date.today().isoformat()}: {', '.join(found)}")


# -- the cache ----------------------------------------------------------------------------------------------------


def cache_key(config: Config, model: nn.Sequential, device: torch.device) -> str:
    """What a step's speed depends on: the machine, its software, the network and the batch."""
    linears = linear_layers(model)
    shape = "-".join(str(layer.out_features) for layer in linears)
    first = linears[0]
    machine = device_name(device)
    if device.type == "cpu":
        machine += f", {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads"
    train, model_config, optim = config.train, config.model, config.optim
    network = f"{first.in_features}-{shape} {model_config.activation} dropout {model_config.dropout}"
    run = f"batch {train.batch_size}, engine {train.engine}, precision {train.precision}, compile {train.compile}"
    # the update's own work: each of these adds passes over the weights to a step
    update = (
        f"momentum {optim.momentum > 0}, nesterov {optim.nesterov}, "
        f"weight decay {optim.weight_decay > 0}, l1 {optim.l1 > 0}"
    )
    return f"{machine} | torch {torch.__version__}, mnist-ffn {__version__} | {network} | {run}, {update}"


class Cache:
    def __init__(self, path: Path):
        self.path = path
        self.entries: dict | None = None  # None: no cache to read or write here
        with contextlib.suppress(OSError, ValueError):
            entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            self.entries = entries if isinstance(entries, dict) else {}

    def choice(self, key: str, engines: list[str], precisions: list[str]) -> StepChoice | None:
        saved = StepChoice.from_dict(self.entries.get(key)) if self.entries is not None else None
        if saved is not None and saved.engine in engines and saved.precision in precisions:
            return saved
        return None

    def save(self, key: str, choice: StepChoice) -> bool:
        """Best effort: a cache that cannot be written costs the next run a timing, nothing more."""
        if self.entries is None:
            self.entries = {}
        self.entries[key] = choice.as_dict()
        try:
            write_text_atomically(self.path, strict_json(self.entries) + "\n")
        except (OSError, WriteError):
            return False
        return True


@contextlib.contextmanager
def timing_turn(folder: Path):
    """This process's turn to time: two runs starting at once time one after the other, not against each other
    (each would slow the other's steps down), and the second reuses the first's choice. Where no lock can be had
    (a read-only cache, no flock, a run timing for over LOCK_WAIT seconds) it times without one."""
    lock = None
    try:
        import fcntl  # POSIX only; elsewhere runs may time at once, which costs speed, not correctness

        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / f"{CACHE_FILE}.lock", "a")  # noqa: SIM115 - held until the timing is saved
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if lock is not None:
            lock.close()
