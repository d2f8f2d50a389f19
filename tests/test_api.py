"""The Python API (mnist_ffn.train, load, evaluate) against the CLI, which calls the same functions."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

import mnist_ffn
from mnist_ffn.errors import CheckpointError, ConfigError, ImageError, UsageError
from tests.helpers import PROJECT_ROOT, TINY_FLAGS, run_cli

EXAMPLES = sorted((PROJECT_ROOT / "examples").glob("*.png"))
TINY = {"data.verify_checksums": False, "train.val_size": 100}


def test_train_returns_the_run_folder_its_summary_and_best(tiny_data, tmp_path):
    result = mnist_ffn.train(
        overrides={**TINY, "train.epochs": 2, "model.hidden": [32]}, out=tmp_path / "run", data_dir=tiny_data
    )
    assert result.folder == tmp_path / "run" and result.best == tmp_path / "run" / "best.pt"
    assert result.summary == json.loads((result.folder / "summary.json").read_text())
    assert result.best.is_file() and result.summary["epochs"] == 2
    assert "hidden = [32]" in (result.folder / "config.toml").read_text()
    # the same config through the CLI: the same numbers (one code path, deterministic on the CPU)
    cli = run_cli("train", "--data-dir", tiny_data, "--out", tmp_path / "cli", "--quiet", *TINY_FLAGS,
                  "--set", "train.epochs=2", "--set", "model.hidden=[32]")  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    from_cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert from_cli["test_accuracy"] == result.summary["test_accuracy"]
    assert from_cli["final_train_loss"] == result.summary["final_train_loss"]


def test_load_gives_an_eval_mode_sequential_whose_predictions_are_the_clis(tiny_run):
    network = mnist_ffn.load(tiny_run / "best.pt")
    assert isinstance(network, nn.Sequential) and not network.training
    assert network.dataset == "mnist" and network.classes == [str(digit) for digit in range(10)]
    assert network.config == mnist_ffn.api.load_config(tiny_run / "config.toml")
    probabilities = network.predict(EXAMPLES)
    assert probabilities.shape == (len(EXAMPLES), 10)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(EXAMPLES)))
    cli = run_cli("predict", tiny_run / "best.pt", *EXAMPLES, "--json")
    assert cli.returncode == 0, cli.stderr
    for row, expected in zip(probabilities, json.loads(cli.stdout)["predictions"], strict=True):
        best = expected["top"][0]
        assert int(row.argmax()) == best["index"]
        assert float(row.max()) == pytest.approx(best["probability"], abs=1e-6)
    from PIL import Image

    with Image.open(EXAMPLES[0]) as image:  # a PIL image gives what its file gives
        assert torch.equal(network.predict(image), network.predict(EXAMPLES[0]))


def test_evaluate_is_what_eval_json_prints(tiny_run, tiny_data):
    report = mnist_ffn.evaluate(tiny_run / "best.pt", data_dir=tiny_data)
    cli = run_cli("eval", tiny_run / "best.pt", "--data-dir", tiny_data, "--json")
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout) == json.loads(json.dumps(report))
    assert mnist_ffn.evaluate(tiny_run / "best.pt", "val", tiny_data)["split"] == "val"


def test_errors_are_the_projects_own_with_the_clis_line(tiny_run, tmp_path):
    with pytest.raises(ConfigError) as raised:
        mnist_ffn.train("bets", out=tmp_path / "x")
    cli = run_cli("train", "--config", "bets", "--out", tmp_path / "y")
    assert cli.stderr.strip() == f"mnist-ffn: error: {raised.value}"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        mnist_ffn.train(overrides={"optim.lr": -1}, out=tmp_path / "x")
    with pytest.raises(CheckpointError):
        mnist_ffn.load(tiny_run / "metrics.csv")
    with pytest.raises(ImageError, match="no such image file"):
        mnist_ffn.load(tiny_run / "best.pt").predict([tmp_path / "missing.png"])
    with pytest.raises(UsageError, match="split"):
        mnist_ffn.evaluate(tiny_run / "best.pt", "validation")
    assert issubclass(ConfigError, mnist_ffn.MnistFfnError)


def test_importing_the_package_does_not_import_torch():
    code = "import sys, mnist_ffn; print('torch' in sys.modules, mnist_ffn.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[0] == "False", result.stdout


def test_train_runs_from_any_thread_and_leaves_the_callers_random_state_as_it_was(tiny_data, tmp_path):
    """A web app or a thread pool trains as the main thread does; train, load, evaluate and predict_points leave
    the caller's own next random numbers as they would have been."""
    import threading

    results, errors = [], []

    def work():
        try:
            results.append(mnist_ffn.train(overrides={**TINY, "train.epochs": 1}, out=tmp_path / "thread",
                                           data_dir=tiny_data))  # fmt: skip
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert not errors and results[0].summary["epochs"] == 1, errors
    plane = mnist_ffn.train(overrides={"data.dataset": "xor", "train.epochs": 2}, out=tmp_path / "xor")
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    mnist_ffn.train(overrides={**TINY, "train.epochs": 1}, out=tmp_path / "seeded", data_dir=tiny_data)
    network = mnist_ffn.load(plane.best)
    network.predict_points([[1.0, 2.0]])
    mnist_ffn.evaluate(plane.best)
    assert torch.equal(torch.rand(5), expected), "the caller's random numbers moved"


def test_the_apis_inputs_are_checked_with_one_line_each(tiny_run, tiny_data, tmp_path):
    """What a script might pass: each wrong thing is one MnistFfnError naming it, never a raw exception."""
    with pytest.raises(UsageError, match='device "tpu": choose one of auto, cpu, cuda, mps'):
        mnist_ffn.load(tiny_run / "best.pt", device="tpu")
    with pytest.raises(UsageError, match='device "tpu"'):
        mnist_ffn.train(overrides=TINY, out=tmp_path / "x", data_dir=tiny_data, device="tpu")
    with pytest.raises(UsageError, match="resume continues a run with its saved config"):
        mnist_ffn.train("smoke", resume=tiny_run)
    with pytest.raises(UsageError, match="not a config value"):
        mnist_ffn.train(overrides={"optim.lr": object()}, out=tmp_path / "x")
    with pytest.raises(UsageError, match=r"'section\.key=value' strings"):
        mnist_ffn.train(overrides=[("optim.lr", 0.1)], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    # a string is one override; a path, a tuple and numpy or torch numbers are the values they stand for
    import numpy

    config = mnist_ffn.api.resolve_config(None, "optim.lr=0.05")
    assert config.optim.lr == 0.05
    config = mnist_ffn.api.resolve_config(
        None,
        {"optim.lr": numpy.float32(0.25), "train.epochs": torch.tensor(3), "model.hidden": (64, 32),
         "data.points": tmp_path / "mine.csv"},
    )  # fmt: skip
    assert (config.optim.lr, config.train.epochs, config.model.hidden) == (0.25, 3, [64, 32])
    assert config.data.points == str(tmp_path / "mine.csv")
    network = mnist_ffn.load(tiny_run / "best.pt")
    with pytest.raises(UsageError, match="a network of images"):
        network.predict_points([[1.0, 2.0]])
    with pytest.raises(UsageError, match="give image files, PIL images, bytes or pixel arrays"):
        network.predict(3.5)
    with pytest.raises(UsageError, match="pixel arrays are uint8"):
        network.predict(numpy.full((28, 28), 7.0))
    with pytest.raises(UsageError, match=r"\(H, W\), \(N, H, W\)"):
        network.predict(numpy.zeros((2, 3, 28, 28), dtype=numpy.uint8))
    with pytest.raises(ImageError, match="not an image Pillow can read"):
        network.predict(b"not a png")
    points = mnist_ffn.load(mnist_ffn.train(overrides={"data.dataset": "gauss", "train.epochs": 1},
                                            out=tmp_path / "gauss").best)  # fmt: skip
    for wrong in ([1.0, 2.0, 3.0], [[1.0, 2.0, 3.0]], "points", [[float("nan"), 1.0]]):
        with pytest.raises(UsageError, match="predict_points"):
            points.predict_points(wrong)


def test_predict_takes_pixel_arrays_and_bytes_as_the_files_they_are(tiny_run):
    """An image file's bytes, its pixels as a uint8 array or tensor, as ToTensor's floats in [0, 1], or a batch of
    them: the same probabilities as the file."""
    import io

    import numpy
    from PIL import Image

    network = mnist_ffn.load(tiny_run / "best.pt")
    with Image.open(EXAMPLES[0]) as image:
        grey = image.convert("L")
    pixels = numpy.asarray(grey)
    expected = network.predict(grey)
    png = io.BytesIO()
    grey.save(png, format="PNG")
    for same in (png.getvalue(), pixels, torch.from_numpy(pixels.copy()), pixels / 255.0,
                 torch.from_numpy(pixels.copy())[None, None].float() / 255):  # fmt: skip
        assert torch.allclose(network.predict(same), expected, atol=1e-6)
    assert network.predict(numpy.stack([pixels, pixels])).shape == (2, 10)


def test_two_threads_training_at_once_get_the_numbers_their_seeds_give(tmp_path):
    """Dropout draws from torch's process-wide generator: two runs in two threads at once end as each ends alone."""
    import threading

    overrides = {"data.dataset": "circle", "model.dropout": 0.3, "train.epochs": 3}
    alone = mnist_ffn.train(overrides=overrides, out=tmp_path / "alone").summary
    results = {}
    threads = [threading.Thread(target=lambda name=name: results.update({name: mnist_ffn.train(
        overrides=overrides, out=tmp_path / name).summary})) for name in ("a", "b")]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("a", "b"):
        assert results[name]["test_loss"] == alone["test_loss"], name


def test_more_of_what_a_script_might_pass_is_one_line(tiny_run, tmp_path):
    import numpy
    from PIL import Image

    network = mnist_ffn.load(tiny_run / "best.pt")
    for wrong in (numpy.array(["a", "b"]), numpy.array([object()] * 4), numpy.ones((28, 28), dtype=complex)):
        with pytest.raises(UsageError, match="predict: "):
            network.predict(wrong)
    with pytest.raises(ImageError, match="0x0 pixels"):
        network.predict(Image.new("L", (0, 0)))
    with pytest.raises(UsageError, match="overrides: give"):
        mnist_ffn.train(overrides=5, out=tmp_path / "x")
    with pytest.raises(UsageError, match="config: a preset's name or a TOML file, not 5"):
        mnist_ffn.train(5, out=tmp_path / "x")
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    for value in (10**5_000, deep):
        with pytest.raises(UsageError, match="4,300 digits"):
            mnist_ffn.train(overrides={"model.hidden": value}, out=tmp_path / "x")
    config = mnist_ffn.api.resolve_config(None, {"data.dataset": "xor", "optim.lr": numpy.float64(0.05)})
    assert config.optim.lr == 0.05 and type(config.optim.lr) is float
    with pytest.raises(ConfigError, match=r"optim\.lr: must be a finite number"):
        mnist_ffn.api.resolve_config(None, {"optim.lr": numpy.float64("inf")})
    points = mnist_ffn.load(mnist_ffn.train(overrides={"data.dataset": "xor", "train.epochs": 1},
                                            out=tmp_path / "xor").best)  # fmt: skip
    with pytest.raises(UsageError, match="predict_points"):
        points.predict_points([[10**400, 1.0]])
    assert not (tmp_path / "x").exists()
