"""`mnist-ffn export --format safetensors`: a model folder (model.safetensors, config.json, README.md) that plain
torch + safetensors load in a fresh process to the checkpoint's logits, and that mnist_ffn.load, eval, predict and
demo take wherever they take a best.pt. A damaged or inconsistent folder is one line and exit code 1.

Without safetensors (the export extra) these skip, except under CI=true, where they fail.
"""

import json
import re
import subprocess
import sys

import pytest
import torch

import mnist_ffn
from mnist_ffn.errors import CheckpointError
from tests.helpers import PROJECT_ROOT, assert_one_line_error, real_data_dir, require_modules, run_cli, snapshot

# The model card's plain-torch code runs here with mnist_ffn made unimportable: what it computes comes from torch
# and safetensors alone. It prints, as JSON, the logits of the data in data.pt (raw pixels or raw points) through the
# card's own inputs() and logits().
FRESH = """
import sys

class NoMnistFfn:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mnist_ffn":
            raise ImportError("mnist_ffn is not to be used here")

sys.meta_path.insert(0, NoMnistFfn())
CARD_CODE
import json
data = torch.load(sys.argv[1], weights_only=True)
print(json.dumps(logits(inputs(data)).tolist()))
assert not any(name.split(".")[0] == "mnist_ffn" for name in sys.modules)
"""


def card_code(folder) -> str:
    """The model card's plain-torch block, up to its example."""
    text = (folder / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Load it with plain torch and safetensors.*?```python\n(.*?)```", text, re.S)[1]
    assert "# an example" in block
    return block.split("# an example")[0]


def fresh_logits(folder, data: torch.Tensor, tmp_path) -> torch.Tensor:
    torch.save(data, tmp_path / "data.pt")
    script = FRESH.replace("CARD_CODE", card_code(folder))
    result = subprocess.run(
        [sys.executable, "-I", "-c", script, str(tmp_path / "data.pt")],
        cwd=folder,  # the card's code reads config.json and model.safetensors from the folder it runs in
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return torch.tensor(json.loads(result.stdout))


def assert_same_logits(got: torch.Tensor, expected: torch.Tensor) -> None:
    """The checkpoint's logits: the same float32 products, which plain `x @ W.T + b` may sum in another order than
    nn.Linear's fused kernel (and another thread count): equal to about a millionth of the largest logit, and the
    same class wherever the best two are further apart than that."""
    tolerance = 1e-5 * float(expected.abs().max())
    assert got.shape == expected.shape and float((got - expected).abs().max()) <= tolerance
    best_two = expected.topk(2, dim=1).values
    clear = best_two[:, 0] - best_two[:, 1] > 2 * tolerance
    assert torch.equal(got.argmax(1)[clear], expected.argmax(1)[clear])


@pytest.fixture(autouse=True)
def _needs_safetensors():
    require_modules("safetensors", install="pip install -e '.[export]'")


@pytest.fixture(scope="module")
def plane_run(tmp_path_factory):
    """A tanh network with dropout on xor's features x1, x2, x1*x2 and sin(x1): the card's plain torch must skip
    dropout and compute every feature as training did."""
    out = tmp_path_factory.mktemp("plane") / "run"
    flags = ["--set", "data.dataset=xor", "--set", "model.activation=tanh", "--set", "model.dropout=0.2"]
    flags += ["--set", 'data.features=["x1","x2","x1*x2","sin_x1"]', "--set", "train.epochs=3"]
    flags += ["--set", "model.hidden=[8,5]"]
    result = run_cli("train", *flags, "--out", out, "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def test_a_plane_networks_folder_loads_in_plain_torch_to_the_checkpoints_logits(plane_run, tmp_path):
    folder = tmp_path / "model"
    result = run_cli("export", plane_run / "best.pt", "--format", "safetensors", "--out", folder)
    assert result.returncode == 0 and result.stdout.strip() == f"wrote {folder}", result.stderr
    assert sorted(path.name for path in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    network = mnist_ffn.load(plane_run / "best.pt", device="cpu")
    points = torch.tensor([[0.5, -1.0], [2.0, 3.0], [-4.0, 0.1]])
    with torch.inference_mode():
        expected = network(network.inputs_of_points(points))
    assert_same_logits(fresh_logits(folder, points, tmp_path), expected)  # the card's features, then its network
    config = json.loads((folder / "config.json").read_text())
    assert config["layers"] == [4, 8, 5, 2] and config["activation"] == "tanh" and config["dropout"] == 0.2
    assert config["plane"]["features"] == ["x1", "x2", "x1*x2", "sin_x1"] and config["dataset"] == "xor"
    card = (folder / "README.md").read_text()
    assert re.search(r"\*\*Test accuracy\*\*: \d+\.\d\d% on the \d+ test examples of xor", card), card
    assert re.search(r'```toml\n(.|\n)*dataset = "xor"(.|\n)*```', card) and "predict_points" in card
    # mnist_ffn.load takes the folder: the same network
    folded = mnist_ffn.load(folder, device="cpu")
    assert torch.equal(folded.predict_points(points), network.predict_points(points))
    assert folded.classes == network.classes and folded.config.to_dict() == network.config.to_dict()
    before = run_cli("eval", plane_run / "best.pt", "--json")
    after = run_cli("eval", folder, "--json")
    assert after.returncode == 0, after.stderr
    assert {**json.loads(after.stdout), "checkpoint": ""} == {**json.loads(before.stdout), "checkpoint": ""}


@pytest.mark.real_data
def test_an_mnist_folder_gives_the_checkpoints_logits_in_plain_torch_and_to_eval_predict_and_demo(
    default_run, tmp_path
):
    from mnist_ffn.data.idx import load_dataset
    from mnist_ffn.data.splits import normalize
    from mnist_ffn.web.demo import DemoModel

    folder = tmp_path / "mnist-model"
    assert run_cli("export", default_run / "best.pt", "--format", "safetensors", "--out", folder).returncode == 0
    network = mnist_ffn.load(default_run / "best.pt", device="cpu")
    raw = load_dataset(real_data_dir(), "mnist", verify_checksums=False, download=False)
    inputs = normalize(raw.test_images[:256], network.normalization["mean"], network.normalization["std"])
    with torch.inference_mode():
        expected = network(inputs)
    assert_same_logits(fresh_logits(folder, raw.test_images[:256], tmp_path), expected)  # from the pixels
    card = (folder / "README.md").read_text()
    report = mnist_ffn.evaluate(default_run / "best.pt", data_dir=real_data_dir(), device="cpu")
    assert f"**Test accuracy**: {report['accuracy']:.2%} on the 10,000 test examples of mnist" in card
    folded = json.loads(run_cli("eval", folder, "--json").stdout)
    assert folded["accuracy"] == report["accuracy"] and folded["confusion_matrix"] == report["confusion_matrix"]
    seven = PROJECT_ROOT / "examples" / "seven.png"
    by_folder, by_checkpoint = (
        json.loads(run_cli("predict", path, seven, "--json").stdout) for path in (folder, default_run / "best.pt")
    )
    assert by_folder["predictions"] == by_checkpoint["predictions"] and by_folder["predictions"][0]["top"]
    from PIL import Image

    image = Image.open(seven)
    answers = [DemoModel(path, "cpu").answer(image).probabilities for path in (folder, default_run / "best.pt")]
    assert answers[0] == answers[1]


def damaged_copies(folder, tmp_path):
    """(name, folder, what the line must say) for every way a model folder can be wrong."""
    import shutil

    def copy(name):
        target = tmp_path / name
        shutil.copytree(folder, target)
        return target

    cases = []
    truncated = copy("truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    cases.append((truncated, "damaged, or not a safetensors file"))
    noise = copy("noise")
    (noise / "model.safetensors").write_bytes(b"\xff" * 64)
    cases.append((noise, "damaged, or not a safetensors file"))
    wider = copy("wider")
    config = json.loads((wider / "config.json").read_text())
    config["layers"][1] += 1
    config["config"]["model"]["hidden"][0] += 1
    (wider / "config.json").write_text(json.dumps(config))
    cases.append((wider, "disagrees with"))
    claims = copy("claims")  # config.json's own fields against the config it holds
    config = json.loads((claims / "config.json").read_text())
    config["activation"] = "relu"
    (claims / "config.json").write_text(json.dumps(config))
    cases.append((claims, "disagree with the config it holds"))
    for name, key, value, expected in (
        ("bogus-dataset", "dataset", "bogus", "unknown data set"),
        ("image-dataset", "dataset", "mnist", "plane is given for mnist"),  # a 2-D network called an MNIST one
        ("bogus-plane", "plane", "bogus", "plane.features"),
        ("zero-std", "normalization", {"mean": 0.5, "std": 0}, "normalization.std"),
        ("odd-classes", "classes", [{"a": 1}, 2], "classes is not a list of class names"),
    ):
        odd = copy(name)
        config = json.loads((odd / "config.json").read_text())
        config[key] = value
        (odd / "config.json").write_text(json.dumps(config))
        cases.append((odd, expected))
    not_json = copy("not-json")
    (not_json / "config.json").write_text("{layers: ")
    cases.append((not_json, "not a readable JSON config"))
    no_weights = copy("no-weights")
    (no_weights / "model.safetensors").unlink()
    cases.append((no_weights, "has no model.safetensors"))
    no_config = copy("no-config")
    (no_config / "config.json").unlink()
    cases.append((no_config, "has no config.json"))
    neither = tmp_path / "neither"
    neither.mkdir()
    (neither / "notes.txt").write_text("hello")
    cases.append((neither, "a folder without model.safetensors and config.json"))
    return cases


def test_a_damaged_or_inconsistent_folder_is_one_line_and_exit_1_everywhere(plane_run, tmp_path):
    folder = tmp_path / "model"
    assert run_cli("export", plane_run / "best.pt", "--format", "safetensors", "--out", folder).returncode == 0
    for case, expected in damaged_copies(folder, tmp_path):
        before = snapshot(case)
        assert_one_line_error(run_cli("eval", case), 1, expected)
        assert_one_line_error(run_cli("export", case, "--out", tmp_path / f"{case.name}.onnx"), 1, expected)
        with pytest.raises(CheckpointError, match=re.escape(expected)):
            mnist_ffn.load(case)
        assert snapshot(case) == before  # read, never changed


def test_export_writes_a_new_folder_replaces_only_an_earlier_export_and_never_other_files(plane_run, tmp_path):
    best = plane_run / "best.pt"
    folder = tmp_path / "model"
    assert run_cli("export", best, "--format", "safetensors", "--out", folder).returncode == 0
    assert_one_line_error(run_cli("export", best, "--format", "safetensors", "--out", folder), 2, "add --force")
    (folder / "README.md").write_text("stale")
    assert run_cli("export", best, "--format", "safetensors", "--out", folder, "--force").returncode == 0
    assert (folder / "README.md").read_text().startswith("---\nlibrary_name: mnist-ffn")
    mine = tmp_path / "mine"  # a person's own README.md and config.json: not an export, never replaced
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    (mine / "config.json").write_text('{"my": "settings"}')
    mine_before = snapshot(mine)
    for flags in ((), ("--force",)):
        refused = run_cli("export", best, "--format", "safetensors", "--out", mine, *flags)
        assert_one_line_error(refused, 2, "holding other files")
    assert snapshot(mine) == mine_before
    here = run_cli("export", best, "--format", "safetensors", "--out", ".")  # the folder the command runs in
    assert_one_line_error(here, 2, "is the folder you are in")
    before = snapshot(plane_run)
    assert_one_line_error(
        run_cli("export", best, "--format", "safetensors", "--out", plane_run, "--force"), 2, "holding other files"
    )
    assert snapshot(plane_run) == before  # a run folder is never emptied to make room
    as_file = run_cli("export", best, "--format", "safetensors", "--out", tmp_path / "x.onnx")
    assert_one_line_error(as_file, 2, "writes a folder")
    assert_one_line_error(run_cli("export", best, "--format", "safetensors", "--out", best), 2, "writes a folder")
    on_a_file = run_cli("export", best, "--format", "safetensors", "--out", plane_run / "config.toml")
    assert_one_line_error(on_a_file, 2, "not a folder")
    default = run_cli("export", best, "--format", "safetensors")
    assert default.returncode == 0 and (plane_run / "best-safetensors" / "model.safetensors").is_file()
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging folder left
