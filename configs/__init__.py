"""The presets, shipped inside the package as mnist_ffn.configs: `--config NAME` finds NAME.toml here."""
