"""`mnist-ffn export`: a trained network as an ONNX file, to run wherever onnxruntime runs, or as a model folder
of safetensors weights, config.json and a model card (inference.model_folder), the layout people share weights in.

The file takes what torchvision's ToTensor gives: float32 pixels in [0, 1], shaped (N, 1, 28, 28), any
N, light ink on dark as the data set's images are. The checkpoint's normalization is inside the graph,
so nothing outside it needs to know the data set's mean and std. It returns logits (N, classes); the
class names, the data set and the input's description are in the model's metadata.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from mnist_ffn.errors import MnistFfnError, UsageError
from mnist_ffn.files import names_a_folder, write_atomically
from mnist_ffn.messages import cut, one_line
from mnist_ffn.version import __version__

FORMATS = ("onnx", "safetensors")
INPUT, OUTPUT = "pixels", "logits"
INPUT_DOC = "float32 pixels in [0, 1], shape (N, 1, 28, 28), light on dark (torchvision's ToTensor of the images)"
POINTS_INPUT, POINTS_DOC = "points", "float32 points (x1, x2) of the plane, shape (N, 2), in the data's coordinates"


class WithNormalization(nn.Module):
    """The network with its input normalization in front: pixels in [0, 1] -> logits."""

    def __init__(self, network: nn.Sequential, mean: float, std: float):
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network((pixels - self.mean) / self.std)  # the network's first layer flattens (N, 1, 28, 28)


class WithFeatures(nn.Module):
    """A 2-D set's network with its features in front: points (N, 2) in the data's coordinates -> logits."""

    def __init__(self, network: nn.Sequential, names: list[str], scale: float):
        super().__init__()
        self.network, self.names, self.scale = network, list(names), float(scale)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        from mnist_ffn.data.plane import features

        return self.network(features(points, self.names, self.scale))


def default_output(checkpoint: Path) -> Path:
    """best.pt -> best.onnx beside it."""
    return checkpoint.with_suffix(".onnx")


def export(checkpoint: Path, out: Path | str | None = None, *, file_format: str = "onnx", force: bool = False) -> Path:
    """Write the checkpoint's network as `out` (default: beside the checkpoint); returns the path written.

    An existing file is replaced only with `force`, and never the checkpoint itself."""
    if file_format not in FORMATS:
        raise UsageError(f"--format {file_format}: choose one of {', '.join(FORMATS)}")
    if file_format == "safetensors":
        return export_model_folder(checkpoint, out, force=force)
    written_as = str(out) if out is not None else ""
    out = Path(out) if out is not None else default_output(checkpoint)
    check_target(out, checkpoint, force=force, example="model.onnx", written_as=written_as)
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise MnistFfnError("export needs the export extra: pip install 'mnist-ffn[export]'") from None
    from mnist_ffn.inference.network import load

    network = load(checkpoint, device="cpu")
    layers = nn.Sequential(*network)
    if network.plane is not None:  # input: the points themselves; the features are computed in the graph
        plane = network.plane
        model = WithFeatures(layers, plane["features"], plane["scale"])
        input_name, input_doc = POINTS_INPUT, POINTS_DOC
        example = torch.rand(2, 2)
    else:
        model = WithNormalization(layers, network.normalization["mean"], network.normalization["std"])
        input_name, input_doc, example = INPUT, INPUT_DOC, torch.rand(2, 1, 28, 28)
    proto = _onnx_proto(model.eval(), example, input_name)
    onnx.helper.set_model_props(
        proto,
        {
            "classes": json.dumps(network.classes),
            "dataset": network.dataset,
            "input": input_doc,
            "output": f"logits, shape (N, {len(network.classes)}): softmax gives each class's probability",
            "mnist_ffn_version": __version__,
            "checkpoint": checkpoint.name,
        },
    )
    proto.doc_string = f"mnist-ffn {network.dataset} classifier; input {input_name}: {input_doc}"
    write_atomically(out, lambda file: file.write(proto.SerializeToString()))
    return out


def check_target(out: Path, checkpoint: Path, *, force: bool, example: str, written_as: str = "") -> None:
    """Refuse, before anything is read or written, a target that is a folder (or written as one: `dir/`,
    `dir/.`), lies in no folder, is the checkpoint being exported (whatever the path that names it), is not a
    regular file (a device, a link), or exists without `force`. `written_as`: the path as it was typed."""
    if out.is_dir() or names_a_folder(written_as):
        raise UsageError(
            f"--out {cut(written_as or str(out), 300)}: is a folder; give the file to write, e.g. {example}"
        )
    if not out.parent.is_dir():
        raise UsageError(f"--out {cut(str(out), 300)}: no such folder {cut(str(out.parent), 300)}")
    if out.exists() and checkpoint.exists() and out.samefile(checkpoint):
        raise UsageError(f"--out {out}: is the checkpoint being exported; write the export to another file")
    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise UsageError(f"--out {out}: not a regular file (a link, a device); name the file itself")
    if out.exists() and not force:
        raise UsageError(f"--out {out}: exists; add --force to replace it")


def _onnx_proto(model: nn.Module, example: torch.Tensor | None = None, input_name: str = INPUT):
    """torch.onnx.export's dynamo exporter, with a dynamic batch size; its progress lines stay out of our output.
    The example batch is of 2, not 1: a batch of 1 would be specialized away."""
    example = torch.rand(2, 1, 28, 28) if example is None else example
    chatter = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_shapes={input_name: {0: torch.export.Dim("batch")}},
            verbose=False,
        )
    return program.model_proto


def export_model_folder(checkpoint: Path, out: Path | str | None, *, force: bool) -> Path:
    """The checkpoint as a model folder (inference.model_folder), its model card's test accuracy measured now, as
    `mnist-ffn eval` measures it, when the data is here."""
    from mnist_ffn.inference.model_folder import (
        check_folder_target,
        default_folder,
        refuse_folder_name,
        write_model_folder,
    )
    from mnist_ffn.inference.network import load

    refuse_folder_name(str(out) if out is not None else "")
    folder = Path(out) if out is not None else default_folder(checkpoint)
    check_folder_target(folder, checkpoint, force=force)
    network = load(checkpoint, device="cpu")
    return write_model_folder(network, folder, model_card_accuracy(checkpoint, network.dataset), force=force)


def model_card_accuracy(checkpoint: Path, dataset: str) -> str:
    """The model card's line: the accuracy on the whole test split, or why it was not measured."""
    from mnist_ffn.catalog import DATASETS, resolve_data_dir
    from mnist_ffn.data.idx import find_files
    from mnist_ffn.errors import DataError
    from mnist_ffn.inference.scores import evaluate_checkpoint
    from mnist_ffn.training.devices import device_name

    data_dir = resolve_data_dir(None)
    later = "`mnist-ffn eval` on this folder measures it where the data is"
    info = DATASETS.get(dataset)
    try:
        if info is not None and find_files(data_dir, info) is None:  # never a download for a model card
            return f"not measured at export (the {info.title} files were not on the machine); {later}"
        report = evaluate_checkpoint(checkpoint, data_dir, split="test", device="cpu")
    except DataError as exc:
        return f"not measured at export ({one_line(str(exc))[:200]}); {later}"
    return (
        f"{report['accuracy']:.2%} on the {report['n']:,} test examples of {dataset} (loss {report['loss']:.4f}), "
        f"measured at export by `mnist-ffn eval` on {device_name(torch.device('cpu'))} with torch {torch.__version__}"
    )
