"""A picture of TensorBoard's scalars for a `compare` folder: one curve per activation, as the docs show it.

Runs `mnist-ffn compare` on a 2-D set (or takes a compare folder already made), starts TensorBoard on it on a free
loopback port, opens its Scalars dashboard in headless Chromium, waits until every chart has drawn its curves, and
saves a screenshot. Needs the tensorboard extra, Selenium (the test extra), Chromium and chromedriver
(/usr/bin/chromium, /usr/bin/chromedriver on Debian).

    python scripts/tensorboard_screenshot.py --out docs/tensorboard-compare.png
    python scripts/tensorboard_screenshot.py --compare runs/compare-circle --out picture.png
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/browser.py: the tests' own Chromium, with the flags it needs
from tests.browser import CHROMEDRIVER, CHROMIUM, DIRECT, chromium, free_port  # noqa: E402

# The charts' curves: SVG paths of many points, inside the dashboard's shadow roots (a document-wide query sees only
# the icons)
CURVES = """
const count = (root) => [...root.querySelectorAll("*")].reduce((found, element) =>
  found + (element.tagName === "path" && (element.getAttribute("d") || "").length > 200 ? 1 : 0)
        + (element.shadowRoot ? count(element.shadowRoot) : 0), 0);
return count(document);
"""


def make_compare(folder: Path, dataset: str, hidden: str) -> Path:
    command = [sys.executable, "-m", "mnist_ffn", "compare", "--dataset", dataset, "--out", str(folder)]
    subprocess.run([*command, "--set", f"model.hidden={hidden}", "--force"], check=True, stdout=subprocess.DEVNULL)
    return folder


def wait_for_tensorboard(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            sys.exit(f"tensorboard_screenshot: TensorBoard stopped: {process.stdout.read()}")
        try:
            with DIRECT.open(url + "data/runs", timeout=5) as response:
                if response.status == 200 and len(response.read()) > 2:  # runs listed: the files are read
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"tensorboard_screenshot: TensorBoard did not answer at {url} within {timeout:g} s")
        time.sleep(0.5)


def screenshot(url: str, out: Path, tags: str) -> None:
    with chromium() as driver:
        driver.set_window_size(1400, 1000)
        driver.get(f"{url}?darkMode=false#scalars&tagFilter={urllib.parse.quote(tags)}")
        deadline, last, steady = time.monotonic() + 90, -1, 0
        while steady < 3:  # the charts' lines drawn: their count unchanged for three seconds
            drawn = driver.execute_script(CURVES)
            steady = steady + 1 if drawn == last and drawn > 0 else 0
            last = drawn
            if time.monotonic() > deadline:
                sys.exit("tensorboard_screenshot: the charts did not draw within 90 s")
            time.sleep(1)
        driver.save_screenshot(str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", type=Path, help="a compare folder already made (default: make one)")
    parser.add_argument("--dataset", default="circle", help="the 2-D set compare trains on (default circle)")
    parser.add_argument("--hidden", default="[8,8,8,8]", help="model.hidden of compare's networks")
    parser.add_argument(
        "--tags",
        default=r"^(loss|accuracy)/val$|^gradient/norm_layer_(1|5)$",
        help="TensorBoard's tag filter, a regular expression (default: validation loss and accuracy, and the lowest "
        "and output layers' gradient norms of a 4-hidden-layer network)",
    )
    parser.add_argument("--out", type=Path, default=Path("tensorboard-compare.png"))
    args = parser.parse_args()
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            sys.exit(f"tensorboard_screenshot: needs {path} (Debian: apt-get install chromium chromium-driver)")
    with tempfile.TemporaryDirectory(prefix="mnist-ffn-tensorboard-") as temp:
        folder = args.compare or make_compare(Path(temp) / "compare", args.dataset, args.hidden)
        port = free_port()
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(folder), "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*command, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_for_tensorboard(url, process)
            screenshot(url, args.out, args.tags)
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
