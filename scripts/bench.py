"""Benchmark: mnist-ffn's training loop against the canonical DataLoader loop and the matmul ceiling.

In one run, on one machine, for the same model (784-512-512-10 ReLU) and the same SGD settings
(lr 0.01, momentum 0.9), at each batch size it measures training samples/s of

  (a) the canonical loop of the PyTorch examples: datasets.MNIST + ToTensor + Normalize + DataLoader,
  (b) mnist-ffn's own training loop with the autograd engine (`train.engine = "autograd"`),
  (c) the ceiling: the same forward and backward matrix multiplications alone, on random data,
  (d) for the reader: a bare eager PyTorch step on random data already in memory (nn.Sequential forward,
      cross-entropy, autograd backward, the same fused torch.optim.SGD step), with no data pipeline and
      no bookkeeping: the best any eager nn.Sequential + torch.optim.SGD loop can do here,
  (e) the hand-written backprop engine's step (mnist_ffn.training.backprop, what `train.engine = "auto"` picks) on
      the same random data as (c) and (d): the like-for-like rival of (d),
  (f) mnist-ffn's own training loop with that engine: (b) with `train.engine = "backprop"`,
  (g) the products of (c) in bfloat16: the ceiling of a machine with fast bf16 (AMX, AVX512-BF16),
  (h) the backprop engine's step with bf16 products (`train.precision = "bf16"`) on the data of (e),
  (i) mnist-ffn's own loop with it: (f) in bf16,
  (j) mnist-ffn's own loop with autograd under bf16 autocast: (b) in bf16, the simple path's best,
  (k) (i) without recording each layer's gradient norm (`train.grad_norms = false`): i/k is what recording costs,

and prints b/a, b/c, b/d, d/c, then e/c, e/g and e/d (how close the engine's step comes to the ceilings, and
how much it beats the best eager step), f/b (what it gives the whole loop), g/c (how far above the fp32
ceiling the machine's own bf16 one lies), h/c and h/g (the bf16 step against both ceilings), i/f (the whole loop,
bf16 against fp32), i/j (the hand-written bf16 loop against autograd's) and 1 - i/k (the share of an epoch the
gradient norms take; --grad-norms-only measures that alone, with (f) and its fp32 twin; --tensorboard-only times
whole runs with and without TensorBoard's event files). Each figure is the best
of --rounds rounds, the rounds interleaved so that a noisy neighbour hurts all alike. With --profile
it then shows where a step of the engine spends its time (matrix products against everything else).
It then times whole default `mnist-ffn train` runs, back to back (process start to exit; test accuracy and peak
resident memory): as the defaults choose (`auto`, after one untimed run that fills the step-choice cache) and with
each engine and precision forced, and `mnist-ffn --help`. The figures are written as
JSON with the device they ran on.

    python scripts/bench.py --data-dir ../shared/data [--device cpu|cuda] [--profile] [--json-out bench.json]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ffn.catalog import DATASETS, resolve_data_dir
from mnist_ffn.config import load_config
from mnist_ffn.data.idx import FILE_NAMES, find_files
from mnist_ffn.training.devices import device_name, pick_device
from mnist_ffn.training.run_folder import RunFolder
from mnist_ffn.training.signals import StopSignals
from mnist_ffn.training.trainer import Trainer

WIDTHS = [784, 512, 512, 10]
LR, MOMENTUM = 0.01, 0.9  # the PyTorch MNIST example's SGD settings


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_model(device: torch.device) -> nn.Sequential:
    """784-512-512-10 ReLU as the PyTorch examples write it."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    ).to(device)


def canonical_loop(torchvision_root: Path, batch_size: int, device: torch.device, samples: int) -> float:
    """(a) A Python call and a PIL image per sample: the loop most MNIST code runs."""
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = datasets.MNIST(str(torchvision_root), train=True, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model = reference_model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)  # as the example writes it
    seen, started = 0, None
    for step, (images, labels) in enumerate(loader):
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        if step == 2:  # the first steps pay for warm-up
            synchronize(device)
            started = time.perf_counter()
        elif step > 2:
            seen += len(labels)
            if seen >= samples:
                break
    synchronize(device)
    return seen / (time.perf_counter() - started)


def bench_config(batch_size: int, engine: str, precision: str = "fp32", grad_norms: bool = True):
    """The bench's model and SGD as an mnist-ffn config."""
    settings = [f"model.hidden={WIDTHS[1:-1]}", "model.activation=relu", f"optim.lr={LR}", f"optim.momentum={MOMENTUM}"]
    settings += ["optim.nesterov=false", "optim.weight_decay=0", "optim.schedule=constant"]
    settings += [f"train.batch_size={batch_size}", "train.epochs=1", f"train.engine={engine}"]
    settings += [f"train.grad_norms={str(grad_norms).lower()}"]
    return load_config(None, [*settings, f"train.precision={precision}"])


def mnist_ffn_loop(
    data_dir: Path,
    batch_size: int,
    device: torch.device,
    workdir: Path,
    engine: str,
    precision: str = "fp32",
    grad_norms: bool = True,
) -> float:
    """(b), (f), (i), (j), (k): one epoch of mnist-ffn's own loop, timed by the loop itself (steps only, not
    evaluation)."""
    config = bench_config(batch_size, engine, precision, grad_norms)
    run = RunFolder(workdir / f"loop-{engine}-{precision}-{batch_size}-{grad_norms}")
    trainer = Trainer(config, run, device, log=None, progress_bars=False, resume_command="")
    trainer.run_id = run.create(config, force=True)
    trainer.load_data(data_dir)
    trainer.start_engine(None)
    with StopSignals() as stop:
        trainer.train_epoch(stop)
    return trainer.progress.samples_seen / trainer.progress.train_seconds


def samples_per_second(step, batch_size: int, device: torch.device, samples: int) -> float:
    """Time `step` (one batch) over about `samples` samples, after a few warm-up steps."""
    steps = max(20, samples // batch_size)
    for _ in range(5):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def ceiling(batch_size: int, device: torch.device, samples: int, dtype: torch.dtype = torch.float32) -> float:
    """(c) Only the matrix products of one SGD step: addmm forward as nn.Linear does, mm backward; (g) the same
    products in bfloat16, as autocast computes them (the machine's ceiling where it has fast bf16: AMX, AVX512-BF16)."""
    generator = torch.Generator(device).manual_seed(0)

    def random(*shape):
        return torch.randn(*shape, generator=generator, device=device).to(dtype)

    weights = [random(out, inp) * 0.03 for inp, out in itertools.pairwise(WIDTHS)]
    biases = [random(out) for out in WIDTHS[1:]]
    inputs, output_grad = random(batch_size, WIDTHS[0]), random(batch_size, WIDTHS[-1])

    def step():
        activations = [inputs]
        for weight, bias in zip(weights, biases, strict=True):
            activations.append(torch.addmm(bias, activations[-1], weight.t()))
        grad = output_grad
        for index in range(len(weights) - 1, -1, -1):
            grad.t().mm(activations[index])  # dL/dW
            if index > 0:  # no gradient for the input images
                grad = grad.mm(weights[index])  # dL/da of the layer below

    return samples_per_second(step, batch_size, device, samples)


def bare_torch_step(batch_size: int, device: torch.device, samples: int) -> float:
    """(d) Only what every eager training step must do: forward, loss, backward, optimizer step."""
    generator = torch.Generator(device).manual_seed(0)
    inputs = torch.randn(batch_size, WIDTHS[0], generator=generator, device=device)
    labels = torch.randint(0, WIDTHS[-1], (batch_size,), generator=generator, device=device)
    model = reference_model(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, fused=True)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    return samples_per_second(step, batch_size, device, samples)


MATRIX_PRODUCTS = {"aten::addmm", "aten::addmm_", "aten::mm", "aten::mv", "aten::addmv_"}


def profile_engine(batch_size: int, device: torch.device, precision: str, steps: int = 200) -> dict:
    """Where one step of the backprop engine spends its time: matrix products, and everything else."""
    from torch.profiler import ProfilerActivity, profile

    from mnist_ffn.training.backprop import BackpropEngine
    from mnist_ffn.training.model import build_model

    config = bench_config(batch_size, "backprop")
    model = build_model(config.model).to(device)
    engine = BackpropEngine(model, config.model, config.optim, 0.0, batch_size, precision=precision)
    inputs = torch.randn(batch_size, WIDTHS[0], device=device)
    labels = torch.randint(0, WIDTHS[-1], (batch_size,), device=device)
    for _ in range(20):
        engine.step(inputs, labels, LR)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps):
            engine.step(inputs, labels, LR)
        synchronize(device)
    rows = [
        (event.key, event.self_cpu_time_total / steps, event.count // steps)
        for event in profiler.key_averages()
        if event.self_cpu_time_total > 0
    ]
    rows.sort(key=lambda row: -row[1])
    total = sum(row[1] for row in rows)
    products = sum(row[1] for row in rows if row[0] in MATRIX_PRODUCTS)
    print(
        f"profile, backprop engine in {precision}, batch {batch_size}: {total:,.0f} us of operator time per step "
        f"(profiled, so slower than unprofiled): matrix products {products:,.0f} us ({products / total:.0%}), "
        f"everything else {total - products:,.0f} us; the top operators (us per step, calls per step):"
    )
    for name, micros, calls in rows[:12]:
        print(f"    {name:<24} {micros:>8,.1f}  x{calls}")
    return {"us_per_step": total, "matrix_product_us": products, "top": [list(row) for row in rows[:12]]}


def backprop_step(batch_size: int, device: torch.device, samples: int, precision: str = "fp32") -> float:
    """(e), (h): the hand-written engine's step, on the same random data as (d)."""
    from mnist_ffn.training.backprop import BackpropEngine
    from mnist_ffn.training.model import build_model

    generator = torch.Generator(device).manual_seed(0)
    inputs = torch.randn(batch_size, WIDTHS[0], generator=generator, device=device)
    labels = torch.randint(0, WIDTHS[-1], (batch_size,), generator=generator, device=device)
    config = bench_config(batch_size, "backprop")
    model = build_model(config.model).to(device)
    engine = BackpropEngine(model, config.model, config.optim, 0.0, batch_size, precision=precision)
    return samples_per_second(lambda: engine.step(inputs, labels, LR), batch_size, device, samples)


def prepare_torchvision_root(data_dir: Path, workdir: Path) -> Path:
    """torchvision's MNIST class wants extracted files under ROOT/MNIST/raw."""
    files = find_files(data_dir, DATASETS["mnist"])
    if files is None:
        sys.exit(f"bench: no MNIST files in {data_dir}; pass --data-dir")
    raw = workdir / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILE_NAMES.values():
        source = files[name]
        if source.suffix == ".gz":
            (raw / name).write_bytes(gzip.decompress(source.read_bytes()))
        else:
            shutil.copy(source, raw / name)
    return workdir / "torchvision"


FORCED = [(engine, precision) for engine in ("backprop", "autograd") for precision in ("fp32", "bf16")]
DEFAULT_RUNS = [("auto", "auto"), *FORCED]  # as the defaults choose, then each engine and precision forced


def default_training_run(
    data_dir: Path, workdir: Path, device: str, engine: str, precision: str, name: str = "timed"
) -> dict:
    """A whole `mnist-ffn train` with no config, as a user runs it: wall time, accuracy, peak RSS."""
    out = workdir / f"default-run-{engine}-{precision}-{name}"
    command = [sys.executable, "-m", "mnist_ffn", "train", "--data-dir", str(data_dir), "--out", str(out)]
    command += ["--quiet", "--device", device, "--set", f"train.engine={engine}"]
    command += ["--set", f"train.precision={precision}"]
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            stderr.seek(0)
            sys.exit(f"bench: the default training run failed: {stderr.read().decode(errors='replace').strip()}")
    summary = json.loads((out / "summary.json").read_text())
    children_max_rss = usage.ru_maxrss * 1024  # kB on Linux
    return {
        "asked": f"{engine}/{precision}",
        "engine": summary.get("engine", engine),
        "precision": summary.get("precision", precision),
        "command_seconds": wall,
        "test_accuracy": summary["test_accuracy"],
        "train_samples_per_second": summary["train_samples_per_second"],
        "peak_memory_bytes": summary["peak_memory_bytes"],
        "peak_memory_kind": summary["peak_memory_kind"],
        "process_max_rss_bytes": children_max_rss,
    }


def help_seconds(repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mnist_ffn", "--help"], capture_output=True, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def grad_norms_cost(data_dir: Path, device: torch.device, batch_sizes: list[int], rounds: int, results: dict) -> None:
    """(f) and (i), each with and without recording gradient norms, interleaved; the best of `rounds` each."""
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-bench-") as temp:
        for batch_size in batch_sizes:
            best: dict[str, float] = {}
            for _ in range(rounds):
                for precision, grad_norms in itertools.product(("fp32", "bf16"), (True, False)):
                    name = f"loop_backprop_{precision}_{'norms' if grad_norms else 'no_norms'}"
                    loop = mnist_ffn_loop(data_dir, batch_size, device, Path(temp), "backprop", precision, grad_norms)
                    best[name] = max(best.get(name, 0.0), loop)
            for precision in ("fp32", "bf16"):
                with_norms, without = (
                    best[f"loop_backprop_{precision}_norms"],
                    best[f"loop_backprop_{precision}_no_norms"],
                )
                best[f"{precision}_with_over_without"] = with_norms / without
                print(
                    f"batch {batch_size:>4}, {precision}: mnist-ffn's loop {with_norms:>8,.0f} samples/s with gradient "
                    f"norms, {without:>8,.0f} without: {with_norms / without:.3f}, recording costs "
                    f"{1 - with_norms / without:.1%} of an epoch",
                    flush=True,
                )
            results["batch_sizes"][str(batch_size)] = best


def whole_run_seconds(data_dir: Path, out: Path, flags: list[str]) -> tuple[float, dict]:
    """One whole `mnist-ffn train` process, start to exit: its wall seconds and summary."""
    command = [sys.executable, "-m", "mnist_ffn", "train", "--data-dir", str(data_dir), "--out", str(out), "--quiet"]
    started = time.perf_counter()
    subprocess.run([*command, "--force", *flags], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started, json.loads((out / "summary.json").read_text())


TENSORBOARD_RUNS = {  # the default run, and a 2-D one whose epochs last milliseconds: the per-epoch write's worst case
    "default MNIST run (5 epochs)": [],
    "circle, 300 epochs": ["--set", "data.dataset=circle", "--set", "train.epochs=300"],
}


def tensorboard_cost(data_dir: Path, rounds: int, results: dict) -> None:
    """Whole runs with TensorBoard's event files (`train.tensorboard = true`, the default where the package is
    installed) and without, interleaved; the best of `rounds` each: wall time and training samples/s."""
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-bench-") as temp:
        for name, flags in TENSORBOARD_RUNS.items():
            best: dict[str, list[float]] = {"on": [math.inf, 0.0], "off": [math.inf, 0.0]}
            for _ in range(rounds):
                for key, value in (("on", "true"), ("off", "false")):
                    seconds, summary = whole_run_seconds(
                        data_dir, Path(temp) / key, [*flags, "--set", f"train.tensorboard={value}"]
                    )
                    best[key][0] = min(best[key][0], seconds)
                    best[key][1] = max(best[key][1], summary["train_samples_per_second"])
            (on_seconds, on_rate), (off_seconds, off_rate) = best["on"], best["off"]
            results["tensorboard"][name] = {
                "seconds_with": on_seconds,
                "seconds_without": off_seconds,
                "samples_per_second_with": on_rate,
                "samples_per_second_without": off_rate,
                "seconds_with_over_without": on_seconds / off_seconds,
            }
            print(
                f"{name}: {on_seconds:.2f} s with TensorBoard's event files, {off_seconds:.2f} s without: "
                f"{on_seconds / off_seconds:.3f}; training {on_rate:,.0f} against {off_rate:,.0f} samples/s "
                f"({on_rate / off_rate:.3f})",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MNIST_FFN_DATA or ~/.cache/mnist-ffn")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--rounds", type=int, default=3, help="each figure is the best of this many rounds")
    parser.add_argument("--canonical-samples", type=int, default=12_800, help="samples timed per canonical round")
    parser.add_argument("--skip-default-run", action="store_true")
    parser.add_argument("--profile", action="store_true", help="show where a step of the backprop engine goes")
    parser.add_argument("--json-out", type=Path, default=Path("bench.json"))
    parser.add_argument("--grad-norms-only", action="store_true", help="only what recording gradient norms costs")
    parser.add_argument("--tensorboard-only", action="store_true", help="only what TensorBoard's event files cost")
    args = parser.parse_args()

    data_dir = resolve_data_dir(args.data_dir)
    device = pick_device(args.device)
    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    results: dict = {
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch_version": str(torch.__version__),
        "model": "-".join(map(str, WIDTHS)) + " relu",
        "sgd": {"lr": LR, "momentum": MOMENTUM},
        "rounds": args.rounds,
        "batch_sizes": {},
    }
    if args.tensorboard_only:
        results["tensorboard"] = {}
        tensorboard_cost(data_dir, args.rounds, results)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json_out}")
        return
    if args.grad_norms_only:
        grad_norms_cost(data_dir, device, batch_sizes, args.rounds, results)
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json_out}")
        return
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-bench-") as temp:
        workdir = Path(temp)
        if not args.skip_default_run:  # back to back, before this process warms anything for any of them
            # the first run times the step (unless cached), the timed one below reads the cache as users' runs do
            default_training_run(data_dir, workdir, args.device, "auto", "auto", "first")
            results["default_runs"] = [
                default_training_run(data_dir, workdir, args.device, engine, precision)
                for engine, precision in DEFAULT_RUNS
            ]
        torchvision_root = prepare_torchvision_root(data_dir, workdir)
        for batch_size in batch_sizes:
            figures = ["canonical", "mnist_ffn", "ceiling", "bare_torch_step", "backprop", "loop_backprop", "bf16"]
            figures += ["backprop_bf16", "loop_backprop_bf16", "loop_autograd_bf16", "loop_backprop_bf16_no_norms"]
            best = dict.fromkeys(figures, 0.0)
            for _ in range(args.rounds):
                unrecorded = mnist_ffn_loop(data_dir, batch_size, device, workdir, "backprop", "bf16", False)
                best["loop_backprop_bf16_no_norms"] = max(best["loop_backprop_bf16_no_norms"], unrecorded)
                best["ceiling"] = max(best["ceiling"], ceiling(batch_size, device, samples=50_000))
                best["bf16"] = max(best["bf16"], ceiling(batch_size, device, 50_000, torch.bfloat16))
                best["bare_torch_step"] = max(best["bare_torch_step"], bare_torch_step(batch_size, device, 50_000))
                best["canonical"] = max(
                    best["canonical"], canonical_loop(torchvision_root, batch_size, device, args.canonical_samples)
                )
                best["mnist_ffn"] = max(
                    best["mnist_ffn"], mnist_ffn_loop(data_dir, batch_size, device, workdir, "autograd")
                )
                best["backprop"] = max(best["backprop"], backprop_step(batch_size, device, 50_000))
                best["loop_backprop"] = max(
                    best["loop_backprop"], mnist_ffn_loop(data_dir, batch_size, device, workdir, "backprop")
                )
                best["backprop_bf16"] = max(best["backprop_bf16"], backprop_step(batch_size, device, 50_000, "bf16"))
                for engine in ("backprop", "autograd"):
                    loop = mnist_ffn_loop(data_dir, batch_size, device, workdir, engine, "bf16")
                    best[f"loop_{engine}_bf16"] = max(best[f"loop_{engine}_bf16"], loop)
            best["b_over_a"] = best["mnist_ffn"] / best["canonical"]
            best["b_over_c"] = best["mnist_ffn"] / best["ceiling"]
            best["b_over_d"] = best["mnist_ffn"] / best["bare_torch_step"]
            best["d_over_c"] = best["bare_torch_step"] / best["ceiling"]
            best["e_over_c"] = best["backprop"] / best["ceiling"]
            best["e_over_d"] = best["backprop"] / best["bare_torch_step"]
            best["f_over_b"] = best["loop_backprop"] / best["mnist_ffn"]
            best["g_over_c"] = best["bf16"] / best["ceiling"]
            best["e_over_g"] = best["backprop"] / best["bf16"]
            best["h_over_c"] = best["backprop_bf16"] / best["ceiling"]
            best["h_over_g"] = best["backprop_bf16"] / best["bf16"]
            best["i_over_f"] = best["loop_backprop_bf16"] / best["loop_backprop"]
            best["i_over_j"] = best["loop_backprop_bf16"] / best["loop_autograd_bf16"]
            best["i_over_k"] = best["loop_backprop_bf16"] / best["loop_backprop_bf16_no_norms"]
            results["batch_sizes"][str(batch_size)] = best
            print(
                f"batch {batch_size:>4}: (a) canonical {best['canonical']:>8,.0f}  "
                f"(b) mnist-ffn {best['mnist_ffn']:>8,.0f}  (c) ceiling {best['ceiling']:>8,.0f} samples/s   "
                f"b/a {best['b_over_a']:.2f}  b/c {best['b_over_c']:.2f}   "
                f"[(d) bare torch step {best['bare_torch_step']:,.0f}: b/d {best['b_over_d']:.2f}  "
                f"d/c {best['d_over_c']:.2f}]",
                flush=True,
            )
            print(
                f"            (e) backprop engine's step {best['backprop']:>8,.0f}  e/c {best['e_over_c']:.2f}  "
                f"e/g {best['e_over_g']:.2f}  e/d {best['e_over_d']:.2f}   (f) mnist-ffn loop with it "
                f"{best['loop_backprop']:>8,.0f}  f/b {best['f_over_b']:.2f}",
                flush=True,
            )
            print(
                f"            (g) the products in bf16 {best['bf16']:>8,.0f}  g/c {best['g_over_c']:.2f} (the fp32 "
                f"ceiling is not the machine's where g/c > 1)",
                flush=True,
            )
            print(
                f"            (h) backprop engine's step in bf16 {best['backprop_bf16']:>8,.0f}  h/c "
                f"{best['h_over_c']:.2f}  h/g {best['h_over_g']:.2f}   (i) mnist-ffn loop with it "
                f"{best['loop_backprop_bf16']:>8,.0f}  i/f {best['i_over_f']:.2f}   (j) loop with autograd in bf16 "
                f"{best['loop_autograd_bf16']:>8,.0f}  i/j {best['i_over_j']:.2f}",
                flush=True,
            )
            print(
                f"            (k) (i) without gradient norms {best['loop_backprop_bf16_no_norms']:>8,.0f}  i/k "
                f"{best['i_over_k']:.3f}: recording them costs {1 - best['i_over_k']:.1%} of an epoch",
                flush=True,
            )
        if args.profile:
            for batch_size in batch_sizes:
                figures = results["batch_sizes"][str(batch_size)]
                for precision in ("fp32", "bf16"):
                    figures[f"profile_{precision}"] = profile_engine(batch_size, device, precision)
    results["help_seconds"] = help_seconds()
    print(
        f"device: {results['device']} ({results['device_name']}), {results['threads']} threads, "
        f"torch {results['torch_version']}"
    )
    for run in results.get("default_runs", []):
        print(
            f"default `mnist-ffn train`, {run['asked']} -> {run['engine']} in {run['precision']}: "
            f"{run['command_seconds']:.1f} s process start to "
            f"exit, test accuracy {run['test_accuracy']:.2%}, peak RSS {run['process_max_rss_bytes'] / 2**20:,.0f} "
            f"MiB ({run['process_max_rss_bytes'] / 1e9:.2f} GB)"
        )
    runs = {run["asked"]: run for run in results.get("default_runs", [])}
    if runs:
        chosen, fp32 = runs["auto/auto"], runs["backprop/fp32"]
        ratio = chosen["train_samples_per_second"] / fp32["train_samples_per_second"]
        results["default_run_training_throughput_over_fp32"] = ratio
        print(
            f"default run's training throughput, as chosen ({chosen['engine']} in {chosen['precision']}) over the "
            f"fp32 backprop engine's: {chosen['train_samples_per_second']:,.0f} / "
            f"{fp32['train_samples_per_second']:,.0f} samples/s = {ratio:.2f}x"
        )
    print(f"`mnist-ffn --help`: {results['help_seconds']:.2f} s")
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
