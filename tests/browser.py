"""Headless Chromium and loopback servers for the page tests (the demo's and the playground's).

Without Chromium or its driver the page tests skip, except under CI=true, where they fail.
"""

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from tests.helpers import free_port, require, require_modules, start_forked

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1300",
]
# No proxy for the loopback server: urllib's default opener keeps whatever proxy it first saw in the
# environment, and other tests point it at a closed port to stand for "no network".
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def require_browser(*modules: str) -> None:
    require(CHROMIUM.exists() and CHROMEDRIVER.exists(), f"Chromium ({CHROMIUM}) and its driver ({CHROMEDRIVER})")
    require_modules("selenium", *modules, install="pip install -e '.[test,demo]'")


@contextmanager
def chromium(downloads: Path | None = None):
    """A headless Chromium with a fresh profile (and downloads saved into `downloads`), quit afterwards."""
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="mnist-ffn-chromium-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(browser, condition, timeout: float = 30, what="the page did not get there in time"):
    """Poll `condition` until it returns something true; on time out, the page's state (`what`, or what it returns
    then when it is a function) and a screenshot for the person debugging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    screenshot = Path(tempfile.gettempdir()) / f"mnist-ffn-page-failure-{os.getpid()}.png"  # one per worker
    browser.save_screenshot(str(screenshot))
    raise AssertionError(f"{what() if callable(what) else what} (the page: {screenshot})")


class PageServer:
    """`mnist-ffn COMMAND ... --no-browser` in a real process on a free loopback port, stopped afterwards.

    The process is forked from the tests' warm server (tests/forked.py), so it pays Gradio's or FastAPI's
    import but not torch's; scripts/bench_demo.py times the page of a fresh `mnist-ffn demo` as a user starts it."""

    def __init__(self, *args: object):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = start_forked(*map(str, args), "--no-browser", "--port", str(self.port))
        self.started = time.monotonic()

    def wait_until_ready(self) -> None:
        try:
            wait_until_served(self.url, self.process, self.output, self.started)
        except BaseException:
            self.stop()  # a server that never came up must not outlive the test
            raise

    def output(self) -> str:
        return "".join(self.process.output())[-3000:]

    def stop(self) -> tuple[str, str]:
        """SIGTERM, as Ctrl-C's sibling; what the server wrote to stdout and stderr."""
        self.process.terminate()
        try:
            return self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.communicate()


def wait_until_served(url: str, process, output, started: float, timeout: float = 60) -> None:
    """Until `url` answers 200; fails at once, with the server's output, if its process ends first."""
    deadline = started + timeout
    while True:
        assert process.poll() is None, output()
        try:
            with DIRECT.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up within {timeout:g} s: {output()}"
        time.sleep(0.1)
