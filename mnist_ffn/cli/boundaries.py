"""Pictures of a 2-D set's network: where it puts each class over the plane, and what each neuron computes.

`boundary.png`: every point of the plane coloured by the class the network gives it, the training points
(filled) and the test points (hollow) on top. `neurons.png`: one small map per hidden neuron of its
a = f(z) over the same plane, layer by layer: the lesson's "a neuron computes a function of its inputs",
made visible. A `compare` folder of a 2-D set gets `boundaries.png`, one boundary per activation side by side:
identity's is a straight line however deep the network, the others bend.
"""

from __future__ import annotations

from pathlib import Path

from mnist_ffn.catalog import PLANE_SETS, POINTS
from mnist_ffn.cli.figures import save
from mnist_ffn.data.plane import plane_grid
from mnist_ffn.training.run_folder import RunFolder

RESOLUTION = 160  # grid points along each axis of the plane
MAX_NEURON_MAPS = 16  # per layer: the first ones of a wide layer are enough to see what neurons do


def is_plane_run(run: RunFolder) -> bool:
    config = run.saved_config()
    return config is not None and bool(run.best_checkpoint.is_file()) and _is_plane(config.data.dataset)


def _is_plane(dataset: str) -> bool:
    return dataset in (*PLANE_SETS, POINTS)


def _network_and_points(run: RunFolder):
    from mnist_ffn.data.load import load_data
    from mnist_ffn.data.raw import check_same_points
    from mnist_ffn.inference.network import load

    network = load(run.best_checkpoint, device="cpu")
    config = network.config
    raw = load_data(config.data, Path("."), config.train.seed)  # made again from the run's seed, or its CSV
    check_same_points(raw, network.plane, run.best_checkpoint)
    return network, raw


def _draw_boundary(axes, network, raw, title: str) -> None:
    from matplotlib.colors import ListedColormap

    extent = network.plane["scale"] * 1.05
    grid = plane_grid(extent, RESOLUTION)
    probabilities = network.predict_points(grid)
    classes = probabilities.argmax(dim=1).view(RESOLUTION, RESOLUTION)
    colours = [f"C{index % 10}" for index in range(len(network.classes))]
    palette = ListedColormap(colours)
    axes.imshow(
        classes.numpy(), origin="lower", extent=(-extent, extent, -extent, extent), cmap=palette,
        vmin=-0.5, vmax=len(colours) - 0.5, alpha=0.35, interpolation="nearest",
    )  # fmt: skip
    for points, labels, filled in (
        (raw.train_points, raw.train_labels, True),
        (raw.test_points, raw.test_labels, False),
    ):
        for index, colour in enumerate(colours):
            chosen = points[labels == index]
            axes.scatter(
                chosen[:, 0], chosen[:, 1], s=9, linewidths=0.6, edgecolors=colour if not filled else "black",
                facecolors=colour if filled else "none",
                label=f"{network.classes[index]} ({'train' if filled else 'test'})",
            )  # fmt: skip
    axes.set(xlim=(-extent, extent), ylim=(-extent, extent), xlabel="x1", ylabel="x2", title=title)
    axes.set_aspect("equal")


def plot_boundary(run: RunFolder, plt) -> list[Path]:
    """boundary.png and neurons.png for a 2-D run folder."""
    network, raw = _network_and_points(run)
    summary = run.read_summary() if run.summary.is_file() else {}
    accuracy = f", test accuracy {summary['test_accuracy']:.1%}" if "test_accuracy" in summary else ""
    figure, axes = plt.subplots(figsize=(6, 6), dpi=120)
    _draw_boundary(axes, network, raw, f"{summary.get('architecture', run.path.name)}{accuracy}")
    axes.legend(fontsize=6, loc="upper right", ncols=2)
    figure.tight_layout()
    written = [save(figure, run.path / "boundary.png")]
    plt.close(figure)
    written.append(plot_neurons(run, network, plt))
    return written


def plot_neurons(run: RunFolder, network, plt) -> Path:
    extent = network.plane["scale"] * 1.05
    grid = plane_grid(extent, RESOLUTION)
    layers = network.activations(network.inputs_of_points(grid))
    if not layers:  # softmax regression: no hidden neuron, only the output's straight boundary
        figure, axes = plt.subplots(figsize=(4, 1.5), dpi=120)
        axes.axis("off")
        axes.text(0.5, 0.5, "no hidden layer: z = Wx + b straight to the classes", ha="center", va="center")
    else:
        columns = min(MAX_NEURON_MAPS, max(layer.shape[1] for layer in layers))
        figure, grid_axes = plt.subplots(
            len(layers), columns, figsize=(1.3 * columns, 1.45 * len(layers)), dpi=120, squeeze=False
        )
        for row, layer in enumerate(layers):
            for column in range(columns):
                axes = grid_axes[row][column]
                axes.set_xticks([])
                axes.set_yticks([])
                if column >= layer.shape[1]:
                    axes.axis("off")
                    continue
                values = layer[:, column].view(RESOLUTION, RESOLUTION)
                axes.imshow(values.numpy(), origin="lower", cmap="RdBu_r", extent=(-extent, extent, -extent, extent))
                axes.set_title(f"layer {row + 1}, #{column + 1}", fontsize=6)
        figure.suptitle(f"a = {network.config.model.activation}(z) of each hidden neuron over the plane", fontsize=9)
        figure.tight_layout()
    path = save(figure, run.path / "neurons.png")
    plt.close(figure)
    return path


def plot_boundaries(folder: Path, rows: list[dict], plt) -> Path:
    """boundaries.png of a 2-D compare folder: one boundary per activation, side by side."""
    figure, axes_row = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 4.4), dpi=120, squeeze=False)
    for row, axes in zip(rows, axes_row[0], strict=True):
        network, raw = _network_and_points(RunFolder(folder / row["activation"]))
        _draw_boundary(axes, network, raw, f"{row['activation']}: {row['test_accuracy']:.1%}")
    figure.suptitle("The same network and budget, one activation each: only a non-linearity bends the boundary")
    figure.tight_layout()
    path = save(figure, folder / "boundaries.png")
    plt.close(figure)
    return path
