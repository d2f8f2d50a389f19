"""The lesson on the 2-D sets: `mnist-ffn compare --dataset D` over several seeds, as mean ± std tables.

    python scripts/lesson_2d.py --seeds 0 1 2 3 4 --datasets circle xor spiral --out runs/lesson-2d

Prints one Markdown table per data set (test accuracy of each activation, mean ± standard deviation over
the seeds), with each data set's own defaults, and draws the boundaries of the first seed side by side
(OUT/<dataset>-seed<seed>/boundaries.png, with the plot extra).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ACTIVATIONS = "identity,sigmoid,tanh,relu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--datasets", nargs="+", default=["circle", "xor", "spiral"])
    parser.add_argument("--out", type=Path, default=Path("runs/lesson-2d"))
    args = parser.parse_args()
    for dataset in args.datasets:
        accuracies: dict[str, list[float]] = {}
        started = time.perf_counter()
        for seed in args.seeds:
            out = args.out / f"{dataset}-seed{seed}"
            command = [sys.executable, "-m", "mnist_ffn", "compare", "--dataset", dataset, "--activations",
                       ACTIVATIONS, "--set", f"train.seed={seed}", "--out", str(out), "--quiet"]  # fmt: skip
            subprocess.run(command, check=True)
            for row in json.loads((out / "compare.json").read_text())["results"]:
                accuracies.setdefault(row["activation"], []).append(row["test_accuracy"] * 100)
        seconds = time.perf_counter() - started
        subprocess.run([sys.executable, "-m", "mnist_ffn", "plot", str(args.out / f"{dataset}-seed{args.seeds[0]}")])
        comparison = json.loads((args.out / f"{dataset}-seed{args.seeds[0]}" / "compare.json").read_text())
        print(f"\n{dataset}: {comparison['architecture']}, {comparison['epochs']} epochs, seeds "
              f"{', '.join(map(str, args.seeds))} ({seconds:.0f} s in all)\n")  # fmt: skip
        print("| activation | test accuracy, mean ± std | lowest |")
        print("| --- | --- | --- |")
        for activation, values in accuracies.items():
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"| {activation} | {statistics.mean(values):.1f} ± {spread:.1f}% | {min(values):.1f}% |")


if __name__ == "__main__":
    main()
