"""A trained network as a Hugging Face style model folder: `model.safetensors`, `config.json` and a model card.

    model.safetensors   the weights and biases, float32, named layers.K.weight and layers.K.bias (K = 0 the lowest
                        z = Wx + b layer): a file of tensors and their shapes, nothing that runs when read
    config.json         the layer widths, activation, dropout, normalization, classes, data set (and for a 2-D
                        set its features), and the whole mnist-ffn config that trained it
    README.md           the model card: what it is, the data, its test accuracy and how it was measured, the config,
                        and how to load it with mnist_ffn.load and with plain torch + safetensors

`read_model_folder` turns such a folder back into what a checkpoint holds, so that `mnist_ffn.load`, `eval`,
`predict` and `demo` take the folder wherever they take a best.pt. A folder that is damaged or whose config.json
disagrees with its tensors is one CheckpointError line, as a damaged checkpoint is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from mnist_ffn.catalog import PLAYGROUND_SCALE
from mnist_ffn.config import Config, ConfigError, config_from_dict, to_toml
from mnist_ffn.errors import CheckpointError, MnistFfnError, UsageError
from mnist_ffn.files import names_a_folder, umask
from mnist_ffn.messages import cut, reason
from mnist_ffn.training.checkpoint import check_model_fields
from mnist_ffn.training.model import build_model, linear_layers
from mnist_ffn.version import __version__

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FORMAT, FORMAT_VERSION = "mnist-ffn model folder", 1
MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few kilobytes; a larger one is not ours
INSTALL = "safetensors folders need the export extra: pip install 'mnist-ffn[export]'"


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise MnistFfnError(INSTALL) from None
    return safetensors.torch


# -- writing ------------------------------------------------------------------------------------------------


def default_folder(checkpoint: Path) -> Path:
    """best.pt -> best-safetensors/ beside it."""
    return checkpoint.with_name(f"{checkpoint.stem}-safetensors")


def check_folder_target(out: Path, checkpoint: Path, *, force: bool) -> None:
    """Refuse, before anything is written, a target that is a file, lies in no folder, or is a folder that holds
    anything but an earlier export (replaced only with `force`: a folder of other files is never emptied)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        example = default_folder(checkpoint).name
        raise UsageError(f"--out {cut(str(out), 300)}: not a folder; give the folder to write, e.g. {example}")
    if not out.parent.is_dir():
        raise UsageError(f"--out {cut(str(out), 300)}: no such folder {cut(str(out.parent), 300)}")
    here = Path.cwd()
    if out.resolve() == here or out.resolve() in here.parents:
        raise UsageError(f"--out {cut(str(out), 300)}: is the folder you are in; name a new folder to write")
    if out.is_dir():
        found = sorted(path.name for path in out.iterdir())
        if found and not _an_export(out, found):
            raise UsageError(
                f"--out {out}: a folder holding other files ({', '.join(found[:3])}); "
                "give a new folder, or an earlier export's to replace it with --force"
            )
        if found and not force:
            raise UsageError(f"--out {out}: holds an earlier export; add --force to replace it")


def _an_export(folder: Path, found: list[str]) -> bool:
    """Only an earlier export's files, its config.json ours: what --force may replace (never a person's files)."""
    if not set(found) <= {WEIGHTS, CONFIG, CARD} or CONFIG not in found:
        return False
    try:
        with open(folder / CONFIG, encoding="utf-8") as file:
            return json.loads(file.read(MAX_CONFIG_BYTES)).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_model_folder(network, out: Path, accuracy: str, *, force: bool) -> Path:
    """Write the loaded `network` (inference.network.Network) as a model folder, whole or not at all: the files
    go into a new folder beside `out`, which then takes its place. `accuracy`: the model card's test line."""
    safetensors = _safetensors()
    linears = linear_layers(network)
    tensors = {}
    for index, layer in enumerate(linears):
        tensors[f"layers.{index}.weight"] = layer.weight.detach().float().cpu().contiguous()
        tensors[f"layers.{index}.bias"] = layer.bias.detach().float().cpu().contiguous()
    description = _config_json(network, linears)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        safetensors.save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt", "producer": "mnist-ffn"})
        (staging / CONFIG).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        (staging / CARD).write_text(model_card(network, description, accuracy), encoding="utf-8")
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes a private folder; an export is as shareable as a run
        for name in (WEIGHTS, CONFIG, CARD):
            os.chmod(staging / name, 0o666 & ~umask())
        if out.is_dir():  # an earlier export (check_folder_target): swapped out, then removed
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, old / "export")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def _config_json(network, linears) -> dict:
    config: Config = network.config
    widths = [linears[0].in_features, *(layer.out_features for layer in linears)]
    inputs = (
        "the features of points (x1, x2), scaled as `plane` says, shape (N, features)"
        if network.plane is not None
        else "28x28 greyscale pixels p in 0-255, light on dark, flattened to (N, 784) and normalized: "
        "(p / 255 - mean) / std"
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mnist_ffn_version": __version__,
        "dataset": network.dataset,
        "classes": list(network.classes),
        "layers": widths,
        "activation": config.model.activation,
        "dropout": config.model.dropout,
        "normalization": dict(network.normalization),
        "plane": network.plane,
        "input": inputs,
        "output": f"logits, shape (N, {len(network.classes)}); softmax gives each class's probability",
        "tensors": {f"layers.{k}": [layer.out_features, layer.in_features] for k, layer in enumerate(linears)},
        "config": config.to_dict(),
    }


# The model card's plain-torch loader, written out in full: a test runs this very code in a fresh process with
# torch and safetensors only.
PLAIN_TORCH = """import json

import torch
from safetensors.torch import load_file

config = json.load(open("config.json"))
tensors = load_file("model.safetensors")
functions = {
    "identity": lambda z: z, "none": lambda z: z, "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
    "leaky_relu": torch.nn.functional.leaky_relu, "elu": torch.nn.functional.elu, "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu, "softplus": torch.nn.functional.softplus,
}
f = functions[config["activation"]]
layers = len(config["layers"]) - 1


def logits(x):  # x: (N, inputs) as config["input"] says; dropout is off once trained
    for k in range(layers):
        x = x @ tensors[f"layers.{k}.weight"].T + tensors[f"layers.{k}.bias"]  # z = W x + b
        if k < layers - 1:
            x = f(x)  # a = f(z)
    return x
"""

PLANE_INPUT = """
scale, sin_scale = config["plane"]["scale"], {sin_scale!r}


def inputs(xy):  # points (N, 2) in the data's coordinates -> the network's input, config["plane"]["features"]
    u = torch.as_tensor(xy, dtype=torch.float32).reshape(-1, 2) / scale
    u1, u2 = u[:, 0], u[:, 1]
    columns = {{
        "x1": u1, "x2": u2, "x1^2": u1 * u1, "x2^2": u2 * u2, "x1*x2": u1 * u2,
        "sin_x1": torch.sin(u1 * sin_scale), "sin_x2": torch.sin(u2 * sin_scale),
    }}
    return torch.stack([columns[name] for name in config["plane"]["features"]], dim=1)


# an example: the class probabilities of one point
print(logits(inputs([[0.5, -1.0]])).softmax(dim=1))
"""

MNIST_INPUT = """
mean, std = config["normalization"]["mean"], config["normalization"]["std"]


def inputs(pixels):  # images (N, 28, 28), 0-255, light ink on a dark background as MNIST's -> (N, 784)
    return (torch.as_tensor(pixels, dtype=torch.float32).reshape(len(pixels), -1) / 255 - mean) / std


# an example: the class probabilities of an empty image
print(logits(inputs(torch.zeros(1, 28, 28))).softmax(dim=1))
"""


def model_card(network, description: dict, accuracy: str) -> str:
    config: Config = network.config
    architecture = "-".join(map(str, description["layers"])) + f" {config.model.activation}"
    title = network.dataset if network.plane is None else f"{network.dataset} (2-D points)"
    example = MNIST_INPUT if network.plane is None else PLANE_INPUT.format(sin_scale=PLAYGROUND_SCALE)
    names = ", ".join(map(str, network.classes))
    usage = (
        'network.predict(["seven.png"])  # class probabilities of your images'
        if network.plane is None
        else "network.predict_points([[0.5, -1.0]])  # class probabilities of points (x1, x2)"
    )
    return f"""---
library_name: mnist-ffn
tags: [mnist-ffn, feed-forward, {network.dataset}]
---

# {architecture} on {title}

A feed-forward network (z = Wx + b, a = f(z), layer after layer) trained by mnist-ffn {__version__}:
{len(description["layers"]) - 1} linear layers of widths {description["layers"]},
activation `{config.model.activation}`, classifying {len(network.classes)} classes ({names}).

- **Data set**: {network.dataset}; input: {description["input"]}.
- **Test accuracy**: {accuracy}
- **Files**: `model.safetensors` (float32 weights `layers.K.weight`, K = 0 the lowest layer, and biases
  `layers.K.bias`), `config.json` (the widths, activation, normalization, classes and the whole training config).

## Load it with mnist-ffn

```python
import mnist_ffn

network = mnist_ffn.load("path/to/this/folder")
{usage}
```

`mnist-ffn eval`, `mnist-ffn predict` and `mnist-ffn demo` take this folder wherever they take a `best.pt`.

## Load it with plain torch and safetensors (no mnist-ffn)

From this folder:

```python
{PLAIN_TORCH}{example}```

## The config that trained it

```toml
{to_toml(config).rstrip()}
```
"""


# -- reading ------------------------------------------------------------------------------------------------


def read_model_folder(folder: Path) -> dict:
    """The checkpoint contents (training.checkpoint's keys) of a model folder; CheckpointError, one line, for a
    folder that is not one, is damaged, or whose config.json disagrees with its tensors."""
    weights, config_file = folder / WEIGHTS, folder / CONFIG
    if not weights.is_file() and not config_file.is_file():
        raise CheckpointError(
            f"{folder}: a folder without {WEIGHTS} and {CONFIG}: give a best.pt, or a folder written by "
            "`mnist-ffn export --format safetensors`"
        )
    for path in (weights, config_file):
        if not path.is_file():
            raise CheckpointError(f"{folder}: has no {path.name} (a model folder holds {WEIGHTS} and {CONFIG})")
    description, config = _read_config(config_file)
    try:
        tensors = _safetensors().load_file(str(weights), device="cpu")
    except MnistFfnError:
        raise
    except Exception as exc:  # safetensors' SafetensorError, an OSError, a header that is not JSON
        raise CheckpointError(f"{weights}: damaged, or not a safetensors file ({reason(exc)})") from None
    model_state = _model_state(tensors, description, config, config_file, weights)
    contents = {
        "config": description["config"],
        "dataset": description["dataset"],
        "classes": description["classes"],
        "normalization": description["normalization"],
        "model": model_state,
    }
    if description.get("plane") is not None:
        contents["plane"] = description["plane"]
    check_model_fields(config_file, contents, kind="model folder")  # what a checkpoint's fields must be, too
    return contents


def _read_config(path: Path) -> tuple[dict, Config]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise CheckpointError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KB; not a model folder's config")
        description = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON config ({reason(exc)})") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mnist-ffn model folder's config.json")
    if description.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {cut(repr(description.get('format_version')))}, but this mnist-ffn reads "
            f"version {FORMAT_VERSION}"
        )
    problems = _shape_problems(description)
    if problems:
        raise CheckpointError(f"{path}: {problems}")
    try:
        config = config_from_dict(description["config"], origin=str(path))
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config is not valid for this mnist-ffn ({exc})") from None
    declared = (description["layers"][1:-1], description["activation"], description.get("dropout"))
    if declared != (list(config.model.hidden), config.model.activation, config.model.dropout):
        raise CheckpointError(f"{path}: its layers, activation and dropout disagree with the config it holds")
    return description, config


def _shape_problems(description: dict) -> str:
    layers, classes = description.get("layers"), description.get("classes")
    widths_ok = isinstance(layers, list) and all(isinstance(w, int) and 0 < w <= 1 << 20 for w in layers)
    if not widths_ok or len(layers) < 2:
        return "layers: a list of at least two widths"
    if not isinstance(classes, list) or len(classes) != layers[-1]:
        return f"classes: {layers[-1]} names, one per output"
    normalization = description.get("normalization")
    if not isinstance(normalization, dict) or not all(
        isinstance(normalization.get(key), int | float) and math.isfinite(normalization[key]) for key in ("mean", "std")
    ):
        return "normalization: a mean and a std"
    if not isinstance(description.get("dataset"), str) or not isinstance(description.get("config"), dict):
        return "dataset and config are missing"
    return ""


def _model_state(tensors: dict, description: dict, config: Config, config_file: Path, weights: Path) -> dict:
    """The tensors under the names build_model's nn.Sequential gives its Linear layers (layers.K: the K-th of them,
    the lowest first), each of the shape that network has: the layout is build_model's own, read on the meta
    device (no memory, no random draws)."""
    with torch.device("meta"):
        model = build_model(config.model, num_classes=description["layers"][-1], inputs=description["layers"][0])
    linears = [(name, module) for name, module in model.named_children() if isinstance(module, torch.nn.Linear)]
    expected = {}  # the file's name -> (the network's name, its shape)
    for k, (name, layer) in enumerate(linears):
        expected[f"layers.{k}.weight"] = (f"{name}.weight", tuple(layer.weight.shape))
        expected[f"layers.{k}.bias"] = (f"{name}.bias", tuple(layer.bias.shape))
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        listed = ", ".join((missing or extra)[:3])
        what = "no tensor" if missing else "tensors it does not name"
        raise CheckpointError(f"{config_file} disagrees with {weights}: {what}: {listed}")
    for name, (_, shape) in expected.items():
        if tuple(tensors[name].shape) != shape or tensors[name].dtype != torch.float32:
            found = "x".join(map(str, tensors[name].shape))
            raise CheckpointError(
                f"{config_file} disagrees with {weights}: {name} is {found} ({tensors[name].dtype}) in the file, "
                f"float32 {'x'.join(map(str, shape))} by config.json's layers"
            )
    return {state_name: tensors[name] for name, (state_name, _) in expected.items()}


def refuse_folder_name(out: str) -> None:
    """--out for a folder export written as a file name of another format (model.onnx): a slip, refused."""
    if out and not names_a_folder(out) and Path(out).suffix in (".onnx", ".pt", ".safetensors"):
        raise UsageError(f"--out {cut(out, 300)}: safetensors export writes a folder; name one, e.g. best-safetensors")
