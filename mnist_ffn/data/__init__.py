"""The data, as tensors on the training device: the IDX files, a person's points and the Playground's 2-D sets, read
or made as a config names them, split into train, validation and test, and batched."""
