"""matplotlib for the PNGs mnist-ffn draws: loaded on first use (the plot extra), drawing to files only, each PNG
written atomically."""

from __future__ import annotations

from pathlib import Path

from mnist_ffn.errors import MnistFfnError
from mnist_ffn.files import write_atomically


def pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no window, no display needed."""
    try:
        import matplotlib
    except ImportError:
        raise MnistFfnError("plotting needs matplotlib: pip install 'mnist-ffn[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> Path:
    write_atomically(path, lambda file: figure.savefig(file, format="png"))
    return path
