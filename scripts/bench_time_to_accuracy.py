"""Benchmark: the whole-process time to an accuracy, for the presets and two references, in one run.

In one run, on one machine, each figure the median of --rounds interleaved rounds (every round runs
every entry once, so a noisy neighbour hurts all alike):

  floor      `python -c "import torch"`: what any PyTorch program pays before its first step;
  fast       `mnist-ffn train --config fast`, process start to exit, and its test accuracy;
  default    `mnist-ffn train` (the default preset);
  best       `mnist-ffn train --config best` (with --best: minutes a round);
  ten-fp32   the default preset as it was before precisions were timed: 10 epochs, float32 products
             (`--set train.epochs=10 --set train.precision=fp32`), the yardstick of the default's time;
  canonical  scripts/canonical_mnist.py: the PyTorch examples' loop (datasets.MNIST, ToTensor, Normalize,
             DataLoader, loss.backward(), torch.optim.SGD) training the default preset's network with its
             recipe (widths, epochs, batch, SGD, label smoothing, cosine schedule), to the same accuracy.

It prints a table (seconds, test accuracy, the engine and precision each run chose, time over the floor), the ratio
canonical / default (how many times longer the usual loop takes to the same accuracy) and default / ten-fp32. The
presets' step choice is cached before the first clock starts (one untimed run each), as on any machine after its
first run. torchvision's MNIST class reads extracted
files, which are prepared before any clock starts: the canonical loop is not charged for them.

    python scripts/bench_time_to_accuracy.py --data-dir ../shared/data [--rounds 5] [--best]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from bench import prepare_torchvision_root  # noqa: E402

from mnist_ffn.api import resolve_config  # noqa: E402
from mnist_ffn.catalog import resolve_data_dir  # noqa: E402


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"bench: {' '.join(command)} failed: {finished.stderr.strip()[-2000:]}")
    return seconds, finished.stdout


PRESETS = {  # entry: (preset, extra settings)
    "fast": ("fast", []),
    "default": ("default", []),
    "best": ("best", []),
    "ten-fp32": ("default", ["train.epochs=10", "train.precision=fp32"]),
}
CHOSEN: dict[str, str] = {}  # entry: "engine/precision" as its summary.json says


def preset_run(name: str, data_dir: Path, workdir: Path, round_number: int):
    out = workdir / f"{name}-{round_number}"
    preset, settings = PRESETS[name]

    def run() -> tuple[float, float]:
        command = [sys.executable, "-m", "mnist_ffn", "train", "--config", preset, "--data-dir", str(data_dir)]
        command += [flag for setting in settings for flag in ("--set", setting)]
        seconds, _ = timed([*command, "--out", str(out), "--quiet", "--device", "cpu"])
        summary = json.loads((out / "summary.json").read_text())
        CHOSEN[name] = f"{summary['engine']}/{summary.get('precision', 'fp32')}"
        return seconds, summary["test_accuracy"]

    return run


def cache_the_step_choices(names: list[str], data_dir: Path, workdir: Path) -> None:
    """One short run of each preset's network and batch, so the timed runs read the step choice from the cache."""
    for name in names:
        preset, settings = PRESETS[name]
        out = workdir / f"{name}-warm"
        command = [sys.executable, "-m", "mnist_ffn", "train", "--config", preset, "--data-dir", str(data_dir)]
        short = [*settings, "train.epochs=1", "train.limit=1000"]
        command += [flag for setting in short for flag in ("--set", setting)]
        timed([*command, "--out", str(out), "--quiet", "--device", "cpu"])


def canonical_run(torchvision_root: Path):
    config = resolve_config("default")
    recipe = [
        "--hidden", ",".join(map(str, config.model.hidden)), "--epochs", str(config.train.epochs),
        "--batch-size", str(config.train.batch_size), "--lr", str(config.optim.lr),
        "--momentum", str(config.optim.momentum), "--weight-decay", str(config.optim.weight_decay),
        "--label-smoothing", str(config.train.label_smoothing),
    ]  # fmt: skip
    assert config.optim.schedule == "cosine" and config.optim.nesterov and not config.optim.warmup_epochs

    def run() -> tuple[float, float]:
        command = [sys.executable, str(ROOT / "scripts" / "canonical_mnist.py"), "--root", str(torchvision_root)]
        seconds, stdout = timed([*command, *recipe])
        return seconds, json.loads(stdout.strip().splitlines()[-1])["test_accuracy"]

    return run


def floor_run() -> tuple[float, float | None]:
    seconds, _ = timed([sys.executable, "-c", "import torch"])
    return seconds, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="default: $MNIST_FFN_DATA or ~/.cache/mnist-ffn")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--best", action="store_true", help="time the best preset too (minutes a round)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    names = ["fast", "default", *(["best"] if args.best else []), "ten-fp32"]
    times: dict[str, list[float]] = {name: [] for name in ["floor", *names, "canonical"]}
    accuracies: dict[str, list[float]] = {name: [] for name in times}
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-tta-") as temp:
        workdir = Path(temp)
        torchvision_root = prepare_torchvision_root(data_dir, workdir)
        cache_the_step_choices(names, data_dir, workdir)
        for round_number in range(args.rounds):
            entries = {"floor": floor_run}
            entries |= {name: preset_run(name, data_dir, workdir, round_number) for name in names}
            entries["canonical"] = canonical_run(torchvision_root)
            for name, run in entries.items():
                seconds, accuracy = run()
                times[name].append(seconds)
                if accuracy is not None:
                    accuracies[name].append(accuracy)
                print(f"round {round_number + 1}: {name:9s} {seconds:7.2f} s", file=sys.stderr, flush=True)
    median = {name: statistics.median(values) for name, values in times.items()}
    floor = median["floor"]
    print(f"median of {args.rounds} interleaved rounds, CPU, whole process:")
    print("| run | seconds | test accuracy | engine/precision | / floor |")
    print("| --- | --- | --- | --- | --- |")
    for name in times:
        accuracy = f"{100 * statistics.median(accuracies[name]):.2f}%" if accuracies[name] else "-"
        chosen = CHOSEN.get(name, "-")
        print(f"| {name} | {median[name]:.2f} | {accuracy} | {chosen} | {median[name] / floor:.2f}x |")
    ratio = median["canonical"] / median["default"]
    print(f"canonical / default: {ratio:.2f}x the time, to the same network's accuracy")
    print(f"default / ten-fp32: {median['default'] / median['ten-fp32']:.2f}x the time")
    if args.json_out:
        figures = {"seconds": times, "test_accuracy": accuracies, "chosen": CHOSEN}
        args.json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
