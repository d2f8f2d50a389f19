"""2-D data sets: the lesson's slide in numbers, their pictures, a person's CSV, and the same pipeline as MNIST.

On circle and XOR a network without an activation is one linear map, however deep: it does no better than the
best straight line can (about 70% of the test points), while ReLU and tanh separate the classes. Held here over
seeds 0-2 with each data set's defaults.
"""

import functools
import json
from pathlib import Path

import pytest
import torch

import mnist_ffn
from mnist_ffn.config import load_config
from mnist_ffn.data.load import load_data
from mnist_ffn.data.plane import generate
from tests.helpers import assert_one_line_error, best_line_accuracy, run_cli


def compare_on(dataset: str, seed: int, out, *extra: str) -> dict[str, float]:
    result = run_cli("compare", "--dataset", dataset, "--activations", "identity,relu,tanh", "--out", out,
                     "--quiet", "--set", f"train.seed={seed}", *extra)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {
        row["activation"]: row["test_accuracy"] for row in json.loads((out / "compare.json").read_text())["results"]
    }


@functools.cache
def best_line_on(dataset: str, seed: int) -> float:
    """best_line_accuracy on the test points of `dataset` as `train --dataset` makes them from `seed`."""
    raw = load_data(load_config(None, [f'data.dataset="{dataset}"']).data, Path(), seed)
    return best_line_accuracy(raw.test_points, raw.test_labels)


@pytest.mark.parametrize("dataset", ["circle", "xor"])
def test_without_an_activation_no_depth_helps_and_relu_and_tanh_separate_the_classes(dataset, tmp_path):
    """Identity is held to the best straight line exactly (no margin: it is one); relu's and tanh's 95% is 2 points
    under the lowest of 20 runs measured (seeds 0-4 on both sets, the same numbers on the AVX-512 and the AVX2
    kernel paths: 97.0%, tanh on circle, seed 2), where the best line reaches 68-72%."""
    for seed in (0, 1, 2):
        accuracy = compare_on(dataset, seed, tmp_path / f"seed{seed}")
        line = best_line_on(dataset, seed)
        assert line <= 0.75, (seed, line)  # a straight line through a disk or 4 quadrants: about 3 in 4
        assert accuracy["identity"] <= line, (seed, line, accuracy)
        assert accuracy["relu"] >= 0.95 and accuracy["tanh"] >= 0.95, (seed, accuracy)
    deep = run_cli("train", "--dataset", dataset, "--set", "model.activation=identity", "--set",
                   "model.hidden=[16,16,16,16]", "--out", tmp_path / "deep", "--quiet")  # fmt: skip
    assert deep.returncode == 0, deep.stderr
    summary = json.loads((tmp_path / "deep" / "summary.json").read_text())
    assert summary["test_accuracy"] <= best_line_on(dataset, 0)


def test_an_identity_network_is_one_affine_map_and_relu_is_not(tmp_path):
    """What the boundary picture shows, in numbers: identity's logits are affine in the point, f(mid) = mean of f."""
    nets = {}
    for activation in ("identity", "relu"):
        out = tmp_path / activation
        trained = run_cli("train", "--dataset", "circle", "--set", f"model.activation={activation}", "--out", out,
                          "--quiet", "--set", "train.epochs=20")  # fmt: skip
        assert trained.returncode == 0, trained.stderr
        nets[activation] = mnist_ffn.load(out / "best.pt", device="cpu")
    a, b = torch.rand(200, 2) * 12 - 6, torch.rand(200, 2) * 12 - 6

    def logits(network, xy):
        with torch.inference_mode():
            return network(network.inputs_of_points(xy))

    for name, network in nets.items():
        gap = (logits(network, (a + b) / 2) - (logits(network, a) + logits(network, b)) / 2).abs().max()
        assert (gap < 1e-4) if name == "identity" else (gap > 0.1), (name, float(gap))


def test_plot_draws_boundaries_and_neurons_that_differ_between_identity_and_relu(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    out = tmp_path / "compare"
    result = run_cli("compare", "--dataset", "xor", "--activations", "identity,relu", "--out", out, "--quiet",
                     "--set", "train.epochs=30")  # fmt: skip
    assert result.returncode == 0, result.stderr
    plotted = run_cli("plot", out)
    assert plotted.returncode == 0, plotted.stderr
    assert {"compare.png", "boundaries.png"} <= {path.name for path in out.iterdir()}
    for activation in ("identity", "relu"):
        drawn = run_cli("plot", out / activation)
        assert drawn.returncode == 0, drawn.stderr
        for name in ("boundary.png", "neurons.png", "loss.png", "confusion.png"):
            assert (out / activation / name).stat().st_size > 5_000, (activation, name)
    pictures = [Image.open(out / activation / "boundary.png").convert("RGB") for activation in ("identity", "relu")]
    assert pictures[0].size == pictures[1].size and pictures[0].tobytes() != pictures[1].tobytes()


def test_generated_sets_come_from_the_seed_and_spiral_has_one_class_per_arm():
    assert generate("circle", 100, 0.1, 3).xy == generate("circle", 100, 0.1, 3).xy
    assert generate("circle", 100, 0.1, 3).xy != generate("circle", 100, 0.1, 4).xy
    for name in ("circle", "xor", "gauss"):
        points = generate(name, 200, 0.0, 0)
        assert len(points.xy) == 200 and sorted(set(points.labels)) == [0, 1]
        assert all(max(abs(x), abs(y)) <= 6 for x, y in points.xy) or name == "gauss"
    spiral = generate("spiral", 300, 0.0, 0, arms=5)
    assert sorted(set(spiral.labels)) == [0, 1, 2, 3, 4] and len(spiral.classes) == 5


def test_a_five_arm_spiral_trains_with_softmax_over_five_classes_and_evaluates_the_same(tmp_path):
    out = tmp_path / "spiral"
    result = run_cli("train", "--dataset", "spiral", "--set", "data.arms=5", "--set", "train.epochs=5", "--out", out,
                     "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["classes"]) == 5 and summary["architecture"].startswith("2-32-32-5")
    evaluated = run_cli("eval", out / "best.pt", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == summary["test_accuracy"]


def test_a_run_on_points_resumes_to_the_same_weights(tmp_path):
    from mnist_ffn.training.trainer import train

    config = load_config(None, ['data.dataset="xor"', "train.epochs=6"])
    whole = train(config, data_dir=tmp_path, out=tmp_path / "whole", log=None, progress_bars=False)

    def stop_after_three(row):
        if row["epoch"] == 3:
            raise KeyboardInterrupt  # any exception raised here stops the run, resumable

    with pytest.raises(KeyboardInterrupt):
        train(config, data_dir=tmp_path, out=tmp_path / "cut", log=None, progress_bars=False, on_epoch=stop_after_three)
    resumed = train(None, data_dir=tmp_path, out=tmp_path / "cut", resume=True, log=None, progress_bars=False)
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--set", "data.points=x.csv", "--dataset", "mnist"], ["data.points", "leave data.dataset unset"]),
        (["--dataset", "circle", "--set", "augment.rotate=10"], ["augment.rotate", "2-D"]),
        (["--dataset", "circle", "--set", 'data.features=["x3"]'], ["data.features", "x1^2"]),
        (["--dataset", "spiral", "--set", "data.arms=1"], ["data.arms"]),
        (["--dataset", "circle", "--set", "data.noise=0.9"], ["data.noise"]),
        (["--set", "data.points=missing.csv"], ["missing.csv", "no such file"]),
    ],
)
def test_bad_2d_configs_are_one_line(flags, fragments, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(run_cli("train", *flags, "--out", tmp_path / "r"), 2, *fragments)
    assert not (tmp_path / "r").exists()


def test_predict_and_demo_refuse_a_network_of_points(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "--dataset", "gauss", "--set", "train.epochs=2", "--out", out, "--quiet").returncode == 0
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28), 255).save(image)
    assert_one_line_error(run_cli("predict", out / "best.pt", image), 2, "2-D points", "images")
    assert_one_line_error(run_cli("demo", out / "best.pt", "--no-browser"), 2, "2-D points", "drawings")
    network = mnist_ffn.load(out / "best.pt")
    probabilities = network.predict_points([[2.0, 2.0], [-2.0, -2.0]])
    assert probabilities.shape == (2, 2) and torch.allclose(probabilities.sum(1), torch.ones(2))


def test_a_sweep_over_a_2d_set_runs_each_point_with_the_sets_defaults(tmp_path):
    pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
    spec = tmp_path / "xor.toml"
    spec.write_text('[base]\ndata.dataset = "xor"\ntrain.epochs = 10\n\n[space]\nmodel.activation = ["identity", '
                    '"relu"]\n\n[sweep]\nseeds = [0]\npruner = "none"\n')  # fmt: skip
    result = run_cli("sweep", spec, "--out", tmp_path / "sweep", "--json")
    assert result.returncode == 0, result.stderr
    points = {row["point"]: row for row in json.loads(result.stdout)["points"]}
    assert set(points) == {"activation=identity", "activation=relu"}
    config = load_config(next((tmp_path / "sweep" / "trials").glob("*relu*")) / "config.toml")
    assert config.data.dataset == "xor" and config.model.hidden == [16, 16] and config.train.val_size == 50


def test_a_run_on_a_csv_is_never_evaluated_or_plotted_on_changed_points(tmp_path):
    csv = tmp_path / "mine.csv"
    csv.write_text("".join(f"{x},{y},{int(x > y)}\n" for x in range(-5, 6) for y in range(-5, 6)))
    out = tmp_path / "run"
    assert run_cli("train", "--set", f"data.points={csv}", "--set", "train.epochs=3", "--out", out,
                   "--quiet").returncode == 0  # fmt: skip
    assert run_cli("eval", out / "best.pt").returncode == 0
    csv.write_text(csv.read_text().replace("5,5,0", "5,5,1"))
    assert_one_line_error(run_cli("eval", out / "best.pt"), 1, "mine.csv", "changed", "trained on")
    assert_one_line_error(run_cli("plot", out), 1, "mine.csv", "changed")


def test_a_2d_run_trains_on_one_thread_and_gives_the_callers_threads_back(tmp_path):
    """The 2-D sets' default of one thread (3x faster for their tiny steps) holds for that run only: a script or a
    notebook that trains MNIST next gets its threads back, and its numbers."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not 1, or giving them back would not show (the tests' workers may run on one)
    try:
        result = mnist_ffn.train(overrides={"data.dataset": "xor", "train.epochs": 2}, out=tmp_path / "xor", log=None)
        assert result.summary["threads"] == 1
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
