"""Benchmark: how fast `mnist-ffn demo` answers a drawing, and how soon its page is ready.

In one run, on one machine:

  (1) server side, per drawing: from the canvas image Gradio hands the page's function (a 280x280 RGBA
      image) to every output ready to send (probabilities, the 28x28 input and one heat map per hidden
      layer, each image encoded as Gradio encodes it, WebP), median and 95th percentile over 100 random
      drawings, after 5 warm-up drawings;
  (2) page ready: from starting `mnist-ffn demo CHECKPOINT --no-browser` to the first HTTP 200 of its page,
      best of --starts starts.

    python scripts/bench_demo.py CHECKPOINT        # e.g. runs/<default run>/best.pt
"""

from __future__ import annotations

import argparse
import io
import random
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image, ImageDraw

from mnist_ffn.web.demo import DemoModel, canvas_image, respond


def random_drawing(generator: random.Random, size: int = 280) -> dict:
    """A Sketchpad value: black strokes of a few points each on a transparent canvas."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    for _ in range(generator.randint(1, 3)):
        points = [(generator.randint(40, 240), generator.randint(40, 240)) for _ in range(generator.randint(2, 5))]
        pen.line(points, fill=(0, 0, 0, 255), width=18, joint="curve")
    return {"background": None, "layers": [image], "composite": image}


def answer_seconds(model: DemoModel, drawing: dict) -> float:
    started = time.perf_counter()
    probabilities, seen, maps, _ = respond(model, canvas_image(drawing))
    for image in [seen, *maps]:
        image.save(io.BytesIO(), format="webp")  # what Gradio does with each output image
    assert probabilities is not None
    return time.perf_counter() - started


def page_ready_seconds(checkpoint: Path) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    started = time.perf_counter()
    command = [sys.executable, "-m", "mnist_ffn", "demo", str(checkpoint), "--no-browser", "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if process.poll() is not None:
                sys.exit(f"bench_demo: the demo server ended with exit code {process.returncode}")
            try:
                with direct.open(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--drawings", type=int, default=100)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()

    model = DemoModel(args.checkpoint, device="cpu")
    generator = random.Random(0)
    for _ in range(5):
        answer_seconds(model, random_drawing(generator))
    times = sorted(answer_seconds(model, random_drawing(generator)) for _ in range(args.drawings))
    median, p95 = statistics.median(times), times[int(0.95 * (len(times) - 1))]
    ready = min(page_ready_seconds(args.checkpoint) for _ in range(args.starts))
    import torch

    widths = "-".join(str(width) for width in [784, *model.config.model.hidden, len(model.classes)])
    print(f"model: {widths} {model.config.model.activation}, cpu, {torch.get_num_threads()} threads")
    print(f"(1) canvas image to all outputs: median {median * 1e3:.1f} ms, 95th percentile {p95 * 1e3:.1f} ms "
          f"over {len(times)} drawings")  # fmt: skip
    print(f"(2) page ready {ready:.1f} s after the command starts (best of {args.starts})")


if __name__ == "__main__":
    main()
