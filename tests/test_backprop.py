"""The hand-written engine (mnist_ffn.backprop) against autograd and torch.optim.SGD.

The engine computes the lesson's equations (see its docstring) with its own derivatives and its own
SGD update. These tests hold it to PyTorch: each f'(z) against finite differences and autograd in
float64, the whole network's gradient against finite differences of the loss, and one step and 50
steps against `loss.backward()` + `torch.optim.SGD` from the same weights and batches, for every
activation, dropout, label smoothing, momentum, Nesterov, weight decay, L1 and schedule (autograd
differentiates L1's penalty l1 * sum |W| itself).

Tolerance of the 50-step comparisons, float32: 2e-5 absolute on parameters and momentum buffers.
The two engines add the same numbers in different orders (BLAS accumulating dL/dW into the momentum
buffer, log_softmax + exp instead of softmax, weight decay added before or after the product), so
they part in the last bit or two of float32 (about 1e-7) at every step; 50 steps of SGD with momentum
carry that to a few 1e-6 in the worst case seen (4e-6). A wrong derivative, a missing 1/N or a
momentum applied twice moves the parameters by 1e-3 or more after a single step.
"""

import copy
import itertools

import pytest
import torch
from torch import nn

from mnist_ffn.config import ACTIVATION_FUNCTIONS, load_config
from mnist_ffn.training.autograd import AutogradEngine
from mnist_ffn.training.backprop import ACTIVATIONS, BackpropEngine
from mnist_ffn.training.checkpoint import checkpoint_config, load_checkpoint, read_training_state
from mnist_ffn.training.choice import StepChoice, build_engine, choose_step
from mnist_ffn.training.model import ACTIVATION_LAYERS, build_model
from mnist_ffn.training.optim import learning_rate
from mnist_ffn.training.run_folder import RunFolder
from mnist_ffn.training.signals import StopSignals
from mnist_ffn.training.trainer import Trainer, train

TOLERANCE = 2e-5
ACTIVATION_NAMES = list(ACTIVATION_FUNCTIONS)  # "none" is identity's alias
VARIANTS = {  # the rest of a config, and the schedule that drives the learning rate
    "plain": ([], "constant"),
    "dropout+smoothing": (["model.dropout=0.3", "train.label_smoothing=0.1"], "cosine"),
    "nesterov+decay": (["optim.nesterov=true", "optim.weight_decay=5e-3"], "step"),
    "momentum+decay": (["optim.nesterov=false", "optim.weight_decay=5e-3"], "cosine"),
    "no momentum": (["optim.momentum=0", "optim.nesterov=false", "optim.weight_decay=1e-3"], "constant"),
    "warm-up, no hidden layer": (["model.hidden=[]", "optim.warmup_epochs=0.5"], "cosine"),
    # L1's gradient jumps where a weight crosses zero, and there the last bit of float32 picks the side: a
    # rate small enough that 50 steps pin no weight at zero, where the two engines would part by l1 at once
    "l1+momentum": (["optim.l1=1e-4"], "constant"),
    "l1+nesterov+decay": (["optim.l1=1e-4", "optim.nesterov=true", "optim.weight_decay=5e-3"], "cosine"),
    "l1, no momentum": (["optim.l1=1e-4", "optim.momentum=0"], "constant"),
}
BATCH, STEPS_PER_EPOCH = 12, 5


def config_for(activation, variant):
    settings, schedule = VARIANTS[variant]
    base = [f"model.activation={activation}", "model.hidden=[16,8]", f"train.batch_size={BATCH}"]
    base += ["optim.nesterov=false", "optim.weight_decay=0", "optim.lr=0.05", f"optim.schedule={schedule}"]
    base += ["optim.step_every=2", "optim.step_gamma=0.5", "train.epochs=10"]
    return load_config(None, base + settings)


def batches(count, seed=1):
    """Random batches of images in the model's input units; every fifth one short, like an epoch's last."""
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        n = BATCH if index % 5 else BATCH - 5
        yield torch.randn(n, 784, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def both_engines(config, seed=0, precision="fp32"):
    torch.manual_seed(seed)
    reference = build_model(config.model)
    hand = copy.deepcopy(reference)
    cpu = torch.device("cpu")
    engine = build_engine(hand, config, cpu, StepChoice("backprop", precision, ""))
    return AutogradEngine(reference, config, cpu, precision=precision), reference, engine, hand


class GivenMask(nn.Module):
    """Dropout with a mask handed in: the autograd reference drops exactly the units the engine dropped."""

    def __init__(self):
        super().__init__()
        self.mask = None  # Bernoulli(keep) / keep, as the engine drew it for this step

    def forward(self, x):
        return x * self.mask


def train_both(config, steps):
    """The same batches, learning rates and dropout masks through both engines."""
    autograd, reference, hand, model = both_engines(config)
    reference.train()
    given = [GivenMask() for layer in reference if isinstance(layer, nn.Dropout)]
    dropout_at = [index for index, layer in enumerate(reference) if isinstance(layer, nn.Dropout)]
    for index, module in zip(dropout_at, given, strict=True):
        reference[index] = module
    for step, (images, labels) in enumerate(batches(steps)):
        lr = learning_rate(config.optim, step, STEPS_PER_EPOCH, config.train.epochs)
        loss, logits = hand.step(images, labels, lr)
        loss, logits = loss.clone(), logits.clone()
        for layer, module in enumerate(given):
            module.mask = hand.buffers(len(labels)).mask[layer].clone()
        reference_loss, reference_logits = autograd.step(images, labels, lr)
        if step == 0:  # the loss and logits are those before the update
            assert torch.allclose(loss, reference_loss, atol=1e-6)
            assert torch.allclose(logits, reference_logits, atol=1e-6)
    return autograd, reference, hand, model


def test_dropout_masks_keep_a_fraction_and_come_from_the_runs_generator():
    config = config_for("relu", "dropout+smoothing")  # dropout 0.3
    _, _, hand, _ = both_engines(config)
    images, labels = next(batches(1))
    torch.manual_seed(5)
    hand.step(images, labels, 0.1)
    first = hand.buffers(len(labels)).mask[0].clone()
    values = first.unique()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / 0.7)  # dropped, or kept x 1/keep
    assert abs((first > 0).float().mean().item() - 0.7) < 0.1
    torch.manual_seed(5)
    hand.step(images, labels, 0.1)
    assert torch.equal(hand.buffers(len(labels)).mask[0], first), "the same generator state, the same mask"


def assert_same_training_state(autograd, reference, hand, model):
    for (name, expected), actual in zip(reference.named_parameters(), model.parameters(), strict=True):
        difference = (expected - actual).abs().max().item()
        assert difference <= TOLERANCE, f"{name} differs by {difference:.2e}"
    expected_state, actual_state = autograd.optimizer_state(), hand.optimizer_state()
    assert expected_state["param_groups"] == actual_state["param_groups"]
    assert expected_state["state"].keys() == actual_state["state"].keys()
    for index, state in expected_state["state"].items():
        difference = (state["momentum_buffer"] - actual_state["state"][index]["momentum_buffer"]).abs().max()
        assert difference <= TOLERANCE, f"momentum buffer {index} differs by {difference:.2e}"


@pytest.mark.parametrize(("activation", "variant"), list(itertools.product(ACTIVATION_NAMES, VARIANTS)))
def test_fifty_steps_equal_autograd_and_torch_optim_sgd(activation, variant):
    config = config_for(activation, variant)
    assert choose_step(config, build_model(config.model), torch.device("cpu"), points=False).engine == "backprop"
    assert_same_training_state(*train_both(config, steps=50))


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_step_equals_autograd_closely(variant):
    """After one step the two agree to float32's resolution, not merely within the 50-step tolerance."""
    _, reference, _, model = train_both(config_for("tanh", variant), steps=1)
    for expected, actual in zip(reference.parameters(), model.parameters(), strict=True):
        assert torch.allclose(expected, actual, rtol=0, atol=1e-7)


def test_a_wrong_derivative_would_be_caught(monkeypatch):
    """The tolerance is tight enough: f'(z) off by 1% fails the comparison."""
    tanh = ACTIVATIONS["tanh"]

    def slightly_wrong(z, a, out, scratch):
        tanh.derivative(z, a, out, scratch)
        out.mul_(1.01)

    monkeypatch.setitem(ACTIVATIONS, "tanh", type(tanh)(tanh.forward, slightly_wrong))
    with pytest.raises(AssertionError, match="differs by"):
        assert_same_training_state(*train_both(config_for("tanh", "plain"), steps=50))


# -- bf16 products against autograd under autocast ------------------------------------------------------------
# The engine's bf16 step computes what autocast computes: the same products in bfloat16 (float32 sums inside each
# kernel, one rounding of each result, the biases' gradients included), the loss and softmax in float32, f'(z) in
# float32 from z and a read into float32 so that dL/dA * f'(z) rounds to bfloat16 once, as autograd's fused backward
# kernels round it, and float32 masters, momentum and update. The engines are compared one step at a time from the
# same state (parameters and momentum copied from autograd's before each step: over many steps any two bf16
# computations drift apart, as two autocast runs on different CPUs do), and each parameter's and momentum buffer's
# change must agree to a tolerance of the tensor's largest change:
# - 1e-4 where the engine's f' is autograd's formula (identity, relu, leaky_relu, elu, tanh, sigmoid): their hidden
#   layers give autocast's numbers to the bit; the last layer's dL/dZ = (P - T) / N comes from another float32
#   formula than autograd's, so an element now and then rounds to the neighbouring bfloat16 (7e-5 at worst, seen
#   with no hidden layer).
# - 2^-6 for gelu, silu and softplus, whose f' the lesson writes with another formula than autograd's kernels: the two
#   float32 results differ in their last bits, and where one lies near a bfloat16 rounding boundary the two round
#   to neighbouring bfloat16 values, 2^-8 apart relatively (0.009 at worst over every variant here, 20 steps each).
# The fp32 engine against autocast parts by 0.1 to 0.7 with ReLU (float32 and bfloat16 activations cross zero in
# different places), and a derivative wrong by 1% fails the 1e-4 tolerance: both are checked.
SAME_FORMULA = {"identity", "relu", "leaky_relu", "elu", "tanh", "sigmoid"}
BF16_TOLERANCE = {"same formula": 1e-4, "another formula": 2**-6}


def bf16_tolerance(activation, variant):
    if activation in SAME_FORMULA or "no hidden layer" in variant:
        return BF16_TOLERANCE["same formula"]
    return BF16_TOLERANCE["another formula"]


def bf16_steps_from_the_same_state(config, steps, hand_precision="bf16"):
    """The worst disagreement, relative to the change, of parameters and momentum after each of `steps` steps."""
    autograd, reference, hand, model = both_engines(config, precision="bf16")
    if hand_precision != "bf16":
        hand = build_engine(model, config, torch.device("cpu"), StepChoice("backprop", hand_precision, ""))
    given = [GivenMask() for layer in reference if isinstance(layer, nn.Dropout)]
    dropout_at = [index for index, layer in enumerate(reference) if isinstance(layer, nn.Dropout)]
    for index, module in zip(dropout_at, given, strict=True):
        reference[index] = module
    mu, worst = config.optim.momentum, 0.0

    def disagreement(expected, actual, before):
        change = (expected - before).abs().max().item()
        return (expected - actual).abs().max().item() / max(change, 1e-30)

    for step, (images, labels) in enumerate(batches(steps)):
        lr = learning_rate(config.optim, step, STEPS_PER_EPOCH, config.train.epochs)
        with torch.no_grad():
            for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
                mine.copy_(theirs)
        hand.load_optimizer_state(autograd.optimizer_state())
        before = [parameter.detach().clone() for parameter in reference.parameters()]
        momentum_before = {i: s["momentum_buffer"].clone() for i, s in autograd.optimizer_state()["state"].items()}
        hand.step(images, labels, lr)
        for layer, module in enumerate(given):
            module.mask = hand.buffers(len(labels)).mask[layer].clone()
        autograd.step(images, labels, lr)
        for expected, actual, start in zip(reference.parameters(), model.parameters(), before, strict=True):
            worst = max(worst, disagreement(expected.detach(), actual.detach(), start))
        hand_state = hand.optimizer_state()["state"]
        for index, state in autograd.optimizer_state()["state"].items():
            expected = state["momentum_buffer"]
            start = mu * momentum_before.get(index, torch.zeros_like(expected))
            worst = max(worst, disagreement(expected, hand_state[index]["momentum_buffer"], start))
    return worst


@pytest.mark.parametrize(("activation", "variant"), list(itertools.product(ACTIVATION_NAMES, VARIANTS)))
def test_bf16_steps_equal_autograd_under_autocast(activation, variant):
    tolerance = bf16_tolerance(activation, variant)
    assert bf16_steps_from_the_same_state(config_for(activation, variant), steps=20) <= tolerance


def test_bf16_tolerance_tells_float32_and_wrong_derivatives_apart(monkeypatch):
    relu = config_for("relu", "nesterov+decay")
    assert bf16_steps_from_the_same_state(relu, steps=20, hand_precision="fp32") > BF16_TOLERANCE["another formula"]
    tanh = ACTIVATIONS["tanh"]

    def wrong(z, a, out, scratch):
        tanh.derivative(z, a, out, scratch)
        out.mul_(1.01)

    monkeypatch.setitem(ACTIVATIONS, "tanh", type(tanh)(tanh.forward, wrong))
    assert bf16_steps_from_the_same_state(config_for("tanh", "plain"), steps=20) > BF16_TOLERANCE["same formula"]


def test_bf16_products_are_bfloat16_and_the_masters_float32():
    config = config_for("relu", "dropout+smoothing")
    _, _, hand, model = both_engines(config, precision="bf16")
    images, labels = next(batches(1))
    hand.step(images, labels, 0.1)
    buffers = hand.buffers(len(labels))
    assert {tensor.dtype for tensor in [*buffers.z, *buffers.a, *buffers.delta, *hand.product_weights]} == {
        torch.bfloat16
    }
    kept = torch.cat([mask.flatten() for mask in buffers.mask])  # dropout 0.3: masks drawn at exactly keep = 0.7
    assert kept.dtype == torch.float32
    assert set(kept.unique().tolist()) == {0.0, torch.tensor(1 / 0.7, dtype=torch.float32).item()}
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    assert {buffer.dtype for buffer in hand.momentum_buffers} == {torch.float32}
    state = hand.optimizer_state()  # torch.optim.SGD's format, float32: a checkpoint resumes in either precision
    assert all(entry["momentum_buffer"].dtype == torch.float32 for entry in state["state"].values())


# -- each f'(z) in float64 -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATION_NAMES)
def test_each_derivative_matches_finite_differences_and_autograd(activation):
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(400, dtype=torch.float64, generator=generator) * 4
    z = z[z.abs() > 1e-3]  # away from relu's kink, where the derivative is a choice
    f = ACTIVATIONS[activation]
    module = ACTIVATION_LAYERS[activation]()
    a = torch.empty_like(z)
    f.forward(z, a)
    assert torch.equal(a, module(z)), "the engine's f is nn.Sequential's f"

    slope = torch.ones_like(z)
    if f.derivative is not None:
        f.derivative(z, a, slope, torch.empty_like(z))
    step = 1e-6
    plus, minus = torch.empty_like(z), torch.empty_like(z)
    f.forward(z + step, plus)
    f.forward(z - step, minus)
    assert torch.allclose(slope, (plus - minus) / (2 * step), atol=1e-7), "f'(z) against (f(z+h) - f(z-h)) / 2h"

    leaf = z.clone().requires_grad_()
    (autograd_slope,) = torch.autograd.grad(module(leaf).sum(), leaf)
    assert torch.allclose(slope, autograd_slope, atol=1e-12), "f'(z) against autograd"


@pytest.mark.parametrize("activation", ["identity", "relu", "tanh", "sigmoid", "gelu"])
def test_the_whole_gradient_matches_finite_differences_of_the_loss(activation):
    """gradcheck, by hand, in float64: with lr = 1 and no momentum a step moves each parameter by -dL/dp."""
    plain_sgd = ["optim.momentum=0", "optim.nesterov=false", "optim.weight_decay=0"]
    config = load_config(None, [f"model.activation={activation}", "model.hidden=[6,5]", *plain_sgd])
    torch.manual_seed(3)
    model = build_model(config.model).double()
    inputs = torch.randn(4, 784, dtype=torch.float64)
    labels = torch.tensor([0, 3, 9, 3])
    before = [p.detach().clone() for p in model.parameters()]
    engine = BackpropEngine(copy.deepcopy(model), config.model, config.optim, 0.1, max_batch=4)
    engine.step(inputs, labels, lr=1.0)
    gradients = [b - a for b, a in zip(before, engine.parameters, strict=True)]

    def loss() -> float:
        return nn.functional.cross_entropy(model(inputs), labels, label_smoothing=0.1).item()

    checked = 0
    with torch.no_grad():
        for parameter, gradient in zip(model.parameters(), gradients, strict=True):
            flat, flat_gradient = parameter.view(-1), gradient.view(-1)
            for index in torch.randperm(len(flat), generator=torch.Generator().manual_seed(checked))[:6]:
                saved = flat[index].item()
                flat[index] = saved + 1e-6
                up = loss()
                flat[index] = saved - 1e-6
                down = loss()
                flat[index] = saved
                assert abs((up - down) / 2e-6 - flat_gradient[index].item()) < 1e-7
                checked += 1
    assert checked == 6 + 6 + 6 + 5 + 6 + 6  # six entries of each parameter (the 5-wide bias has five)


# -- the optimizer state -------------------------------------------------------------------------------------


def test_the_optimizer_state_is_torch_optim_sgds_before_any_step():
    config = load_config(None, [])
    autograd, _, hand, _ = both_engines(config)
    assert autograd.optimizer_state() == hand.optimizer_state()  # no momentum buffers yet, same group


def test_loading_a_state_from_another_model_is_refused():
    autograd, _, hand, _ = both_engines(load_config(None, []))
    autograd.step(*next(batches(1)), lr=0.1)
    state = autograd.optimizer_state()
    state["param_groups"][0]["params"] = state["param_groups"][0]["params"][:-1]
    with pytest.raises(ValueError, match="does not match"):
        hand.load_optimizer_state(state)


# -- checkpoints do not care which engine wrote them ---------------------------------------------------------

RESUME_SETTINGS = [
    "data.verify_checksums=false",
    "train.val_size=100",
    "train.epochs=2",
    "train.batch_size=32",
    "model.hidden=[32,16]",
    # no dropout: each engine draws its masks its own way (the 50-step tests hand the engine's to autograd)
    "train.label_smoothing=0.1",
]


class StopAfterFirstEpoch(Exception):
    pass


def stop_after_first_epoch(row):
    raise StopAfterFirstEpoch


def resume_with(engine: str, out, data_dir) -> Trainer:
    """What `train --resume` does, with the engine swapped."""
    run = RunFolder(out)
    checkpoint = load_checkpoint(run.last_checkpoint)
    config = checkpoint_config(run.last_checkpoint, checkpoint)
    state = read_training_state(run.last_checkpoint, checkpoint)
    trainer = Trainer(config, run, torch.device("cpu"), log=None, progress_bars=False, resume_command="")
    trainer.load_data(data_dir)
    trainer.start_engine({"step": {"engine": engine, "precision": "fp32", "why": "swapped by the test"}})
    trainer.restore(checkpoint, state)
    with StopSignals() as stop:
        trainer.fit(stop)
    return trainer


@pytest.mark.parametrize(("first", "second"), [("autograd", "backprop"), ("backprop", "autograd")])
def test_a_run_started_with_one_engine_resumes_with_the_other(first, second, tiny_data, tmp_path):
    def config(engine):
        return load_config(None, [*RESUME_SETTINGS, f"train.engine={engine}"])

    quiet = {"data_dir": tiny_data, "log": None, "progress_bars": False}
    whole = train(config(second), out=tmp_path / "whole", **quiet)
    assert whole["engine"] == second
    with pytest.raises(StopAfterFirstEpoch):
        train(config(first), out=tmp_path / "switched", on_epoch=stop_after_first_epoch, **quiet)
    assert load_checkpoint(tmp_path / "switched" / "last.pt")["progress"]["epoch"] == 1

    trainer = resume_with(second, tmp_path / "switched", tiny_data)
    assert trainer.engine.name == second
    expected = load_checkpoint(tmp_path / "whole" / "last.pt")
    for name, value in trainer.model.state_dict().items():
        difference = (value - expected["model"][name]).abs().max().item()
        assert difference <= TOLERANCE, f"{name} differs by {difference:.2e} from the run that never switched"
    momentum = trainer.engine.optimizer_state()["state"]
    for index, state in expected["optimizer"]["state"].items():
        assert (state["momentum_buffer"] - momentum[index]["momentum_buffer"]).abs().max() <= TOLERANCE


class FakeGraph:
    """A CUDA graph stand-in on the CPU: `replay` runs whatever the test makes of it."""

    def __init__(self, replay):
        self.replay = replay


def graph_faults(engine):
    """What each simulated fault makes of capture(); the working graph replays the real step."""
    calls = {"replays": 0}

    def real_step():
        engine.train_step(*engine.graph_inputs)

    def raising(message):
        raise RuntimeError(message)

    def replay_raising_later():
        calls["replays"] += 1
        if calls["replays"] > 2:
            raising("CUDA error: an illegal memory access was encountered")
        real_step()

    def wrong():
        real_step()
        engine.weights[0].add_(1e-3)  # a replay that updates what the eager step would not

    return {
        "works": lambda *_: FakeGraph(real_step),
        "capture raises": lambda *_: raising("CUDA error: operation not permitted when stream is capturing"),
        "first replay raises": lambda *_: FakeGraph(lambda: raising("CUDA error: invalid device function")),
        "a later replay raises": lambda *_: FakeGraph(replay_raising_later),
        "first replay disagrees": lambda *_: FakeGraph(wrong),
    }


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("works", None),
        ("capture raises", "could not be captured (CUDA error: operation not permitted"),
        ("first replay raises", "failed on its first replay (CUDA error: invalid device function)"),
        ("a later replay raises", "failed on replay (CUDA error: an illegal memory access"),
        ("first replay disagrees", "disagreed with the eager step by 0.001 on its first batch"),
    ],
)
def test_a_cuda_graph_that_fails_falls_back_to_the_eager_step_with_one_line(fault, said, monkeypatch, capsys):
    """No GPU needed: the graph path runs on the CPU with capture() replaced by each fault. Whatever happens, the
    run's numbers are autograd's SGD, and a fallback is one warning line on stderr."""
    config = config_for("tanh", "dropout+smoothing")
    torch.manual_seed(0)
    reference = build_model(config.model)
    model = copy.deepcopy(reference)
    hand = BackpropEngine(model, config.model, config.optim, 0.1, max_batch=BATCH, cuda_graph=True)
    monkeypatch.setattr(hand, "capture", graph_faults(hand)[fault])
    autograd = AutogradEngine(reference, config, torch.device("cpu"))
    given = GivenMask()
    reference[3] = given  # the dropout after the first hidden layer takes the engine's mask
    given_second = GivenMask()
    reference[6] = given_second
    for step, (images, labels) in enumerate(batches(30)):
        lr = learning_rate(config.optim, step, STEPS_PER_EPOCH, config.train.epochs)
        hand.step(images, labels, lr)
        given.mask, given_second.mask = (hand.buffers(len(labels)).mask[i].clone() for i in range(2))
        autograd.step(images, labels, lr)
    assert_same_training_state(autograd, reference, hand, model)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    if said is None:
        assert lines == [] and hand.graph is not None and hand.use_cuda_graph
    else:
        assert len(lines) == 1 and said in lines[0] and "goes on with the eager step" in lines[0], lines
        assert hand.graph is None and not hand.use_cuda_graph
