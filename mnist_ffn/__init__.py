"""mnist-ffn: train and evaluate feed-forward networks on MNIST from the command line."""

__version__ = "0.1.0"
