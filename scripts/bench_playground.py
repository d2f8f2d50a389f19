"""Benchmark: how many pictures a second `mnist-ffn playground` draws while it trains a 2-8-8-2 network.

In one run, on one machine, for the Playground's circle with x1 and x2 in, two ReLU layers of 8 and two
classes out (2-8-8-2), batch 10, learning rate 0.1:

  (1) the page: `mnist-ffn playground --no-browser` in a fresh process, the page in headless Chromium, play
      pressed; redraws counted by the page itself (window.playground.redraws: each one a boundary, every
      neuron map, the weights and both curves drawn from a new frame) over --seconds of training, best of
      --rounds rounds;
  (2) the server alone: the same requests the page sends (train a slice, build the frame), back to back
      from Python with no browser, frames a second over the same time: what the page's figure is made of.

The target is 10 redraws a second; the ratio printed is (1) / 10.

    python scripts/bench_playground.py             # needs the demo extra, selenium and Chromium
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/browser.py: the tests' own Chromium

from tests.browser import chromium, free_port, wait_for, wait_until_served  # noqa: E402

SETTING = "dataset=circle&features=x1,x2&hidden=8,8&activation=relu&lr=0.1&batch=10"
TARGET = 10.0  # redraws a second, the issue's


def page_redraws_per_second(browser, url: str, seconds: float) -> tuple[float, int]:
    browser.get(f"{url}#{SETTING}")
    wait_for(browser, lambda: browser.execute_script("return window.playground.session"))
    before = browser.execute_script("return [window.playground.redraws, window.playground.epoch]")
    browser.find_element("id", "play").click()
    started = time.perf_counter()
    time.sleep(seconds)
    after = browser.execute_script("return [window.playground.redraws, window.playground.epoch]")
    elapsed = time.perf_counter() - started
    browser.find_element("id", "play").click()
    return (after[0] - before[0]) / elapsed, after[1] - before[1]


def server_frames_per_second(url: str, seconds: float) -> float:
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        with direct.open(request, timeout=30) as response:
            return json.loads(response.read())

    setting = dict(pair.split("=") for pair in SETTING.split("&"))
    session = post("api/session", {"setting": setting})["session"]
    frames, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        post("api/frame", {"session": session, "train": "play"})
        frames += 1
    return frames / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="training time per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    runs = tempfile.mkdtemp(prefix="bench-playground-")
    command = [sys.executable, "-m", "mnist_ffn", "playground", "--no-browser", "--port", str(port), "--runs", runs]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_served(url, server, lambda: "", time.monotonic())
        page, epochs, alone = [], [], []
        with chromium() as browser:
            for _ in range(args.rounds):  # interleaved: the page, then the server alone
                rate, trained = page_redraws_per_second(browser, url, args.seconds)
                page.append(rate)
                epochs.append(trained / args.seconds)
                alone.append(server_frames_per_second(url, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
    best = max(page)
    print(f"2-8-8-2 on the circle, batch 10, {args.rounds} rounds of {args.seconds:g} s, best of each:")
    print(f"  the page in Chromium:  {best:5.1f} redraws/s  ({max(epochs):.0f} epochs/s trained meanwhile)")
    print(f"  the server alone:      {max(alone):5.1f} frames/s")
    print(f"  page / target ({TARGET:g}/s):  {best / TARGET:.2f}x")


if __name__ == "__main__":
    main()
