"""`mnist-ffn demo`: the page's numbers against `predict`, bad input, and the page itself in a real Chromium.

The browser tests start `mnist-ffn demo` in real processes on free loopback ports (forked from the
tests' warm server, tests/forked.py) and drive headless Chromium with Selenium: draw with the mouse,
upload real MNIST test digits, read what the page shows. Without Chromium, its driver or Gradio they
skip, except under CI=true, where they fail.
"""

import gzip
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_ffn.inference.predict import predict_images
from mnist_ffn.web.demo import BLANK_HINT, MALFORMED_CALL, DemoModel, canvas_image, check_port, heatmap, respond
from tests.browser import DIRECT, PageServer, chromium, require_browser, wait_for
from tests.helpers import (
    TINY_FLAGS,
    assert_one_line_error,
    real_data_dir,
    run_cli,
)


def drawing(strokes, size=280) -> Image.Image:
    """Black strokes on a transparent canvas, as the Sketchpad sends them."""
    from PIL import ImageDraw

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        pen.line(stroke, fill=(0, 0, 0, 255), width=18)
    return image


# -- the page's numbers, without a browser ----------------------------------------------------------------------


def test_the_page_predicts_what_predict_predicts(tiny_run, tmp_path):
    image_path = tmp_path / "seven.png"
    drawing([[(60, 60), (220, 60), (120, 230)]]).save(image_path)
    checkpoint = tiny_run / "best.pt"
    page = DemoModel(checkpoint, device="cpu").answer(Image.open(image_path))
    report = predict_images(checkpoint, [image_path], device="cpu", top=10)
    expected = {row["class"]: row["probability"] for row in report["predictions"][0]["top"]}
    assert page.probabilities.keys() == expected.keys()
    for name, probability in expected.items():
        assert page.probabilities[name] == pytest.approx(probability, abs=1e-6)
    assert sum(page.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert [values.numel() for values in page.activations] == [512, 256]  # the default network's a = f(z)
    assert page.seen.size == (28, 28)


def test_a_blank_canvas_gives_the_hint_not_an_error(tiny_run):
    model = DemoModel(tiny_run / "best.pt", device="cpu")
    assert canvas_image({"composite": Image.new("RGBA", (280, 280), (0, 0, 0, 0)), "layers": []}) is None
    probabilities, seen, maps, message = respond(model, None)
    assert (probabilities, seen, maps, message) == (None, None, [None, None], BLANK_HINT)
    *_, message = respond(model, Image.new("RGB", (100, 100), "white"))  # uploaded, but holds nothing
    assert "blank" in message and BLANK_HINT in message


def test_heat_maps_hold_every_unit():
    image = heatmap(torch.linspace(-1.0, 3.0, 100))
    assert image.size == (10 * 8, 10 * 8)
    assert heatmap(torch.zeros(7)).size == (3 * 8, 3 * 8)  # a constant layer is all dark, not a division by zero


def test_a_file_that_is_not_a_checkpoint_is_refused_before_any_server_starts(tmp_path):
    not_one = tmp_path / "notes.pt"
    not_one.write_text("hello")
    assert_one_line_error(run_cli("demo", not_one, "--no-browser"), 1, "not a checkpoint")


def test_a_checkpoint_whose_data_set_disagrees_with_its_config_is_refused(tiny_run, tmp_path):
    checkpoint = torch.load(tiny_run / "best.pt", weights_only=True)
    checkpoint["dataset"] = "fashion-mnist"
    torch.save(checkpoint, tmp_path / "mixed.pt")
    assert_one_line_error(run_cli("demo", tmp_path / "mixed.pt", "--no-browser"), 1, "fashion-mnist", "its config")


def test_a_port_in_use_is_named(tiny_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("demo", tiny_run / "best.pt", "--no-browser", "--port", str(port))
    assert_one_line_error(result, 2, f"--port {port}", "in use")


def test_without_gradio_the_demo_says_how_to_install_it(tiny_run, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)
    assert_one_line_error(run_cli("demo", tiny_run / "best.pt", "--no-browser"), 1, "pip install 'mnist-ffn[demo]'")


# -- the page, in Chromium ------------------------------------------------------------------------------------------


def require_browser_and_gradio() -> None:
    require_browser("gradio")


@pytest.fixture(scope="module")
def servers(default_run, tmp_path_factory):
    """Two demo servers, each spending seconds importing Gradio while the next thing starts: the default MNIST
    network, and a Fashion-MNIST softmax regression (no hidden layer) trained here in a few seconds."""
    require_browser_and_gradio()
    started = {"mnist": PageServer("demo", default_run / "best.pt")}  # starts up while the Fashion checkpoint trains
    try:
        fashion = tmp_path_factory.mktemp("fashion") / "run"
        trained = run_cli("train", "--dataset", "fashion-mnist", "--data-dir", real_data_dir("FashionMNIST"),
                          "--out", fashion, "--quiet", "--set", "model.hidden=[]", "--set", "train.epochs=1",
                          "--set", "train.limit=5000", *TINY_FLAGS)  # fmt: skip
        assert trained.returncode == 0, trained.stderr
        started["fashion"] = PageServer("demo", fashion / "best.pt")  # starts up while Chromium does
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def browser(servers):
    """Headless Chromium, started while the demo servers start; it waits for them before any test uses it."""
    with chromium() as driver:
        for server in servers.values():
            server.wait_until_ready()
        yield driver


@pytest.fixture(scope="module")
def mnist_page(servers, browser):
    server = servers["mnist"]
    browser.get(server.url)
    wait_for(browser, lambda: browser.find_elements("css selector", "#canvas canvas"))
    return server


def message(browser) -> str:
    return browser.find_element("id", "message").text


def verdict(browser) -> str:
    """The class the page says the network reads."""
    return re.match(r"The network says \**(.+?)\** ", message(browser)).group(1)


def read_by_predict(checkpoint: Path, image: Path) -> str:
    """The class `mnist-ffn predict` reads in an image file: what the page must say of the same file."""
    result = run_cli("predict", checkpoint, image, "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["predictions"][0]["top"][0]["class"]


def shown_probabilities(browser) -> dict[str, float]:
    """The exact probabilities the page lists under its verdict, e.g. '0 0.001 · 1 0.990 · ...'."""
    line = message(browser).splitlines()[-1]
    return {name: float(value) for name, value in re.findall(r"(\S+(?: \S+)*?) (\d\.\d{3})(?: · |$)", line)}


def draw(browser, strokes) -> None:
    """Strokes on the canvas with the mouse; each stroke is a list of (x, y) offsets from its centre."""
    from selenium.webdriver.common.action_chains import ActionChains

    brush = browser.find_element("css selector", "#canvas button[aria-label='Brush']")
    wait_for(browser, lambda: "highlight" in brush.get_attribute("class"))  # the page picks up the brush itself
    canvas = browser.find_element("css selector", "#canvas canvas")
    for stroke in strokes:
        actions = ActionChains(browser, duration=50)
        actions.move_to_element_with_offset(canvas, *stroke[0]).click_and_hold()
        for point in stroke[1:]:
            actions.move_to_element_with_offset(canvas, *point)
        actions.release().perform()


def clear(browser) -> None:
    browser.find_element("id", "clear").click()
    wait_for(browser, lambda: message(browser) == BLANK_HINT)


def vertical_line():
    # a few points are enough (the brush joins them), and each pointer move costs headless Chromium ~0.3 s
    return [[(0, -100), (0, 0), (0, 100)]]


def test_a_stroke_gives_probabilities_and_a_panel_per_layer_and_clear_empties_the_page(browser, mnist_page):
    clear(browser)  # so that the answer waited for below is this stroke's, not one already on the page
    draw(browser, vertical_line())
    wait_for(browser, lambda: "The network says" in message(browser))
    probabilities = shown_probabilities(browser)
    assert sorted(probabilities) == [str(digit) for digit in range(10)]
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=0.006)  # ten values rounded to 3 decimals
    assert verdict(browser) == max(probabilities, key=probabilities.get)  # the verdict is the likeliest class
    label = browser.find_element("id", "probabilities").text
    assert all(str(digit) in label for digit in range(10)), label
    panels = browser.find_elements("css selector", "#layers .layer")
    titles = [panel.text for panel in panels]
    assert len(panels) == 2, titles
    assert "hidden layer 1: 512 units, a = relu(z)" in titles[0] and "hidden layer 2: 256 units" in titles[1]
    assert all(panel.find_elements("tag name", "img") for panel in panels), "each layer shows its heat map"
    assert browser.find_element("id", "seen").find_elements("tag name", "img"), "the 28x28 input is shown"

    clear(browser)
    # the page redraws its outputs one by one after the message: each must end up empty, and stay so
    wait_for(browser, lambda: not browser.find_element("id", "seen").find_elements("tag name", "img"))
    wait_for(browser, lambda: "Empty value" in browser.find_element("id", "probabilities").get_attribute("innerHTML"))
    time.sleep(1)  # no answer still on its way may land on the cleared page
    assert "Empty value" in browser.find_element("id", "probabilities").get_attribute("innerHTML")
    assert not browser.find_element("id", "seen").find_elements("tag name", "img")
    assert message(browser) == BLANK_HINT


def test_screenshot_of_a_drawn_seven(browser, mnist_page, tmp_path):
    """The README's screenshot: MNIST_FFN_SCREENSHOT=docs/demo.png python -m pytest tests/test_demo.py -k screenshot
    (what a network reads in three strokes depends on the network, so only the README's picture insists on a 7)"""
    clear(browser)
    draw(browser, [[(-70, -90), (70, -90), (-10, 100)]])  # a seven: the bar, then the stem
    wait_for(browser, lambda: "The network says" in message(browser))
    probabilities = shown_probabilities(browser)
    assert verdict(browser) == max(probabilities, key=probabilities.get)
    if "MNIST_FFN_SCREENSHOT" in os.environ:
        assert verdict(browser) == "7", "the README's picture shows a seven read as one"
    browser.execute_script("window.scrollTo(0, 0)")
    target = Path(os.environ.get("MNIST_FFN_SCREENSHOT", tmp_path / "demo.png"))
    assert browser.save_screenshot(str(target))
    assert Image.open(target).size[0] >= 1000


def test_uploads_that_are_not_images_or_too_large_get_a_message_then_real_digits_are_read_as_predict_does(
    browser, mnist_page, default_run, tmp_path
):
    def upload(path: Path) -> None:
        clear(browser)
        browser.find_element("css selector", "#upload input[type=file]").send_keys(str(path))

    fake = tmp_path / "not-an-image.png"
    fake.write_text("these are words, not pixels")
    upload(fake)
    wait_for(browser, lambda: "not an image" in message(browser) or "rror" in message(browser))
    assert mnist_page.process.poll() is None, "the server keeps running"
    huge = tmp_path / "huge.png"
    Image.new("L", (8000, 6000), 255).save(huge)  # 48 megapixels in a small file: refused before decoding
    upload(huge)
    wait_for(browser, lambda: "too large" in message(browser))
    assert mnist_page.process.poll() is None, "the server keeps running"

    # ... and carries on: two real MNIST test digits, as a photo of ink on paper would be them, read as `predict`
    # reads the same files
    images, _ = real_test_digits(2)
    for index, pixels in enumerate(images):
        path = tmp_path / f"digit-{index}.png"
        Image.fromarray(255 - pixels).resize((112, 112), Image.Resampling.BILINEAR).save(path)  # dark on light
        upload(path)
        wait_for(browser, lambda: "The network says" in message(browser))
        assert verdict(browser) == read_by_predict(default_run / "best.pt", path), message(browser)


def test_a_fashion_checkpoint_without_hidden_layers_shows_class_names(browser, servers):
    browser.get(servers["fashion"].url)
    wait_for(browser, lambda: browser.find_elements("css selector", "#canvas canvas"))
    assert "Fashion-MNIST" in browser.find_element("id", "header").text
    draw(browser, vertical_line())
    wait_for(browser, lambda: "The network says" in message(browser))
    label = browser.find_element("id", "probabilities").text
    for name in ("T-shirt/top", "Trouser", "Ankle boot"):
        assert name in label, label
    assert set(shown_probabilities(browser)) >= {"Trouser", "Ankle boot"}
    assert not browser.find_elements("css selector", "#layers .layer")
    assert "softmax regression" in browser.find_element("id", "layers").text


def real_test_digits(count: int):
    """The first `count` MNIST test images (28x28 uint8) and their labels, read from the real files."""
    import numpy

    raw = real_data_dir() / "MNIST" / "raw"
    images = gzip.decompress((raw / "t10k-images-idx3-ubyte.gz").read_bytes())[16:]
    labels = gzip.decompress((raw / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:]
    pixels = numpy.frombuffer(images, dtype=numpy.uint8).reshape(-1, 28, 28)
    return [pixels[index].copy() for index in range(count)], [labels[index] for index in range(count)]


def api(server: PageServer, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    """One raw HTTP POST to the server, as any program on this machine could send: (status, body)."""
    request = urllib.request.Request(server.url + path.lstrip("/"), data=body, headers={"Content-Type": content_type})
    try:
        with DIRECT.open(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def api_call(server: PageServer, endpoint: str, data) -> str:
    """A call to one of the page's endpoints through Gradio's HTTP API: the event stream of its answer."""
    status, body = api(server, f"gradio_api/call/{endpoint}", json.dumps({"data": data}).encode())
    assert status == 200, body
    event = json.loads(body)["event_id"]
    with DIRECT.open(f"{server.url}gradio_api/call/{endpoint}/{event}", timeout=30) as response:
        return response.read().decode()


def test_malformed_api_calls_get_one_message_and_leave_no_traceback_on_the_server(servers, default_run, tmp_path):
    server = servers["mnist"]
    server.wait_until_ready()
    file_meta = {"_type": "gradio.FileData"}
    for endpoint, data in [
        ("from_canvas", ["not a drawing"]),
        ("from_canvas", [{"composite": {"path": "/etc/passwd"}}]),  # a path the page never uploaded
        ("from_canvas", []),  # no input at all
        ("from_canvas", [1, 2, 3]),
        ("from_upload", [{"path": "/etc/passwd", "meta": file_meta}]),
        ("from_upload", [{"path": 5}]),
        ("from_upload", ["garbage"]),
    ]:
        answer = api_call(server, endpoint, data)
        assert "event: error" in answer and MALFORMED_CALL in answer, (endpoint, data, answer)
        assert "/etc" not in answer.replace(json.dumps(data), "") and "Traceback" not in answer
    # requests that fail before any page code runs: an unknown endpoint or function, a body that is not one
    assert api(server, "gradio_api/run/no_such_endpoint", b'{"data": []}')[0] >= 400
    assert api(server, "gradio_api/queue/join", b'{"data": [1], "fn_index": 999, "session_hash": "x"}')[0] >= 400
    assert api(server, "gradio_api/upload", b"garbage", "multipart/form-data; boundary=xyz")[0] == 400
    assert 400 <= api(server, "gradio_api/call/from_canvas", b"\xff\xfe{")[0] < 500  # not JSON, not even UTF-8

    # ... and the server still answers a real upload, made through the same API
    images, _ = real_test_digits(1)
    digit = tmp_path / "digit.png"
    Image.fromarray(255 - images[0]).resize((112, 112)).save(digit)
    boundary = "mnist-ffn-test"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="digit.png"\r\n\r\n'
    body = head.encode() + digit.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, uploaded = api(server, "gradio_api/upload", body, f"multipart/form-data; boundary={boundary}")
    assert status == 200, uploaded
    answer = api_call(server, "from_upload", [{"path": json.loads(uploaded)[0], "orig_name": "digit.png",
                                               "meta": file_meta}])  # fmt: skip
    expected = read_by_predict(default_run / "best.pt", digit)
    assert "event: complete" in answer and f"The network says **{expected}**" in answer, answer

    assert server.process.poll() is None, "the server keeps running"
    stderr = server.process.output()[1]
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("mnist-ffn: warning: refused a malformed request") for line in lines), lines


def test_the_page_answers_only_this_machines_names_and_its_own_origin(servers):
    """Another web site in the same browser cannot use the page: not through a name of its own that resolves to
    127.0.0.1 (DNS rebinding: the Host header names it), nor by a script of its origin posting to the API."""
    server = servers["mnist"]
    server.wait_until_ready()

    def request(path: str, headers: dict, body: bytes | None = None) -> int:
        call = urllib.request.Request(server.url + path, data=body, headers=headers)
        try:
            with DIRECT.open(call, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert request("", {}) == 200
    assert request("", {"Host": "evil.example"}) == 403
    assert request("", {"Host": f"evil.example:{server.port}"}) == 403
    call = json.dumps({"data": [None]}).encode()
    json_body = {"Content-Type": "application/json"}
    assert request("gradio_api/call/from_canvas", {**json_body, "Origin": "http://evil.example"}, call) == 403
    assert request("gradio_api/call/from_canvas", {**json_body, "Origin": server.url.rstrip("/")}, call) == 200
    assert server.process.poll() is None


def test_a_port_whose_last_connections_wait_out_time_wait_is_free_again():
    """A demo stopped and started again on its port at once: the old connections' TIME_WAIT must not count."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the demo's web server (uvicorn) does
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = listener.accept()
            accepted.close()  # the server's side closes first, so its port waits in TIME_WAIT
            client.recv(1)
    check_port("127.0.0.1", port)  # raises UsageError if the port counted as in use
