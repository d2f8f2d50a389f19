"""The sweep specs, shipped inside the package as mnist_ffn.sweeps: `mnist-ffn sweep NAME` finds NAME.toml here."""
