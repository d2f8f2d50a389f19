"""mnist-ffn's version: what a checkpoint and a summary record, `--version` prints and the wheel is named by."""

__version__ = "0.1.0"
