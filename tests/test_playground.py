"""`mnist-ffn playground`: its sessions against the CLI's own training, bad input, and the page in a real Chromium.

The browser tests start `mnist-ffn playground` in a real process on a free loopback port (forked from
the tests' warm server) and drive headless Chromium: press play, read what the page shows, upload CSVs,
download the checkpoint and hand it to `eval`. Without Chromium, its driver or the demo extra they skip,
except under CI=true, where they fail.
"""

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_ffn.errors import ConfigError, PointsError, UsageError
from mnist_ffn.training.checkpoint import load_checkpoint
from mnist_ffn.web.playground import MAX_WIDTH, Session, Setting, Uploads
from tests.browser import DIRECT, PageServer, chromium, require_browser, wait_for
from tests.helpers import assert_one_line_error, best_line_accuracy, free_port, run_cli

# -- sessions, without a browser ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _threads_back():
    """A session trains on one thread, for the whole server process: the tests' process gets its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_setting_out_of_range_is_refused_naming_every_control():
    with pytest.raises(ConfigError) as refused:
        Setting.parse({"lr": "50", "hidden": f"8,{MAX_WIDTH + 1}", "features": "x1,x3", "colour": "red"})
    assert refused.value.problems == ["colour: not a control of the playground"]
    with pytest.raises(ConfigError) as refused:
        Setting.parse({"lr": "50", "hidden": f"8,{MAX_WIDTH + 1}", "features": "x1,x3", "noise": "nan"})
    assert refused.value.problems == ["noise: must be a number, got 'nan'"]
    with pytest.raises(ConfigError) as refused:
        Setting.parse({"lr": "50", "hidden": f"8,{MAX_WIDTH + 1}", "features": "x1,x3", "batch": "2.5"})
    assert refused.value.problems == ["batch: must be a whole number, got '2.5'"]
    with pytest.raises(ConfigError) as refused:
        Setting.parse({"lr": "50", "hidden": f"8,{MAX_WIDTH + 1}", "features": "x1,x3", "dataset": "moons"})
    text = "\n".join(refused.value.problems)
    for expected in ("dataset: must be one of", "lr: must be between", "features: choose", f"1 to {MAX_WIDTH}"):
        assert expected in text
    with pytest.raises(ConfigError, match="at most 8 layers"):
        Setting.parse({"hidden": ",".join(["2"] * 9)})
    with pytest.raises(ConfigError, match="upload one"):
        Setting.parse({"dataset": "points"})
    assert Setting.parse({"hidden": "", "lr": "0.1"}).hidden == ()  # softmax regression is a network too


def test_a_session_trains_with_the_backprop_engine_and_its_loss_falls(tmp_path):
    session = Session(Setting.parse({"hidden": "8,8", "activation": "relu", "lr": "0.1"}), tmp_path / "s")
    assert session.trainer.engine.name == "backprop"
    first = session.frame()
    assert first.epoch == 0 and 0.3 < first.test_accuracy < 0.7  # untrained: a coin
    session.train(epochs=50)
    late = []  # SGD on batches of 10 has single epochs that dip: the best of the last ten says what it learnt
    for _ in range(10):
        session.train(epochs=1)
        late.append(session.frame().test_accuracy)
    last = session.frame()
    assert last.epoch == 60 and last.train_loss < first.train_loss / 4 and max(late) > 0.95, late
    assert [layer["width"] for layer in last.neurons] == [8, 8]
    assert len(last.neurons[0]["maps"]) == 8 * 24 * 24 and len(last.boundary_class) == 64 * 64
    assert [(layer["rows"], layer["columns"]) for layer in last.weights] == [(8, 2), (8, 8), (2, 8)]
    assert last.boundary_class != first.boundary_class


def test_a_learning_rate_that_diverges_stops_the_session_with_a_line(tmp_path):
    setting = Setting.parse({"hidden": "8,8,8", "activation": "identity", "lr": "10", "momentum": "0.9"})
    session = Session(setting, tmp_path / "s")
    session.train(epochs=50)
    assert session.stopped.startswith("the loss overflowed at epoch 1: the learning rate is too large")
    session.train(epochs=5)
    assert session.epoch == 0  # stopped for good: a new setting starts anew
    json.dumps(session.frame().to_json(), allow_nan=False)  # what the page gets is still JSON


def test_save_writes_an_ordinary_run_folder_that_train_reproduces_and_eval_reads(tmp_path):
    setting = Setting.parse({"dataset": "xor", "hidden": "6,3", "activation": "tanh", "l1": "0.001", "l2": "0.001",
                             "dropout": "0.1", "momentum": "0.5", "noise": "0.1", "seed": "7"})  # fmt: skip
    session = Session(setting, tmp_path / "session")
    session.train(epochs=25)
    saved = session.save(tmp_path / "saved")
    assert sorted(path.name for path in saved.iterdir()) == [
        "best.pt", "config.toml", "last.pt", "metrics.csv", "summary.json"
    ]  # fmt: skip
    summary = json.loads((saved / "summary.json").read_text())
    assert summary["epochs"] == 25 and summary["engine"] == "backprop"
    again = run_cli("train", "--config", saved / "config.toml", "--out", tmp_path / "again", "--quiet")
    assert again.returncode == 0, again.stderr
    for name in ("last.pt", "best.pt"):
        ours, theirs = load_checkpoint(saved / name)["model"], load_checkpoint(tmp_path / "again" / name)["model"]
        assert all(torch.equal(ours[key], theirs[key]) for key in ours), f"{name}: `train` made other weights"
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["test_accuracy"] == summary["test_accuracy"]
    evaluated = run_cli("eval", saved / "best.pt")
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{100 * summary['test_accuracy']:.2f}%" in evaluated.stdout
    resumed = run_cli("train", "--resume", saved, "--quiet")  # a finished run: nothing left to train
    assert resumed.returncode == 0, resumed.stderr
    session.train(epochs=1)
    assert session.save(tmp_path / "later").name == "later"  # the session trains on after a save
    assert json.loads((tmp_path / "later" / "summary.json").read_text())["epochs"] == 26


def test_an_uploaded_csv_is_checked_named_by_its_own_name_and_kept(tmp_path):
    uploads = Uploads(tmp_path / "uploads")
    bad = b"x1,x2,label\n1,2,0\n3,4,1\nfive,6,0\n"
    with pytest.raises(PointsError) as refused:
        uploads.add("../../my points.csv", bad)
    assert str(refused.value).startswith("my_points.csv, row 4: x1 and x2 must be numbers")
    with pytest.raises(PointsError, match="2 points; the playground trains on 20 to"):
        uploads.add("few.csv", b"1,2,0\n3,4,1\n")
    with pytest.raises(PointsError, match="not text"):
        uploads.add("photo.csv", bytes(range(256)))
    assert not (tmp_path / "uploads").exists(), "nothing refused is kept, nor a folder made for it"
    rows = "".join(f"{x},{y},{int(x > y)}\n" for x in range(-5, 5) for y in range(-5, 5))
    token, count, classes = uploads.add("line.csv", rows.encode())
    assert count == 100 and classes == ("0", "1")
    assert uploads.find(token).read_text() == rows


# -- the server and the page ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser("fastapi", "uvicorn")
    runs = tmp_path_factory.mktemp("playground") / "runs"
    started = PageServer("playground", "--runs", runs)
    started.runs = runs
    try:
        started.wait_until_ready()
        yield started
    finally:
        _, stderr = started.stop()
        assert "Traceback" not in stderr, stderr  # nothing any test sent made the server print one


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(server, downloads):
    with chromium(downloads) as driver:
        yield driver


def open_page(browser, server, setting: str = "") -> None:
    browser.get(f"{server.url}#{setting}")
    wait_for(
        browser, lambda: shown(browser)["epoch"] == 0 and browser.execute_script("return window.playground.session")
    )


NUMBERS = ("train-loss", "test-loss", "train-accuracy", "test-accuracy")
SHOWN = f"""const text = id => document.getElementById(id).innerText.trim();
const stats = document.getElementById("stats");
return [text("epoch"), text("message"), ...{list(NUMBERS)}.map(key => stats.getAttribute("data-" + key))];"""


def shown(browser) -> dict:
    """What the page shows: the epoch, the four numbers under Output, and the message line (read in one call:
    tests poll this, and each WebDriver call is a round trip through the driver and the browser)."""
    epoch_text, message_text, *numbers = browser.execute_script(SHOWN)
    epoch = re.fullmatch(r"epoch (\d+)", epoch_text)
    values = {key: float(number or "nan") for key, number in zip(NUMBERS, numbers, strict=True)}
    return {"epoch": int(epoch.group(1)) if epoch else None, **values, "message": message_text}


def boundary(browser) -> str:
    return browser.execute_script("return document.getElementById('boundary').toDataURL()")


def replayed(query: str, epochs: int, folder: Path, points_file: Path | None = None):
    """The frame of the page's setting (its link's `key=value` pairs) trained `epochs` epochs here, in this process:
    what the page must show after that many epochs on this machine, to the last bit."""
    from urllib.parse import parse_qsl

    session = Session(Setting.parse(dict(parse_qsl(query))), folder, points_file)
    session.train(epochs=epochs)
    return session.frame()


def assert_shows(page: dict, frame) -> None:
    """The page shows the frame's numbers, exactly."""
    for key in NUMBERS:
        assert page[key] == getattr(frame, key.replace("-", "_")), (key, page, frame)


def play_until(browser, epochs: int) -> dict:
    return play(browser, until=lambda page: page["epoch"] >= epochs, what=f"no epoch {epochs}")


def play(browser, until, what: str) -> dict:
    """Play until what the page shows satisfies `until`, then pause; what it shows once the last picture landed."""
    browser.find_element("id", "play").click()
    wait_for(browser, lambda: until(shown(browser)), timeout=60, what=lambda: f"{what}: {shown(browser)}")
    browser.find_element("id", "play").click()  # pause
    time.sleep(0.2)  # a picture still on its way lands
    return shown(browser)


def press_step(browser, times: int) -> dict:
    for _ in range(times):
        before = shown(browser)["epoch"]
        browser.find_element("id", "step").click()
        wait_for(browser, lambda before=before: shown(browser)["epoch"] == before + 1)
    return shown(browser)


def set_control(browser, element_id: str, value: str) -> None:
    element = browser.find_element("id", element_id)
    element.clear()
    element.send_keys(value)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", element)


def test_the_page_loads_with_the_playgrounds_first_network(browser, server):
    open_page(browser, server)
    page = shown(browser)
    assert 0.3 < page["test-accuracy"] < 0.7 and page["message"] == ""
    assert "dataset=circle" in browser.current_url and "hidden=4%2C2" in browser.current_url
    assert len(browser.find_elements("css selector", ".neuron")) == 6


def test_play_trains_the_loss_falls_and_the_boundary_changes(browser, server):
    open_page(browser, server, "dataset=circle&hidden=8,8&activation=relu&lr=0.1&batch=10")
    before, picture = shown(browser), boundary(browser)
    after = play_until(browser, 40)
    assert after["train-loss"] < before["train-loss"] / 3 and after["test-loss"] < before["test-loss"] / 3
    assert boundary(browser) != picture
    assert browser.execute_script("return window.playground.redraws") >= 2


def test_identity_on_the_circle_stays_near_chance_and_relu_separates_it(browser, server, tmp_path):
    """Played for as many epochs as this machine trains in the time it takes: identity has 100 epochs and does no
    better than a straight line; relu plays until it separates the disk (95%). Either way the page shows what the
    same setting trains to in that many epochs, here in the test's own process."""
    setting = "dataset=circle&hidden=8,8&activation=identity&lr=0.1&batch=10"
    open_page(browser, server, setting)
    page = play_until(browser, 100)
    frame = replayed(setting, page["epoch"], tmp_path / "identity")
    assert_shows(page, frame)
    session = Session(Setting.parse({"dataset": "circle"}), tmp_path / "points")
    assert 0.3 <= page["test-accuracy"] <= best_line_accuracy(session.raw.test_points, session.raw.test_labels)
    setting = setting.replace("identity", "relu")
    open_page(browser, server, setting)
    page = play(browser, until=lambda page: page["test-accuracy"] >= 0.95, what="relu under 95%")
    assert_shows(page, replayed(setting, page["epoch"], tmp_path / "relu"))


def test_the_neuron_panels_match_the_widths(browser, server):
    open_page(browser, server, "hidden=5,3,7")

    def widths():
        panels = browser.find_elements("css selector", ".neuron")
        layers = [int(panel.get_attribute("data-layer")) for panel in panels]
        return [layers.count(layer) for layer in sorted(set(layers))]

    assert widths() == [5, 3, 7]
    set_control(browser, "hidden", "2, 12")
    wait_for(browser, lambda: widths() == [2, 12])
    assert "hidden=2%2C12" in browser.current_url
    set_control(browser, "hidden", "")
    wait_for(browser, lambda: widths() == [] and browser.execute_script("return window.playground.session"))


def test_a_url_reproduces_a_setting_and_tabs_train_on_their_own(browser, server):
    open_page(browser, server)
    browser.find_element("css selector", "#dataset option[value='xor']").click()
    for control, value in (("lr", "0.1"), ("hidden", "6,3"), ("noise", "0.1"), ("seed", "3"), ("l2", "0.001")):
        set_control(browser, control, value)
    browser.find_element("css selector", "#activation option[value='relu']").click()
    browser.find_element("css selector", ".feature[value='x1*x2']").click()
    wait_for(browser, lambda: "features=x1%2Cx2%2Cx1*x2" in browser.current_url.replace("%2A", "*"))
    link = browser.current_url
    wait_for(browser, lambda: browser.execute_script("return window.playground.session"))
    first = press_step(browser, 5)
    first_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        open_page(browser, server, link.split("#", 1)[1])
        for control, value in (("lr", "0.1"), ("hidden", "6,3"), ("noise", "0.1"), ("seed", "3"), ("l2", "0.001")):
            assert browser.find_element("id", control).get_attribute("value") == value
        assert browser.find_element("id", "dataset").get_attribute("value") == "xor"
        assert browser.find_element("css selector", ".feature[value='x1*x2']").is_selected()
        second = press_step(browser, 5)
        assert second == first, "the same link, the same numbers"
        assert press_step(browser, 3)["epoch"] == 8
    finally:
        browser.close()
        browser.switch_to.window(first_tab)
    assert shown(browser) == first, "the other tab's training did not touch this one"
    assert press_step(browser, 1)["epoch"] == 6


def write_csv(path: Path, rows) -> Path:
    path.write_text("x1,x2,label\n" + "".join(f"{x1},{x2},{label}\n" for x1, x2, label in rows))
    return path


def test_a_csv_upload_trains_and_a_bad_one_gets_a_message_naming_the_row(browser, server, tmp_path):
    open_page(browser, server, "hidden=8,8&activation=relu&lr=0.1")
    generator = torch.Generator().manual_seed(0)
    points = (torch.rand(300, 2, generator=generator) * 20 - 10).tolist()
    rows = [(round(x1, 3), round(x2, 3), "abc"[int(x1 > 0) + int(x2 > 0)]) for x1, x2 in points]  # 3 classes
    bad = write_csv(tmp_path / "my bad points.csv", [(1, 2, 0), (3, 4, 1), ("five", 6, 0)])
    browser.find_element("id", "csv").send_keys(str(bad))
    wait_for(browser, lambda: "row 4" in shown(browser)["message"])
    assert "my_bad_points.csv, row 4: x1 and x2 must be numbers" in shown(browser)["message"]
    assert browser.find_element("id", "dataset").get_attribute("value") == "circle", "the old setting stays"
    assert press_step(browser, 1)["epoch"] == 1, "and so does its network"
    labelled = write_csv(tmp_path / "three.csv", [(x1, x2, ord(label) - ord("a")) for x1, x2, label in rows])
    browser.find_element("id", "csv").send_keys(str(labelled))
    wait_for(browser, lambda: "300 points, 3 classes" in shown(browser)["message"] and shown(browser)["epoch"] == 0)
    assert browser.find_element("id", "dataset").get_attribute("value") == "points"
    assert [unit.text for unit in browser.find_elements("css selector", ".layer:last-child .unit")] == ["0", "1", "2"]
    # SGD at lr 0.1 on batches of 10 has single epochs that dip (here 87: 87%): wait for 90% while it plays
    page = play(browser, until=lambda page: page["test-accuracy"] > 0.9, what="under 90%")
    setting = "hidden=8,8&activation=relu&lr=0.1&dataset=points&upload=three"
    assert_shows(page, replayed(setting, page["epoch"], tmp_path / "replayed", labelled))
    browser.refresh()  # a link cannot carry the file: the page asks for it again
    wait_for(browser, lambda: "upload a CSV" in shown(browser)["message"])


def test_out_of_range_controls_are_refused_on_the_page_and_by_the_server(browser, server):
    open_page(browser, server)
    set_control(browser, "lr", "50")
    wait_for(browser, lambda: "lr: must be between 0.00001 and 10, got 50" in shown(browser)["message"])
    assert browser.execute_script("return window.playground.session") is None
    browser.find_element("id", "play").click()
    time.sleep(0.3)
    assert shown(browser)["epoch"] == 0
    refusals = {"hidden=100": "1 to 64 neurons", "lr=abc": "lr: must be a number",
                "batch=0": "batch: must be between 1", "activation=evil": "activation: unknown"}  # fmt: skip
    for link, expected in refusals.items():
        browser.get(f"{server.url}#{link}")
        wait_for(browser, lambda expected=expected: expected in shown(browser)["message"])
    # the page never sends these; the server refuses them itself, and goes on serving
    status, answer = post(server, "/api/session", {"setting": {"lr": "50", "hidden": "2,100"}})
    assert status == 400 and "lr: must be between" in answer["error"] and "1 to 64 neurons" in answer["error"]
    for path, body in (("/api/session", b"not json"), ("/api/session", b"[1, 2]"), ("/api/frame", b"\xff\xfe"),
                       ("/api/frame", json.dumps({"session": "nope", "train": "play"}).encode()),
                       ("/api/save", json.dumps({"session": ["x"]}).encode()),
                       ("/api/upload", json.dumps({"name": 3, "text": None}).encode()),
                       ("/api/session", json.dumps({"setting": {"seed": "1e400"}}).encode())):  # fmt: skip
        status, answer = post(server, path, body)
        assert status in (400, 404) and isinstance(answer["error"], str) and "\n" not in answer["error"], (path, answer)
    nested = b'{"setting": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, answer = post(server, "/api/session", nested)
    assert status == 400 and "JSON object" in answer["error"]
    # another web site in the same browser must not drive the page's server: a rebound name, a form post, a
    # cross-site fetch; and a body declared too large is refused before it is read
    kept = sorted((server.runs / "uploads").glob("*"))
    for headers, expected in (({"Host": "evil.example"}, 403), ({"Content-Type": "text/plain"}, 415),
                              ({"Origin": "http://evil.example"}, 403)):  # fmt: skip
        status, answer = post(server, "/api/upload", {"name": "x.csv", "text": "1,2,0\n"}, headers)
        assert status == expected and "error" in answer, (headers, status, answer)
    assert sorted((server.runs / "uploads").glob("*")) == kept, "nothing written"
    status, answer = declared_too_large(server)
    assert status == 400 and "larger than" in answer["error"]
    status, _ = post(server, "/api/session", {"setting": {}})
    assert status == 200


def post(server, path: str, body, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="POST")
    for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
        request.add_header(name, value)
    try:
        with DIRECT.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def declared_too_large(server) -> tuple[int, dict]:
    """A request whose Content-Length says a gigabyte follows, and then sends nothing."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/upload")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(2**30))
        connection.endheaders()
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_downloaded_checkpoint_is_accepted_by_eval_and_save_run_writes_a_run_folder(browser, server, downloads):
    open_page(browser, server, "dataset=gauss&hidden=4&activation=tanh&noise=0.2")
    browser.find_element("id", "download").click()
    wait_for(browser, lambda: "train at least one epoch first" in shown(browser)["message"])
    page = press_step(browser, 12)
    browser.find_element("id", "download").click()
    checkpoint = downloads / "playground-gauss-epoch12.pt"
    wait_for(browser, checkpoint.exists, what=lambda: f"no download: {list(downloads.iterdir())}")
    wait_for(browser, lambda: not list(downloads.glob("*.crdownload")))
    evaluated = run_cli("eval", checkpoint)
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"{100 * page['test-accuracy']:.2f}%" in evaluated.stdout, (evaluated.stdout, page)  # the page's number
    browser.find_element("id", "save").click()
    wait_for(browser, lambda: "saved the run folder" in shown(browser)["message"])
    folder = Path(re.search(r"saved the run folder (.+)", shown(browser)["message"]).group(1))
    assert folder.parent == server.runs.resolve() and folder.name == "gauss-4-tanh-epoch12"
    assert sorted(path.name for path in folder.iterdir()) == [
        "best.pt", "config.toml", "last.pt", "metrics.csv", "summary.json"
    ]  # fmt: skip
    command = shown(browser)["message"].splitlines()[-1]
    assert command.startswith("mnist-ffn eval ")
    evaluated = run_cli("eval", folder / "best.pt")
    assert evaluated.returncode == 0, evaluated.stderr
    browser.find_element("id", "save").click()  # again: a folder of its own, never over the first
    wait_for(browser, lambda: "gauss-4-tanh-epoch12-2" in shown(browser)["message"])


def test_screenshot_of_a_spiral_mid_training(browser, server, tmp_path):
    """The README's picture:
    MNIST_FFN_SCREENSHOT=docs/playground.png python -m pytest tests/test_playground.py -k screenshot"""
    open_page(browser, server, "dataset=spiral&hidden=8,8,8&activation=tanh&features=x1,x2,sin_x1,sin_x2&noise=0.05")
    play(browser, until=lambda page: page["epoch"] >= 150 and page["test-accuracy"] > 0.6, what="no picture yet")
    browser.execute_script("window.scrollTo(0, 0)")
    target = Path(os.environ.get("MNIST_FFN_SCREENSHOT", tmp_path / "playground.png"))
    assert browser.save_screenshot(str(target))
    assert Image.open(target).size[0] >= 1000


def test_every_spelling_of_loopback_answers_only_its_own_hosts_and_its_own_page(tmp_path):
    """Whether a page is open to the network is the address it binds, not how --host spells it: on each loopback
    spelling the server warns of nothing, and refuses a foreign Host (a DNS-rebinding page) and a foreign Origin
    (another site's script) while its own page is served."""
    require_browser("fastapi", "uvicorn")
    spellings = ["127.1", "2130706433", "0x7f000001", "LOCALHOST", "::ffff:127.0.0.1"]
    servers = [PageServer("playground", "--host", host, "--runs", tmp_path / f"runs-{index}")
               for index, host in enumerate(spellings)]  # fmt: skip
    try:
        for host, started in zip(spellings, servers, strict=True):
            started.wait_until_ready()
            status, answer = post(started, "/api/session", {"setting": {}})
            assert status == 200 and answer["session"], (host, answer)
            for headers in ({"Host": "evil.example"}, {"Host": f"evil.example:{started.port}"},
                            {"Origin": "http://evil.example"}, {"Origin": "null"}):  # fmt: skip
                status, answer = post(started, "/api/session", {"setting": {}}, headers)
                assert status == 403 and "error" in answer, (host, headers, status, answer)
            status, _ = get(started, "/", {"Host": "evil.example"})
            assert status == 403, host
            assert get(started, "/")[0] == 200, host
    finally:
        outputs = [started.stop() for started in servers]
    for host, (stdout, stderr) in zip(spellings, outputs, strict=True):
        assert "warning" not in stderr and "Traceback" not in stderr, (host, stderr)
        assert "open to" not in stdout + stderr, host


def get(server, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with DIRECT.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_two_host_headers_or_a_megabyte_of_setting_get_one_short_refusal(server):
    import http.client

    for header in ("Host", "Origin"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.putrequest("POST", "/api/session", skip_host=True)
            connection.putheader("Host", f"127.0.0.1:{server.port}")
            if header == "Origin":
                connection.putheader("Origin", "http://evil.example")
                connection.putheader("Origin", server.url.rstrip("/"))
            else:
                connection.putheader("Host", "evil.example")
            connection.putheader("Content-Type", "application/json")
            body = b'{"setting": {}}'
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            assert connection.getresponse().status in (400, 403), header  # the HTTP parser or the page refuses it
        finally:
            connection.close()
    huge = "x" * 3_000_000
    for setting in (
        {"dataset": huge},
        {"activation": huge},
        {"lr": huge},
        {huge: 1},
        {f"k{n}": 1 for n in range(10_000)},
    ):
        status, answer = post(server, "/api/session", {"setting": setting})
        assert status == 400 and len(answer["error"]) < 1_500, (status, len(answer["error"]))


def test_a_json_number_too_long_for_python_is_one_json_line_not_a_500(server):
    digits = "9" * 5_000  # beyond the 4,300 digits Python turns into an int
    for path in ("/api/session", "/api/frame", "/api/upload", "/api/save"):
        status, answer = post(server, path, f'{{"setting": {{"seed": {digits}}}, "session": {digits}}}'.encode())
        assert status == 400 and "JSON object" in answer["error"], (path, status, answer)
    assert post(server, "/api/session", {"setting": {}})[0] == 200, "and the server goes on"


def test_a_port_in_use_and_an_address_not_of_this_machine_are_named(server):
    taken = run_cli("playground", "--no-browser", "--port", str(server.port))
    assert_one_line_error(taken, 2, f"--port {server.port}", "in use")
    not_here = run_cli("playground", "--no-browser", "--host", "203.0.113.1")
    assert_one_line_error(not_here, 2, "--host 203.0.113.1", "not an address of this machine")


def test_a_small_csv_trains_and_a_save_that_fails_leaves_no_half_folder(tmp_path, monkeypatch):
    from mnist_ffn.errors import WriteError
    from mnist_ffn.training.run_folder import RunFolder
    from mnist_ffn.web.playground_server import Playground

    playground = Playground(tmp_path / "runs", tmp_path / "scratch")
    rows = "".join(f"{x},{x % 3},{x % 2}\n" for x in range(20))  # the fewest points the page takes
    token, _, _ = playground.uploads.add("small.csv", rows.encode())
    _, session = playground.start({"dataset": "points", "upload": token, "hidden": "4"})
    session.train(epochs=3)
    assert session.frame().epoch == 3

    def full_disk(self, summary):
        raise WriteError(f"{self.summary}: cannot write it (No space left on device)")

    monkeypatch.setattr(RunFolder, "write_summary", full_disk)
    with pytest.raises(WriteError):
        playground.save(session)
    assert not [path for path in (tmp_path / "runs").iterdir() if path.name != "uploads"]


@pytest.mark.parametrize("missing", ["fastapi", "uvicorn"])
def test_without_the_demo_extra_the_playground_says_how_to_install_it(missing, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, missing, None)
    result = run_cli("playground", "--no-browser", "--port", str(free_port()), "--runs", tmp_path / "runs")
    assert_one_line_error(result, 1, "pip install 'mnist-ffn[demo]'")
    assert not (tmp_path / "runs").exists(), "nothing written"


def test_the_same_csv_under_another_name_keeps_the_file_a_saved_run_reads(tmp_path):
    from mnist_ffn.web.playground_server import Playground

    playground = Playground(tmp_path / "runs", tmp_path / "scratch")
    rows = "".join(f"{x},{(x * 7) % 11},{x % 2}\n" for x in range(40)).encode()
    token, _, _ = playground.uploads.add("first.csv", rows)
    _, session = playground.start({"dataset": "points", "upload": token, "hidden": "4"})
    session.train(epochs=2)
    saved = playground.save(session)
    assert playground.uploads.add("second name.csv", rows)[0] == token
    evaluated = run_cli("eval", saved / "best.pt")
    assert evaluated.returncode == 0, evaluated.stderr
    with pytest.raises(PointsError, match="20 to 5,000"):
        playground.uploads.add("many.csv", "".join(f"{x},{x},{x % 2}\n" for x in range(5_001)).encode())
    for content, expected in ((b"1e300,1,0\n" * 10 + b"2,2,1\n" * 10, "row 1: x1 and x2 must be within"),
                              (b"1e-300,0,0\n" * 10 + b"0,1e-300,1\n" * 10, "scale the coordinates up")):  # fmt: skip
        with pytest.raises(PointsError, match=expected):
            playground.uploads.add("odd.csv", content)


def test_a_sessions_numbers_do_not_depend_on_other_tabs(tmp_path):
    """Dropout draws from torch's generator: each session keeps its own, so a tab made meanwhile changes nothing."""
    setting = Setting.parse({"hidden": "8,8", "activation": "relu", "dropout": "0.3", "lr": "0.1"})
    alone = Session(setting, tmp_path / "alone")
    alone.train(epochs=2)
    disturbed = Session(setting, tmp_path / "disturbed")
    disturbed.train(epochs=1)
    Session(Setting.parse({"dropout": "0.5", "seed": "9"}), tmp_path / "other").train(epochs=1)
    torch.rand(1000)  # and anything else this process draws
    disturbed.train(epochs=1)
    for ours, theirs in zip(alone.trainer.model.parameters(), disturbed.trainer.model.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_a_diverged_network_cannot_be_downloaded_or_saved_and_long_epochs_are_refused(tmp_path):
    setting = Setting.parse({"hidden": "8,8,8", "activation": "identity", "lr": "10", "momentum": "0.9"})
    session = Session(setting, tmp_path / "s")
    session.train(epochs=1)
    session.trainer.progress.epoch = 1  # as if the epoch had ended before the overflow showed
    with pytest.raises(UsageError, match="diverged"):
        session.checkpoint_bytes(tmp_path / "x.pt")
    with pytest.raises(UsageError, match="diverged"):
        session.save(tmp_path / "saved")
    with pytest.raises(ConfigError, match="steps an epoch"):
        Setting.parse({"samples": "5000", "batch": "1"})
    with pytest.raises(ConfigError, match="widths separated by commas"):
        Setting.parse({"hidden": "6_4"})


def test_uploads_expire_unless_a_tab_uses_them_and_a_saved_run_keeps_its_own_copy(tmp_path, monkeypatch):
    """Uploads are kept while a tab trains on them; unused ones go after UPLOAD_IDLE_SECONDS and beyond MAX_UPLOADS
    (oldest first). A saved run holds its own copy of the CSV, so that it evaluates after its upload is gone, from
    any folder; a file too long for the page is refused before it is read whole."""
    import os

    from mnist_ffn.web import playground as playground_module
    from mnist_ffn.web.playground_server import Playground

    playground = Playground(tmp_path / "runs", tmp_path / "scratch")
    rows = [("".join(f"{x},{(x * k) % 11},{x % 2}\n" for x in range(40))).encode() for k in range(1, 6)]
    used, _, _ = playground.uploads.add("used.csv", rows[0])
    _, session = playground.start({"dataset": "points", "upload": used, "hidden": "4"})
    session.train(epochs=2)
    saved = playground.save(session)
    assert (saved / "points.csv").read_bytes() == rows[0]
    idle, _, _ = playground.uploads.add("idle.csv", rows[1], playground.uploads_in_use())
    long_ago = 1_000_000_000  # an upload last used in 2001
    for token in (used, idle):
        os.utime(playground.uploads.folder / f"{token}.csv", (long_ago, long_ago))
    monkeypatch.setattr(playground_module, "MAX_UPLOADS", 2)
    newer = [playground.uploads.add(f"new{index}.csv", content, playground.uploads_in_use())[0]
             for index, content in enumerate(rows[2:])]  # fmt: skip
    kept = {path.stem for path in playground.uploads.folder.glob("*.csv")}
    assert used in kept, "a tab trains on it"
    assert idle not in kept, "unused for longer than UPLOAD_IDLE_SECONDS"
    assert newer[0] not in kept and newer[2] in kept, "beyond MAX_UPLOADS the least recently used go first"
    (playground.uploads.folder / f"{used}.csv").unlink()  # gone: the saved run has its own copy
    monkeypatch.chdir(tmp_path / "scratch")
    evaluated = run_cli("eval", saved / "best.pt")
    assert evaluated.returncode == 0, evaluated.stderr
    many = "".join(f"{x},{x},{x % 2}\n" for x in range(6_000)).encode()
    with pytest.raises(PointsError, match="more than 5,000 points; the playground trains on 20 to 5,000"):
        playground.uploads.add("many.csv", many)


def test_saving_where_the_next_name_is_a_link_to_nowhere_takes_the_name_after(tmp_path):
    from mnist_ffn.web.playground_server import Playground

    playground = Playground(tmp_path / "runs", tmp_path / "scratch")
    _, session = playground.start({"dataset": "xor", "hidden": "4"})
    session.train(epochs=1)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "xor-4-tanh-epoch1").symlink_to(tmp_path / "nowhere")
    saved = playground.save(session)
    assert saved.name == "xor-4-tanh-epoch1-2" and (saved / "best.pt").is_file()
    assert not (tmp_path / "nowhere").exists(), "nothing written through the link"
