"""Benchmark: mnist-ffn's training loop against the canonical DataLoader loop and the matmul ceiling.

In one run, on one machine, for the same model (784-512-512-10 ReLU) and the same SGD settings
(lr 0.01, momentum 0.9), at each batch size it measures training samples/s of

  (a) the canonical loop of the PyTorch examples: datasets.MNIST + ToTensor + Normalize + DataLoader,
  (b) mnist-ffn's own training loop (the code `mnist-ffn train` runs),
  (c) the ceiling: the same forward and backward matrix multiplications alone, on random data,
  (d) for the reader: a bare eager PyTorch step on random data already in memory (nn.Sequential forward,
      cross-entropy, autograd backward, the same fused torch.optim.SGD step), with no data pipeline and
      no bookkeeping: the best any eager nn.Sequential + torch.optim.SGD loop can do here,

and prints b/a and b/c, and b/d (how much mnist-ffn's loop adds) and d/c (how far eager PyTorch itself
stays from the ceiling). Each figure is the best of --rounds rounds, the rounds interleaved so that a
noisy neighbour hurts all three alike. It then times a whole default `mnist-ffn train` (process
start to exit; its test accuracy and peak resident memory) and `mnist-ffn --help`. The figures
are written as JSON with the device they ran on.

    python scripts/bench.py --data-dir ../shared/data [--device cpu|cuda] [--json-out bench.json]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnist_ffn.config import load_config
from mnist_ffn.data import DATASETS, FILE_NAMES, find_files
from mnist_ffn.datasets import resolve_data_dir
from mnist_ffn.devices import device_name, pick_device
from mnist_ffn.run_folder import RunFolder
from mnist_ffn.train import StopSignals, Trainer

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


def mnist_ffn_loop(data_dir: Path, batch_size: int, device: torch.device, workdir: Path) -> float:
    """(b) One epoch of mnist-ffn's own loop, timed by the loop itself (steps only, not evaluation)."""
    config = load_config(
        None,
        [
            f"model.hidden={WIDTHS[1:-1]}",
            "model.activation=relu",
            f"optim.lr={LR}",
            f"optim.momentum={MOMENTUM}",
            "optim.nesterov=false",
            "optim.weight_decay=0",
            "optim.schedule=constant",
            f"train.batch_size={batch_size}",
            "train.epochs=1",
        ],
    )
    run = RunFolder(workdir / f"loop-{batch_size}")
    run.create(force=True)
    trainer = Trainer(config, run, device, log=None, progress_bars=False, resume_command="")
    trainer.load_data(data_dir)
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


def ceiling(batch_size: int, device: torch.device, samples: int) -> float:
    """(c) Only the matrix products of one SGD step: addmm forward as nn.Linear does, mm backward."""
    generator = torch.Generator(device).manual_seed(0)

    def random(*shape):
        return torch.randn(*shape, generator=generator, device=device)

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


def default_training_run(data_dir: Path, workdir: Path, device: str) -> dict:
    """A whole `mnist-ffn train` with no config, as a user runs it: wall time, accuracy, peak RSS."""
    out = workdir / "default-run"
    command = [sys.executable, "-m", "mnist_ffn", "train", "--data-dir", str(data_dir), "--out", str(out)]
    started = time.perf_counter()
    result = subprocess.run([*command, "--quiet", "--device", device], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"bench: the default training run failed: {result.stderr.strip()}")
    summary = json.loads((out / "summary.json").read_text())
    children_max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # kB on Linux
    return {
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MNIST_FFN_DATA or ~/.cache/mnist-ffn")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--rounds", type=int, default=3, help="each figure is the best of this many rounds")
    parser.add_argument("--canonical-samples", type=int, default=12_800, help="samples timed per canonical round")
    parser.add_argument("--skip-default-run", action="store_true")
    parser.add_argument("--json-out", type=Path, default=Path("bench.json"))
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
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-bench-") as temp:
        workdir = Path(temp)
        if not args.skip_default_run:  # first, so that the RSS of this process's children is that run's
            results["default_run"] = default_training_run(data_dir, workdir, args.device)
        torchvision_root = prepare_torchvision_root(data_dir, workdir)
        for batch_size in batch_sizes:
            best = {"canonical": 0.0, "mnist_ffn": 0.0, "ceiling": 0.0, "bare_torch_step": 0.0}
            for _ in range(args.rounds):
                best["ceiling"] = max(best["ceiling"], ceiling(batch_size, device, samples=50_000))
                best["bare_torch_step"] = max(best["bare_torch_step"], bare_torch_step(batch_size, device, 50_000))
                best["canonical"] = max(
                    best["canonical"], canonical_loop(torchvision_root, batch_size, device, args.canonical_samples)
                )
                best["mnist_ffn"] = max(best["mnist_ffn"], mnist_ffn_loop(data_dir, batch_size, device, workdir))
            best["b_over_a"] = best["mnist_ffn"] / best["canonical"]
            best["b_over_c"] = best["mnist_ffn"] / best["ceiling"]
            best["b_over_d"] = best["mnist_ffn"] / best["bare_torch_step"]
            best["d_over_c"] = best["bare_torch_step"] / best["ceiling"]
            results["batch_sizes"][str(batch_size)] = best
            print(
                f"batch {batch_size:>4}: (a) canonical {best['canonical']:>8,.0f}  "
                f"(b) mnist-ffn {best['mnist_ffn']:>8,.0f}  (c) ceiling {best['ceiling']:>8,.0f} samples/s   "
                f"b/a {best['b_over_a']:.2f}  b/c {best['b_over_c']:.2f}   "
                f"[(d) bare torch step {best['bare_torch_step']:,.0f}: b/d {best['b_over_d']:.2f}  "
                f"d/c {best['d_over_c']:.2f}]",
                flush=True,
            )
    results["help_seconds"] = help_seconds()
    print(
        f"device: {results['device']} ({results['device_name']}), {results['threads']} threads, "
        f"torch {results['torch_version']}"
    )
    if "default_run" in results:
        run = results["default_run"]
        print(
            f"default `mnist-ffn train`: {run['command_seconds']:.1f} s process start to exit, "
            f"test accuracy {run['test_accuracy']:.2%}, peak RSS {run['process_max_rss_bytes'] / 2**20:,.0f} MiB "
            f"({run['process_max_rss_bytes'] / 1e9:.2f} GB)"
        )
    print(f"`mnist-ffn --help`: {results['help_seconds']:.2f} s")
    args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
