"""mnist-ffn: train, evaluate and explain feed-forward networks on MNIST, from the command line or Python.

    import mnist_ffn
    result = mnist_ffn.train("smoke")
    mnist_ffn.load(result.best).predict(["seven.png"])

The Python API (mnist_ffn.api) is imported on first use, so that `import mnist_ffn` and the CLI's
`--help` do not wait for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_ffn.errors import MnistFfnError
from mnist_ffn.version import __version__

__all__ = ["MnistFfnError", "Network", "TrainResult", "__version__", "evaluate", "load", "train"]

if TYPE_CHECKING:
    from mnist_ffn.api import Network, TrainResult, evaluate, load, train

_API = {"Network", "TrainResult", "evaluate", "load", "train"}


def __getattr__(name: str):
    if name in _API:
        from mnist_ffn import api

        return getattr(api, name)
    raise AttributeError(f"module 'mnist_ffn' has no attribute {name!r}")
