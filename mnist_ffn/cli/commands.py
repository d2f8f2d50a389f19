"""The command line: thin Typer commands that parse options and call one function each.

Errors a person can fix arrive as MnistFfnError from any module and are turned into one
line on stderr and an exit code here, and only here. Heavy modules (torch, torchvision,
matplotlib) are imported inside the commands so that `--help` answers at once.
"""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
import typer.core
import typer.main
from typer.exceptions import TyperException

from mnist_ffn.cli.process import command_process, fast_exit, ignore_signals, signal_received
from mnist_ffn.config import DATASET_NAMES, LESSON_ACTIVATIONS, reference_text
from mnist_ffn.errors import Interrupted, MnistFfnError, UsageError
from mnist_ffn.messages import QUOTED_LIMIT, cut, one_line
from mnist_ffn.version import __version__

app = typer.Typer(
    name="mnist-ffn",
    help="Train and evaluate feed-forward networks on MNIST: fast, honest, reproducible.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # every expected error is one line from main(); anything else is a bug
    rich_markup_mode=None,  # help prints what it says: "pip install 'mnist-ffn[sweep]'" is not markup
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


DatasetName = StrEnum("DatasetName", [(name, name) for name in DATASET_NAMES])


class SplitName(StrEnum):
    test = "test"
    val = "val"
    train = "train"


DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar="MNIST_FFN_DATA",
        help="Folder with the four IDX files (gzipped or not), directly or under MNIST/raw. "
        "Default: $MNIST_FFN_DATA, else ~/.cache/mnist-ffn (downloaded there if missing).",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    str | None,  # not a Path: "./best" must stay a path, where Path would make it the name "best"
    typer.Option(
        "--config", "-c", help="A preset's name (see mnist-ffn configs), e.g. best, or a TOML file of overrides."
    ),
]
OverridesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. --set optim.lr=0.05 --set 'model.hidden=[256,128]'. Repeatable.",
    ),
]
DatasetOption = Annotated[DatasetName | None, typer.Option("--dataset", help="The same as --set data.dataset=NAME.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or epoch lines.")]
DeviceOption = Annotated[Device, typer.Option("--device", help="auto picks CUDA, then Apple MPS, then the CPU.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts instead of tables.")]
CHECKPOINT_OR_FOLDER = "A best.pt or last.pt written by mnist-ffn train, or a folder from export --format safetensors."
AllowHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-host",
        metavar="NAME",
        help="Also answer requests for this host name (the page answers only this machine's own names, so that "
        "no other web site can reach it through a name of its own). Repeatable.",
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"mnist-ffn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Train and evaluate feed-forward networks on MNIST: fast, honest, reproducible."""


@app.command(epilog="Config keys (section.key = default: meaning):\n\n" + reference_text())
def train(
    config: ConfigOption = None,
    overrides: OverridesOption = None,
    dataset: DatasetOption = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run folder. Default: runs/<config>-<date>-<time>.")
    ] = None,
    device: DeviceOption = Device.auto,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder from its last.pt.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the run already in --out.")] = False,
    quiet: QuietOption = False,
) -> None:
    """Train a network and write config.toml, metrics.csv, last.pt, best.pt and summary.json to a run folder.

    Settings come from the built-in defaults, then --config, then each --set: every key is listed below.
    """
    if resume is not None and (config is not None or overrides or dataset or out is not None or force):
        raise UsageError(
            "--resume continues a run with its saved config; drop --config, --set, --dataset, --out and --force"
        )
    from mnist_ffn import api
    from mnist_ffn.cli.tables import print_train_summary

    result = api.train(
        config,
        overrides=_overrides(overrides or [], dataset),
        out=out,
        data_dir=data_dir,
        device=device.value,
        quiet=quiet,
        force=force,
        resume=resume,
        log=_print_line,
    )
    summary, run_dir = result.summary, result.folder
    if not quiet:
        print_train_summary(summary, run_dir)


@app.command("eval")
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help=CHECKPOINT_OR_FOLDER)],
    data_dir: DataDirOption = None,
    split: Annotated[
        SplitName, typer.Option("--split", help="test: the 10k test images; val: the held-out training images.")
    ] = SplitName.test,
    as_json: JsonOption = False,
    device: DeviceOption = Device.auto,
    dataset: Annotated[
        DatasetName | None,
        typer.Option("--dataset", help="Refuse to run unless the checkpoint was trained on this data set."),
    ] = None,
) -> None:
    """Judge a checkpoint alone: accuracy, loss, per-class accuracy and the confusion matrix."""
    from mnist_ffn import api
    from mnist_ffn.cli.tables import print_evaluation

    expected = dataset.value if dataset else None
    report = api.evaluate(checkpoint, split.value, data_dir, device=device.value, expected_dataset=expected)
    _show(report, as_json, print_evaluation)


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help=CHECKPOINT_OR_FOLDER)],
    images: Annotated[list[Path], typer.Argument(help="PNG or JPEG files, one object each, any size.")],
    as_json: JsonOption = False,
    save_preprocessed: Annotated[
        Path | None,
        typer.Option("--save-preprocessed", help="Also write the 28x28 image the model was fed, per input."),
    ] = None,
    device: DeviceOption = Device.auto,
) -> None:
    """Classify your own images: dark-on-light or light-on-dark, any size, preprocessed the way MNIST was made."""
    from mnist_ffn.cli.tables import print_predictions
    from mnist_ffn.inference.predict import predict_images

    report = predict_images(checkpoint, images, device=device.value, save_preprocessed=save_preprocessed)
    _show(report, as_json, print_predictions)
    failed = [row for row in report["predictions"] if "error" in row]
    if failed:
        reasons = "; ".join(f"{row['image']}: {row['error']}" for row in failed)
        raise MnistFfnError(f"{len(failed)} of {len(images)} images could not be classified: {reasons}")


@app.command()
def demo(
    checkpoint: Annotated[Path, typer.Argument(help=CHECKPOINT_OR_FOLDER)],
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on; the default is this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 7860,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open the page in a browser.")] = False,
    device: DeviceOption = Device.auto,
    allow_host: AllowHostOption = None,
) -> None:
    """Draw a digit and watch the network think: a local web page with the prediction and every layer.

    Needs the demo extra: pip install 'mnist-ffn[demo]'. Stop it with Ctrl-C.
    """
    from mnist_ffn.web.demo import serve

    serve(
        checkpoint,
        host=host,
        port=port,
        open_browser=not no_browser,
        device=device.value,
        allow_hosts=tuple(allow_host or ()),
    )


@app.command()
def playground(
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on; the default is this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 7861,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open the page in a browser.")] = False,
    runs: Annotated[
        Path, typer.Option("--runs", help="Where the page's Save run writes run folders (and keeps uploaded CSVs).")
    ] = Path("runs/playground"),
    allow_host: AllowHostOption = None,
) -> None:
    """TensorFlow Playground's lesson, live: train a network on 2-D points and watch every neuron.

    Each browser tab trains its own network with the backprop engine, a slice of epochs per picture. Needs
    the demo extra: pip install 'mnist-ffn[demo]'. Stop it with Ctrl-C.
    """
    from mnist_ffn.web.playground_server import serve

    serve(host=host, port=port, open_browser=not no_browser, runs=runs, allow_hosts=tuple(allow_host or ()))


class ExportFormat(StrEnum):
    onnx = "onnx"
    safetensors = "safetensors"


@app.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="A best.pt or last.pt written by mnist-ffn train.")],
    out: Annotated[
        str | None,  # not a Path, which turns "dir/." into "dir": a name written as a folder is refused
        typer.Option(
            "--out",
            "-o",
            help="The file (onnx) or folder (safetensors) to write. Default: beside the checkpoint, as best.onnx "
            "or best-safetensors/.",
        ),
    ] = None,
    file_format: Annotated[ExportFormat, typer.Option("--format", help="The file format.")] = ExportFormat.onnx,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the file if it exists (never the checkpoint).")
    ] = False,
) -> None:
    """Write the network as an ONNX file, or as a model folder of safetensors weights, config.json and a model card.

    ONNX: float32 pixels in [0, 1], (N, 1, 28, 28) in, logits out; the normalization is inside the graph and the
    class names in its metadata. safetensors: the Hugging Face layout, loaded by mnist_ffn.load, eval, predict and
    demo, or by plain torch (the model card shows how). Needs the export extra: pip install 'mnist-ffn[export]'.
    """
    from mnist_ffn.inference.export import export

    print(f"wrote {export(checkpoint, out, file_format=file_format.value, force=force)}")


@app.command()
def plot(
    folder: Annotated[Path, typer.Argument(help="A run folder (from train) or a compare folder.")],
) -> None:
    """Write PNG plots into a run folder: loss and accuracy per epoch, the test confusion matrix.

    For a compare folder: test accuracy per activation and the learning curves. Needs the plot extra:
    pip install 'mnist-ffn[plot]'.
    """
    from mnist_ffn.cli.plots import plot_folder

    for path in plot_folder(folder):
        print(f"wrote {path}")


@app.command()
def compare(
    activations: Annotated[
        str, typer.Option("--activations", help="Comma-separated, e.g. identity,sigmoid,tanh,relu,gelu.")
    ] = ",".join(LESSON_ACTIVATIONS),
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs per activation (default: the config's).")
    ] = None,
    config: ConfigOption = None,
    overrides: OverridesOption = None,
    dataset: DatasetOption = None,
    data_dir: DataDirOption = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Default: runs/compare-<date>-<time>.")] = None,
    device: DeviceOption = Device.auto,
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a comparison already in --out (without it, rerunning continues it)."),
    ] = False,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Train the same network and budget once per activation and compare them: the lesson, measured."""
    from mnist_ffn.experiments.compare import parse_activations

    names = parse_activations(activations)
    extra = [f"train.epochs={epochs}"] if epochs is not None else []
    resolved = _resolve_config(config, [*(overrides or []), *extra], dataset)

    from mnist_ffn.api import default_run_folder
    from mnist_ffn.catalog import resolve_data_dir
    from mnist_ffn.cli.tables import print_comparison
    from mnist_ffn.experiments.compare import compare as run_comparison

    out = out or default_run_folder(None, prefix="compare-")
    comparison = run_comparison(
        resolved,
        names,
        data_dir=resolve_data_dir(data_dir),
        out=out,
        device=device.value,
        force=force,
        log=None if quiet or as_json else _print_line,
        progress_bars=not quiet and not as_json,
    )
    if as_json:
        from mnist_ffn.files import strict_json

        print(strict_json(comparison))
    elif not quiet:
        print_comparison(comparison, out)


@app.command()
def sweep(
    spec: Annotated[
        str | None,  # as --config: "./lesson" is a path
        typer.Argument(help="A sweep spec's name (see mnist-ffn configs), e.g. lesson, or its TOML file."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Sweep folder. Default: runs/sweep-<spec name>.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="postgresql://USER@HOST:PORT/DB to share the study among machines, or grpc://HOST:PORT of a "
            "sweep-server in front of it. Default: a journal file in --out.",
        ),
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Study name. Default: the spec's file name.")] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=256, help="Worker processes on this machine; they split the CPU.")
    ] = 1,
    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="tpe: points to try (overrides the spec).")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="Override the spec: SECTION.KEY (its [base]), sweep.KEY or space.SECTION.KEY, e.g. "
            "--set train.epochs=1 --set 'sweep.seeds=[0]'. Repeatable.",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = Device.auto,
    report: Annotated[
        Path | None, typer.Option("--report", help="Print the results of the sweep in this folder, as they stand.")
    ] = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
) -> int:
    """Run many trainings on Optuna: a grid or a TPE search over config keys, each point once per seed.

    Rerunning the same command continues the sweep; the same command on other machines with the same
    --storage joins it. Needs the sweep extra: pip install 'mnist-ffn[sweep]'.
    """
    from mnist_ffn.cli.tables import print_sweep
    from mnist_ffn.files import strict_json

    if report is not None:
        given = [name for name, value in (("--set", overrides), ("--storage", storage), ("--study", study),
                                          ("--trials", trials), ("a spec", spec)) if value]  # fmt: skip
        if given:  # its storage, study and spec are the ones sweep.json names: another would be ignored
            raise UsageError(f"--report reads the sweep as it ran (sweep.json names its storage); drop {given[0]}")
        from mnist_ffn.experiments.sweep import report_folder

        results = report_folder(report, warn=_warn)
        folder = report
    else:
        if spec is None:
            raise UsageError("give a sweep spec, e.g. mnist-ffn sweep lesson, or --report DIR")
        from mnist_ffn.experiments.spec import load_spec
        from mnist_ffn.presets import resolve

        spec_file = resolve(spec, "sweep spec", option="")
        loaded = load_spec(spec_file, overrides or [])
        from mnist_ffn.catalog import resolve_data_dir
        from mnist_ffn.experiments.sweep import run_sweep

        folder = out or Path("runs") / f"sweep-{spec_file.stem}"
        results = run_sweep(
            loaded,
            out=folder,
            storage_url=storage,
            study_name=study or spec_file.stem,
            workers=workers,
            trials=trials,
            data_dir=resolve_data_dir(data_dir),
            device=device.value,
            log=None if quiet or as_json else _print_line,
            warn=_warn,
        )
    if as_json:
        print(strict_json(results))
    elif not quiet:
        print_sweep(results, folder)
    for failure in results["failed"]:  # each trial's own line; the exit code counts them
        again = "a rerun tries it again" if failure["retried_on_rerun"] else "it would fail again: not retried"
        print(
            f"mnist-ffn: error: trial {failure['trial']} ({failure['point']}, seed {failure['seed']}) failed: "
            f"{one_line(failure['error'])} ({again})",
            file=sys.stderr,
        )
    return 1 if results["failed"] else 0


@app.command("sweep-server")
def sweep_server(
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help="The study's database, postgresql://USER@HOST:PORT/DB (the password from ~/.pgpass or PGPASSWORD).",
        ),
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to serve on; the default is this machine only.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")] = 13000,
    connections: Annotated[
        int,
        typer.Option(
            "--connections",
            min=2,  # Optuna's storage opens a second connection inside a first one at times: one would wait forever
            max=64,
            help="Database connections the server may hold (at least 2).",
        ),
    ] = 4,
) -> None:
    """Serve a study's PostgreSQL database to many sweep workers through a few connections (Optuna's gRPC proxy).

    Workers join with mnist-ffn sweep SPEC --storage grpc://HOST:PORT. No TLS and no password: keep it on
    loopback or a trusted network. Ctrl-C or SIGTERM stops it. Needs the sweep extra.
    """
    from mnist_ffn.web.sweep_server import serve

    serve(storage, host, port, connections, log=_print_flushed, warn=_warn)


def _print_flushed(line: str) -> None:
    print(one_line(line), flush=True)  # a server's lines are read as they come, often through a pipe


configs_app = typer.Typer(
    help="The presets and sweep specs that ship with mnist-ffn: list them, show one, copy one to edit.",
    no_args_is_help=False,
    rich_markup_mode=None,
)
app.add_typer(configs_app, name="configs")


@configs_app.callback(invoke_without_command=True)
def configs(context: typer.Context) -> None:
    """List every preset (train --config NAME) and sweep spec (sweep NAME), each with what it is for."""
    if context.invoked_subcommand is not None:
        return
    from mnist_ffn.cli.tables import print_shipped
    from mnist_ffn.presets import shipped

    print_shipped(shipped("preset"), shipped("sweep spec"))


@configs_app.command("show")
def configs_show(
    name: Annotated[str, typer.Argument(help="A preset or sweep spec; configs/NAME or sweeps/NAME if both exist.")],
) -> None:
    """Print one preset or sweep spec as it ships."""
    from mnist_ffn.presets import find

    sys.stdout.write(find(name).path.read_text(encoding="utf-8"))


@configs_app.command("copy")
def configs_copy(
    name: Annotated[str, typer.Argument(help="A preset or sweep spec; configs/NAME or sweeps/NAME if both exist.")],
    destination: Annotated[
        str,  # not a Path, which drops a trailing slash: "new/" names a folder that must exist
        typer.Argument(help="A file to write, or a folder (ending in /, or existing) to copy NAME.toml into."),
    ],
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
) -> None:
    """Copy a preset or sweep spec to edit; then pass the copy's path where the name went."""
    from mnist_ffn.cli.tables import print_command
    from mnist_ffn.files import names_a_folder
    from mnist_ffn.presets import copy_to, find

    item = find(name)
    target = copy_to(item, Path(destination), force=force, folder=names_a_folder(destination))
    print(f"wrote {target}")
    if item.kind == "preset":
        print_command("train with:", "mnist-ffn", "train", "--config", target)
    else:
        print_command("sweep with:", "mnist-ffn", "sweep", target)


def _overrides(overrides: list[str], dataset: DatasetName | None) -> list[str]:
    """--dataset NAME is --set data.dataset=NAME, before the --set options."""
    return [*([f'data.dataset="{dataset.value}"'] if dataset is not None else []), *overrides]


def _resolve_config(config: str | None, overrides: list[str], dataset: DatasetName | None):
    from mnist_ffn.api import resolve_config

    return resolve_config(config, _overrides(overrides, dataset))


def _show(report: dict, as_json: bool, print_tables) -> None:
    """One JSON object for scripts, or tables for people."""
    from mnist_ffn.files import strict_json

    if as_json:
        print(strict_json(report))
    else:
        print_tables(report)


def _warn(line: str) -> None:
    print(f"mnist-ffn: warning: {one_line(line)}", file=sys.stderr)


def _print_line(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stdout)  # prints above any progress bar instead of through it


def main(argv: list[str] | None = None) -> None:
    """Run one command; every expected failure becomes one line on stderr and an exit code.

    Exit codes: 0 done; 1 a problem with the data, a file, the environment or another process;
    2 bad usage or config; 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM).
    """
    with command_process() as finish:
        code = _run(argv)
    code = finish(code)
    if code:
        sys.exit(code)


@functools.cache
def _command() -> typer.core.TyperGroup:
    """The click command Typer builds from `app`, built once: a script or a test that runs many commands in one
    process would otherwise spend 17 ms rebuilding it from the functions' signatures for each."""
    return typer.main.get_command(app)


def _run(argv: list[str] | None) -> int:
    """The command's exit code, after printing its one line of error if it failed."""
    if not (sys.argv[1:] if argv is None else argv):
        argv = ["--help"]  # `mnist-ffn` alone asks what it can do (Typer raises its help as an error)
    try:
        result = _command().main(args=argv, prog_name="mnist-ffn", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except MnistFfnError as exc:
        return _error(str(exc), exc.exit_code)
    except TyperException as exc:  # bad usage that Typer found: one line too, with where to find help
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if not message:  # no arguments at all: Typer printed the help
            return getattr(exc, "exit_code", 2)
        context = getattr(exc, "ctx", None)
        command = context.command_path if context is not None else "mnist-ffn"
        return _error(f"{_bounded(message).rstrip('.')} (see {command} --help)", getattr(exc, "exit_code", 2))
    except OSError as exc:  # the operating system said no where no module expected it
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(f"{where}{exc.strerror or exc}", 1)
    except Interrupted as exc:  # in eval, predict, or before training began; every file is written atomically
        return _interrupted(exc.signal_number)
    except Exception:
        number = signal_received()
        if number is None:
            raise
        return _interrupted(number)


def _interrupted(number: int) -> int:
    return _error(f"interrupted by {signal.Signals(number).name}", 128 + number)


MAX_MESSAGE = 8_500  # characters: two of the longest paths a system takes and words around them, never a flood


def _error(message: str, code: int) -> int:
    ignore_signals()
    print(f"mnist-ffn: error: {one_line(cut(message, MAX_MESSAGE))}", file=sys.stderr)
    return code


LONG = QUOTED_LIMIT + 1
CLICK_QUOTE = re.compile(f"'([^']{{{LONG},}})'")  # a value Click quotes whole in its message, however long


def _bounded(usage_error: str) -> str:
    """Click's message for a bad option value with the value it quotes cut: a megabyte passed as `--dataset` is
    still one readable line. (mnist-ffn's own messages cut what they quote themselves, and never a command.)"""
    return CLICK_QUOTE.sub(lambda found: json.dumps(cut(found.group(1))), usage_error)


def console_main() -> None:
    """The `mnist-ffn` executable."""
    fast_exit(main)
