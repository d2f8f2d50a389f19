"""The backward pass, shown: one point's chain rule, dL/dz over the plane, |dL/dW| and the gradient-flow curves.

Every number the playground's page and API show for a point is checked against autograd in float64 on the same
point and weights, for every activation, with and without label smoothing; the gradient check (central
differences) agrees, and a deliberately wrong derivative makes it disagree. The page itself is driven in a real
Chromium, as the playground's other tests drive it (tests/test_playground.py).
"""

import copy
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional

from mnist_ffn.config import ACTIVATION_FUNCTIONS
from mnist_ffn.data.plane import features
from mnist_ffn.training import backprop
from mnist_ffn.training.model import linear_layers
from mnist_ffn.web.playground import NEURON_CELLS, Session, Setting
from tests.browser import wait_for
from tests.test_playground import browser, downloads, open_page, play, post, press_step, server, shown  # noqa: F401

TIGHT = 1e-10  # float64 against float64: the engine's sums and autograd's differ in the last bits at most


@pytest.fixture(autouse=True)
def _threads_back():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def reference(session: Session, point: list[float], label: int) -> dict:
    """The chain rule by autograd, in float64, for the session's network as it is now: each layer's z, a, f'(z),
    dL/da, dL/dz, dL/dW, dL/db, and the SGD step W - lr (dL/dW + l2 W + l1 sign W)."""
    model = copy.deepcopy(session.trainer.model).double().eval()
    setting, smoothing = session.setting, session.config.train.label_smoothing
    x = features(torch.tensor([point]), list(session.raw.info.features), session.raw.info.scale).double()
    zs, activations = [], []
    for module in model:
        x = module(x)
        if isinstance(module, nn.Linear):
            x.retain_grad()
            zs.append(x)
        elif isinstance(module, nn.Dropout | nn.Flatten):
            continue
        else:
            x.retain_grad()
            activations.append(x)
    loss = functional.cross_entropy(zs[-1], torch.tensor([label]), label_smoothing=smoothing)
    loss.backward()
    layers = []
    for index, layer in enumerate(linear_layers(model)):
        hidden = index < len(zs) - 1
        slope = None
        if hidden:  # f'(z) by autograd on f itself
            z = zs[index].detach().clone().requires_grad_(True)
            activation = [m for m in model if not isinstance(m, nn.Linear | nn.Dropout | nn.Flatten)][index]
            (derivative,) = torch.autograd.grad(activation(z).sum(), z)
            slope = derivative
        step = layer.weight.grad + setting.l2 * layer.weight + setting.l1 * layer.weight.sign()
        layers.append({
            "z": zs[index], "a": activations[index] if hidden else None, "slope": slope,
            "grad_a": activations[index].grad if hidden else None, "grad_z": zs[index].grad,
            "grad_weight": layer.weight.grad, "grad_bias": layer.bias.grad,
            "weight_update": -setting.lr * step,
            "bias_update": -setting.lr * (layer.bias.grad + setting.l2 * layer.bias),
        })  # fmt: skip
    return {"loss": loss.item(), "layers": layers}


def assert_close(shown_values, expected: torch.Tensor | None, what: str) -> None:
    if expected is None:
        assert shown_values is None, what
        return
    got = torch.tensor(shown_values, dtype=torch.float64)
    expected = expected.detach().reshape(got.shape)
    worst = float((got - expected).abs().max())
    assert worst <= TIGHT * max(1.0, float(expected.abs().max())), (what, worst)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("activation", ACTIVATION_FUNCTIONS)
def test_a_points_chain_rule_equals_autograds_and_passes_the_gradient_check(tmp_path, activation, smoothing):
    setting = Setting.parse({"hidden": "8,8", "activation": activation, "lr": "0.1", "l2": "0.001", "l1": "0.001"})
    session = Session(setting, tmp_path / "s")
    session.config.train.label_smoothing = smoothing  # the trace reads the config the session trains with
    session.train(epochs=2)
    answer = session.chain_rule({"point": [0.7, -1.3], "label": 1})
    expected = reference(session, [0.7, -1.3], 1)
    assert answer["loss"] == pytest.approx(expected["loss"], rel=1e-12, abs=1e-15)
    assert [layer["layer"] for layer in answer["layers"]] == [1, 2, 3]
    for shown_layer, layer in zip(answer["layers"], expected["layers"], strict=True):
        for key in ("z", "a", "slope", "grad_a", "grad_z", "grad_weight", "grad_bias", "weight_update", "bias_update"):
            assert_close(shown_layer[key], layer[key], f"layer {shown_layer['layer']} {key}")
        assert shown_layer["disagreements"] == 0, shown_layer["layer"]  # within the check's stated tolerance
        # the check's estimate is an estimate: close to the gradient, not equal to it
        estimate = torch.tensor(shown_layer["estimate_weight"], dtype=torch.float64)
        assert torch.allclose(estimate, layer["grad_weight"], rtol=1e-4, atol=1e-8)
    assert answer["check"]["disagreements"] == 0 and answer["check"]["weights"] == 8 * 3 + 8 * 9 + 2 * 9


def test_a_wrong_derivative_makes_the_gradient_check_disagree(tmp_path, monkeypatch):
    session = Session(Setting.parse({"hidden": "8,8", "activation": "tanh"}), tmp_path / "s")
    session.train(epochs=2)
    assert session.chain_rule({"point": [0.5, 0.5]})["check"]["disagreements"] == 0
    right = backprop.ACTIVATIONS["tanh"]

    def wrong(z, a, out, scratch):  # 1 - tanh^2, 5% too large
        right.derivative(z, a, out, scratch)
        out.mul_(1.05)

    monkeypatch.setitem(backprop.ACTIVATIONS, "tanh", backprop.Activation(right.forward, wrong))
    answer = session.chain_rule({"point": [0.5, 0.5]})
    by_layer = {layer["layer"]: layer["disagreements"] for layer in answer["layers"]}
    assert by_layer[3] == 0  # the output layer's dL/dW = dL/dz a^T uses no derivative
    assert by_layer[1] > 0 and by_layer[2] > 0 and answer["check"]["disagreements"] == by_layer[1] + by_layer[2]


def test_the_backward_maps_and_weight_gradients_are_autograds_over_the_plane(tmp_path):
    session = Session(Setting.parse({"hidden": "5,3", "activation": "tanh", "lr": "0.1"}), tmp_path / "s")
    session.train(epochs=3)
    frame = session.frame(backward=True)
    assert [layer["width"] for layer in frame.backward] == [5, 3]
    assert frame.to_json()["backward"][0]["maps"]  # base64, as the a = f(z) maps
    # each cell's own loss (labelled as its nearest training point): autograd's dL/dz at the cell, per neuron
    model = copy.deepcopy(session.trainer.model).double().eval()
    x = session.neuron_inputs.double()
    z1 = model[1](model[0](x))
    z1.retain_grad()
    rest = model[2:](z1)
    functional.cross_entropy(rest, session.neuron_labels, reduction="sum").backward()
    expected = z1.grad.float()  # (cells, 5)
    scale = torch.tensor(frame.backward[0]["scale"])
    assert torch.allclose(scale, expected.abs().amax(dim=0), rtol=1e-5)
    maps = torch.frombuffer(bytearray(frame.backward[0]["maps"]), dtype=torch.int8).view(5, NEURON_CELLS**2)
    assert torch.allclose(maps.float() / 127 * scale[:, None], expected.t(), atol=float(scale.max()) / 127)
    # the lines' |dL/dW|: the training loss's gradient
    inputs, labels = session.trainer.splits["train"].slice(0, len(session.trainer.splits["train"]))
    model.zero_grad()
    functional.cross_entropy(model(inputs.double()), labels).backward()
    for shown_layer, layer in zip(frame.weight_gradients, linear_layers(model), strict=True):
        values = torch.frombuffer(bytearray(shown_layer["values"]), dtype=torch.float32).view(layer.weight.shape)
        assert torch.allclose(values.double(), layer.weight.grad, rtol=1e-5, atol=1e-9)
    assert session.frame().backward is None  # drawn only when asked for


def test_the_frames_gradient_norms_are_the_runs_metrics(tmp_path):
    session = Session(Setting.parse({"hidden": "8,8,8", "activation": "sigmoid"}), tmp_path / "s")
    assert session.frame().gradient_norms == []  # before an epoch: none yet
    session.train(epochs=2)
    row = session.trainer.progress.history[-1]
    assert session.frame().gradient_norms == [row[f"grad_norm_{k}"] for k in (1, 2, 3, 4)]


def test_bad_points_get_a_message_and_the_server_goes_on(server):  # noqa: F811
    status, started = post(server, "/api/session", {"setting": {"hidden": "8,8"}})
    assert status == 200
    session = started["session"]
    extent = started["extent"]
    for body, expected in (
        ({"point": [extent * 1.5, 0.0]}, "outside the plane"),
        ({"point": [0.0]}, "two numbers"),
        ({"point": ["a", "b"]}, "two numbers"),
        ({"point": [float("1e400"), 0.0]}, "two numbers"),
        ({"point": [True, 0.0]}, "two numbers"),
        ({"point": [0.1, 0.1], "label": 7}, "label: a class number, 0 to 1"),
        ({"index": 10**6}, "index: a training point's number"),
        ({}, "two numbers"),
    ):
        body = {"session": session, **body}
        raw = None
        if "1e400" in str(body):  # JSON's Infinity is not JSON: sent as the page never would
            raw = b'{"session": "%s", "point": [Infinity, 0]}' % session.encode()
        status, answer = post(server, "/api/point", raw or body)
        assert status == 400 and expected in answer["error"], (body, status, answer)
    status, answer = post(server, "/api/point", {"session": "nobody", "point": [0, 0]})
    assert status == 404 and "press reset" in answer["error"]
    # an empty network (softmax regression): one link, said so
    status, started = post(server, "/api/session", {"setting": {"hidden": ""}})
    status, answer = post(server, "/api/point", {"session": started["session"], "point": [0.1, 0.2]})
    assert status == 200 and len(answer["layers"]) == 1 and "no hidden layer" in answer["note"]
    # a diverged network: nothing to trace
    setting = {"hidden": "8,8,8", "activation": "identity", "lr": "10", "momentum": "0.9"}
    status, started = post(server, "/api/session", {"setting": setting})
    status, frame = post(server, "/api/frame", {"session": started["session"], "train": "step"})
    assert "overflowed" in frame["stopped"]
    status, answer = post(server, "/api/point", {"session": started["session"], "point": [0.1, 0.2]})
    assert status == 400 and "diverged" in answer["error"]
    status, answer = post(server, "/api/frame", {"session": started["session"], "view": "backward"})
    assert status == 200 and answer["backward"] == []  # no maps to draw, and no error either
    status, answer = post(server, "/api/frame", {"session": session, "view": "sideways"})
    assert status == 400 and "view: forward or backward" in answer["error"]
    assert post(server, "/api/point", {"session": session, "point": [0.1, 0.1]})[0] == 200, "and the server goes on"


# -- the page --------------------------------------------------------------------------------------------


def click_plane(page, x_share: float, y_share: float) -> None:
    """A real click on the boundary picture, at a share of its width and height from its top left corner."""
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = page.find_element("id", "boundary")
    size = canvas.size
    ActionChains(page).move_to_element_with_offset(
        canvas, int((x_share - 0.5) * size["width"]), int((y_share - 0.5) * size["height"])
    ).click().perform()


def chain_cards(page) -> list[dict]:
    return page.execute_script(
        """return [...document.querySelectorAll('.chain-layer')].map(card => ({
             layer: +card.dataset.layer, disagreements: +card.dataset.disagreements,
             norm: +card.dataset.gradZNorm, text: card.innerText}));"""
    )


def test_clicking_a_point_shows_its_chain_rule_for_every_layer(browser, server, tmp_path):  # noqa: F811
    setting = "dataset=circle&hidden=8,8&activation=tanh&lr=0.1&batch=10"
    open_page(browser, server, setting)
    press_step(browser, 3)
    click_plane(browser, 0.75, 0.25)
    wait_for(browser, lambda: len(chain_cards(browser)) == 3, what="no chain rule after the click")
    answer = browser.execute_script("return window.playground.chain")
    x1, x2 = answer["point"]
    assert x1 > 0 and x2 > 0  # right and up of the centre: the page's y axis points up
    cards = chain_cards(browser)
    assert [card["layer"] for card in cards] == [1, 2, 3] and all(card["disagreements"] == 0 for card in cards)
    for card, layer in zip(cards, answer["layers"], strict=True):
        for label in ("z", "dL/dz", "dL/dW", "dL/db", "\u0394W"):
            assert label in card["text"], (card["layer"], label)
        assert card["norm"] == layer["grad_z_norm"]
    assert "f\u2032(z)" in cards[0]["text"] and "a = f(z)" in cards[1]["text"]
    check = browser.find_element("id", "chain-check").text
    assert check.startswith(f"gradient check: all {8 * 3 + 8 * 9 + 2 * 9} weights and biases agree"), check
    # the same numbers as the same setting trained the same epochs here gives for that point
    from urllib.parse import parse_qsl

    local = Session(Setting.parse(dict(parse_qsl(setting))), tmp_path / "replayed")
    local.train(epochs=3)
    replayed = local.chain_rule({"point": answer["point"]})
    assert replayed["layers"] == answer["layers"] and replayed["label"] == answer["label"]
    # a point outside the plane (the page's own call with a point no click can make): a message, and on it goes
    browser.execute_script("window.playground.chainPoint = null; return null")
    browser.execute_script(f"explain([{x1 * 10}, 0])")
    wait_for(browser, lambda: "outside the plane" in shown(browser)["message"], what=lambda: shown(browser))
    press_step(browser, 1)


def test_the_backward_view_draws_dl_dz_maps_matching_the_widths(browser, server):  # noqa: F811
    open_page(browser, server, "hidden=5,3,7&activation=tanh")
    press_step(browser, 1)
    select = browser.find_element("id", "view")
    select.find_element("css selector", "option[value=backward]").click()

    def views():
        panels = browser.find_elements("css selector", ".neuron")
        found = {}
        for panel in panels:
            key = (panel.get_attribute("data-layer"), panel.get_attribute("data-view"))
            found[key] = found.get(key, 0) + 1
        return found

    wait_for(browser, lambda: views() == {("1", "backward"): 5, ("2", "backward"): 3, ("3", "backward"): 7},
             what=lambda: views())  # fmt: skip
    assert "dL/dz" in browser.find_element("id", "network-legend").text
    select.find_element("css selector", "option[value=forward]").click()
    wait_for(browser, lambda: views() == {("1", "forward"): 5, ("2", "forward"): 3, ("3", "forward"): 7})


def lowest_over_top(page) -> float:
    value = page.find_element("id", "gradient-norms").get_attribute("data-lowest-over-top")
    return float(value) if value else float("nan")


def test_a_deep_sigmoid_networks_lowest_layer_gets_a_tiny_gradient_and_relus_does_not(browser, server):  # noqa: F811
    """The lesson's table, with its reason: on hidden=8,8,8,8 sigmoid stays near chance and its lowest layer's
    ||dL/dz|| stays thousands of times below the output layer's; ReLU learns the circle, and as it does, the
    gradient reaches its lowest layer (lowest / output above 1/10; at the first epochs, with PyTorch's initial
    weights, it is below that too)."""
    ratios = {}
    for activation in ("sigmoid", "relu"):
        open_page(browser, server, f"dataset=circle&hidden=8,8,8,8&activation={activation}&lr=0.1&batch=10")
        browser.find_element("id", "play").click()
        wait_for(browser, lambda: shown(browser)["epoch"] >= 80, timeout=90, what=lambda: shown(browser))
        browser.find_element("id", "play").click()
        wait_for(browser, lambda: not browser.execute_script("return window.playground.busy"))
        ratios[activation] = (lowest_over_top(browser), shown(browser)["test-accuracy"])
        assert "lowest / output" in browser.find_element("id", "gradient-norms").text
    (sigmoid, sigmoid_accuracy), (relu, relu_accuracy) = ratios["sigmoid"], ratios["relu"]
    assert sigmoid < 0.1 and relu > 0.1 and relu_accuracy > sigmoid_accuracy + 0.2, ratios


def test_screenshot_of_a_points_chain_rule(browser, server, tmp_path):  # noqa: F811
    """The lesson page's picture:
    MNIST_FFN_SCREENSHOT=docs/chain-rule.png python -m pytest tests/test_backprop_view.py -k "screenshot and chain"
    """
    open_page(browser, server, "dataset=circle&hidden=8,8&activation=tanh&lr=0.1&batch=10")
    play(browser, until=lambda page: page["epoch"] >= 60 and page["test-accuracy"] > 0.9, what="not learnt yet")
    click_plane(browser, 0.7, 0.35)
    wait_for(browser, lambda: len(chain_cards(browser)) == 3)
    assert "agree" in browser.find_element("id", "chain-check").text
    browser.set_window_size(1400, 2200)  # the whole chain of a 2-8-8-2 network in one picture
    try:
        browser.execute_script("window.scrollTo(0, 0)")
        target = Path(os.environ.get("MNIST_FFN_SCREENSHOT", tmp_path / "chain-rule.png"))
        assert browser.save_screenshot(str(target))
    finally:
        browser.set_window_size(1400, 1300)
    from PIL import Image

    assert Image.open(target).size[0] >= 1000


def test_screenshot_of_the_dl_dz_maps(browser, server, tmp_path):  # noqa: F811
    """The lesson page's picture of the backward view:
    MNIST_FFN_SCREENSHOT=docs/backward-maps.png python -m pytest tests/test_backprop_view.py -k dl_dz_maps"""
    open_page(browser, server, "dataset=circle&hidden=8,8&activation=tanh&lr=0.1&batch=10")
    play(browser, until=lambda page: page["epoch"] >= 30, what="not trained yet")
    browser.find_element("id", "view").find_element("css selector", "option[value=backward]").click()
    wait_for(browser, lambda: browser.find_elements("css selector", ".neuron[data-view=backward]"))
    browser.execute_script("window.scrollTo(0, 0)")
    target = Path(os.environ.get("MNIST_FFN_SCREENSHOT", tmp_path / "backward-maps.png"))
    assert browser.save_screenshot(str(target))
    from PIL import Image

    assert Image.open(target).size[0] >= 1000
