"""Benchmark: what `mnist-ffn sweep` costs over running the same trainings by hand, and what two workers buy.

In one run, on one machine, for K smoke-sized trials (configs/smoke.toml, seeds 0..K-1):

  (seq)  K whole `mnist-ffn train` commands back to back, as a shell loop would run them,
  (w1)   `mnist-ffn sweep` of the same K runs with one worker,
  (w2)   the same sweep with two workers,

and prints the sweep's overhead per trial with one worker as a fraction of one smoke trial,
(w1 - seq) / K / (seq / K), and the wall-time ratios w2 / seq and w2 / w1. Each sweep starts from an
empty folder. A smoke trial is short, so a whole command is mostly Python and torch starting up: the
sweep's long-lived workers pay that once, which is why w1 < seq.

    python scripts/bench_sweep.py --data-dir ../shared/data [--trials 6]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    cli = [sys.executable, "-m", "mnist_ffn"]
    smoke = PROJECT_ROOT / "configs" / "smoke.toml"
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
        root = Path(scratch)
        spec = root / "smoke-sweep.toml"
        seeds = ", ".join(str(seed) for seed in range(args.trials))
        spec.write_text(
            f'[base]\nconfig = "{smoke}"\n\n[space]\nmodel.activation = ["relu"]\n\n'
            f'[sweep]\nseeds = [{seeds}]\npruner = "none"\n'
        )
        data = ["--data-dir", str(args.data_dir)]
        timed([*cli, "train", "--config", str(smoke), "--out", str(root / "warm-up"), "--quiet", *data])  # caches
        runs = [
            [*cli, "train", "--config", str(smoke), "--set", f"train.seed={seed}", "--out", str(root / f"{seed}")]
            for seed in range(args.trials)
        ]
        sequential = sum(timed([*run, "--quiet", *data]) for run in runs)
        one = timed([*cli, "sweep", str(spec), "--out", str(root / "w1"), "--workers", "1", "--quiet", *data])
        two = timed([*cli, "sweep", str(spec), "--out", str(root / "w2"), "--workers", "2", "--quiet", *data])
    trial = sequential / args.trials
    overhead = (one - sequential) / args.trials
    print(f"{args.trials} smoke trials (configs/smoke.toml), whole commands, wall seconds:")
    print(f"  (seq) mnist-ffn train x {args.trials} back to back  {sequential:7.1f} s  ({trial:.2f} s a trial)")
    print(f"  (w1)  mnist-ffn sweep --workers 1           {one:7.1f} s")
    print(f"  (w2)  mnist-ffn sweep --workers 2           {two:7.1f} s")
    print(f"sweep overhead per trial, 1 worker: {overhead:+.2f} s = {overhead / trial:+.1%} of a trial (target <= 10%)")
    print(f"two workers against the sequential runs: w2/seq = {two / sequential:.2f} (target <= 0.85)")
    print(f"two workers against one (the sweep's own scaling): w2/w1 = {two / one:.2f}")


if __name__ == "__main__":
    main()
