"""`mnist-ffn export`: the ONNX file, run in onnxruntime, gives what the checkpoint gives.

Without the export extra (onnx, onnxscript, onnxruntime) these skip, except under CI=true, where
they fail: CI installs it.
"""

import json
import sys

import pytest
import torch
from torch import nn

from mnist_ffn.training.model import ACTIVATION_LAYERS
from tests.helpers import assert_one_line_error, real_data_dir, require_modules, run_cli, snapshot


def onnxruntime():
    return require_modules("onnx", "onnxscript", "onnxruntime", install="pip install -e '.[export]'")[2]


def session(path):
    return onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.real_data
def test_the_exported_file_reproduces_eval_on_all_10000_test_images(default_run, tmp_path):
    import mnist_ffn
    from mnist_ffn.data.idx import load_dataset

    onnxruntime()  # skips early without the extra
    out = tmp_path / "model.onnx"
    result = run_cli("export", default_run / "best.pt", "--out", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    model = session(out)
    raw = load_dataset(real_data_dir(), "mnist", verify_checksums=False, download=False)
    pixels = raw.test_images.float().div(255).unsqueeze(1)  # (10000, 1, 28, 28) in [0, 1], as ToTensor gives
    (logits,) = model.run(None, {"pixels": pixels.numpy()})
    assert logits.shape == (10_000, 10)

    network = mnist_ffn.load(default_run / "best.pt", device="cpu")
    from mnist_ffn.data.splits import normalize

    with torch.inference_mode():
        expected = network(normalize(raw.test_images, network.normalization["mean"], network.normalization["std"]))
    # The same float32 products summed in another order, by other kernels on other CPUs: equal to about a
    # millionth of the largest logit. Only where two classes are that close may the two read an image differently.
    onnx_logits = torch.from_numpy(logits)
    tolerance = 1e-5 * float(expected.abs().max())
    assert float((onnx_logits - expected).abs().max()) <= tolerance
    best_two = expected.topk(2, dim=1).values
    close = best_two[:, 0] - best_two[:, 1] <= 2 * tolerance
    assert torch.equal(onnx_logits.argmax(1)[~close], expected.argmax(1)[~close])
    onnx_correct = int((onnx_logits.argmax(1) == raw.test_labels).sum())
    report = mnist_ffn.evaluate(default_run / "best.pt", data_dir=real_data_dir(), device="cpu")
    assert abs(onnx_correct - round(report["accuracy"] * 10_000)) <= int(close.sum()), (onnx_correct, report)

    meta = model.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == [str(digit) for digit in range(10)] and meta["dataset"] == "mnist"
    for batch in (1, 3):  # any batch size
        assert model.run(None, {"pixels": pixels[:batch].numpy()})[0].shape == (batch, 10)


def test_every_activation_exports_and_runs_the_same(tmp_path):
    """One network with every activation in turn (one export, every op the project can put in a graph)."""
    from mnist_ffn.inference.export import WithNormalization, _onnx_proto

    onnxruntime()
    torch.manual_seed(0)
    layers, width = [nn.Flatten()], 784
    for activation in ACTIVATION_LAYERS.values():
        layers += [nn.Linear(width, 16), activation(), nn.Dropout(0.2)]
        width = 16
    model = WithNormalization(nn.Sequential(*layers, nn.Linear(width, 10)), 0.13, 0.31).eval()
    path = tmp_path / "all.onnx"
    path.write_bytes(_onnx_proto(model).SerializeToString())
    pixels = torch.rand(5, 1, 28, 28)
    (logits,) = session(path).run(None, {"pixels": pixels.numpy()})
    with torch.inference_mode():
        assert float((torch.from_numpy(logits) - model(pixels)).abs().max()) <= 1e-5


def test_export_by_default_writes_beside_the_checkpoint_and_refuses_bad_targets(tiny_run, tmp_path):
    onnxruntime()
    result = run_cli("export", tiny_run / "best.pt")
    assert result.returncode == 0, result.stderr
    assert (tiny_run / "best.onnx").is_file()
    assert_one_line_error(run_cli("export", tiny_run / "best.pt", "--out", tmp_path), 2, "is a folder")
    assert_one_line_error(run_cli("export", tiny_run / "best.pt", "--out", tmp_path / "no" / "x.onnx"), 2, "no such")
    assert_one_line_error(run_cli("export", tiny_run / "metrics.csv"), 1, "not a checkpoint")
    assert_one_line_error(run_cli("export", tiny_run / "best.pt", "--format", "tflite"), 2, "--format")
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(["run", "data"]), "nothing else written"


def test_without_the_export_extra_one_line_says_how_to_install_it(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    assert_one_line_error(run_cli("export", tiny_run / "best.pt"), 1, "pip install 'mnist-ffn[export]'")
    assert not (tiny_run / "best.onnx").exists()


def test_export_never_replaces_a_file_without_force_and_never_its_own_checkpoint(tiny_run, tmp_path):
    """Whatever --out names (a run's last.pt or config.toml, an earlier export, the checkpoint itself under
    another spelling): an existing file is replaced only with --force, and the checkpoint never."""
    onnxruntime()
    before = snapshot(tiny_run)
    for target in (tiny_run / "last.pt", tiny_run / "config.toml"):
        assert_one_line_error(run_cli("export", tiny_run / "best.pt", "--out", target), 2, "exists", "--force")
    for spelling in (tiny_run / "best.pt", tiny_run / ".." / tiny_run.name / "best.pt"):
        refused = run_cli("export", tiny_run / "best.pt", "--out", spelling, "--force")
        assert_one_line_error(refused, 2, "is the checkpoint being exported")
    assert snapshot(tiny_run) == before, "nothing in the run folder changed"
    out = tmp_path / "model.onnx"
    assert run_cli("export", tiny_run / "best.pt", "--out", out).returncode == 0
    first = out.read_bytes()
    assert_one_line_error(run_cli("export", tiny_run / "best.pt", "--out", out), 2, "exists", "--force")
    assert out.read_bytes() == first
    assert run_cli("export", tiny_run / "best.pt", "--out", out, "--force").returncode == 0


def test_export_writes_files_only_never_a_device_a_fifo_or_through_a_link(tiny_run, tmp_path):
    """--out naming something that is not a regular file (a FIFO here; /dev/null, run as root, is the same case)
    is refused even with --force, and left as it was; so are a link and a name written as a folder (`dir/.`)."""
    import os

    onnxruntime()
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.onnx"
    link.symlink_to(tmp_path / "elsewhere.onnx")
    folder = tmp_path / "outdir"
    for target, fragment in ((fifo, "not a regular file"), (link, "not a regular file"),
                             (f"{folder}/.", "is a folder"), (f"{folder}/", "is a folder")):  # fmt: skip
        result = run_cli("export", tiny_run / "best.pt", "--out", target, "--force")
        assert_one_line_error(result, 2, fragment)
    assert fifo.is_fifo() and link.is_symlink() and not (tmp_path / "elsewhere.onnx").exists()
    assert not (tmp_path / "outdir").exists()
