"""Augmentation of whole batches on the device: seeded, shape-preserving, off by default."""

import pytest
import torch

from mnist_ffn.config import AugmentConfig, Config, load_config
from mnist_ffn.presets import shipped
from mnist_ffn.training.augment import Augmenter, is_enabled

BACKGROUND = -0.4242  # a blank MNIST pixel after normalization


def batch(seed=0, count=8):
    generator = torch.Generator().manual_seed(seed)
    images = torch.full((count, 28, 28), BACKGROUND)
    images[:, 8:20, 12:16] = 2.5 + torch.rand(count, 12, 4, generator=generator)  # a bright bar
    return images.view(count, 784)


def test_off_by_default_so_the_default_run_pays_nothing():
    assert not is_enabled(Config().augment)
    assert not is_enabled(load_config(shipped("preset")["default"].path).augment)
    assert is_enabled(load_config(shipped("preset")["best"].path).augment)


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(rotate=15),
        AugmentConfig(scale=0.2),
        AugmentConfig(translate=3),
        AugmentConfig(elastic_alpha=2),
        AugmentConfig(hflip=True),
        AugmentConfig(rotate=10, scale=0.1, translate=2, elastic_alpha=2),
    ],
    ids=["rotate", "scale", "translate", "elastic", "hflip", "all"],
)
def test_distortions_keep_shape_and_background_and_are_seeded(config):
    images = batch()
    first = Augmenter(config, BACKGROUND, torch.Generator().manual_seed(3))(images)
    again = Augmenter(config, BACKGROUND, torch.Generator().manual_seed(3))(images)
    other = Augmenter(config, BACKGROUND, torch.Generator().manual_seed(4))(images)
    assert first.shape == images.shape
    assert torch.equal(first, again)  # same seed, same distortions
    assert not torch.equal(first, other)
    assert not torch.allclose(first, images, atol=1e-3)  # something moved
    corners = first.view(-1, 28, 28)[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert torch.allclose(corners, torch.full_like(corners, BACKGROUND), atol=1e-4)  # shifted-in borders stay blank


def test_zero_strength_is_the_identity():
    images = batch()
    unchanged = Augmenter(AugmentConfig(rotate=1e-9), BACKGROUND, torch.Generator().manual_seed(0))(images)
    assert torch.allclose(unchanged, images, atol=1e-4)


def test_hflip_mirrors_about_half_the_images():
    images = batch(count=200)
    mirrored = Augmenter(AugmentConfig(hflip=True), BACKGROUND, torch.Generator().manual_seed(0))(images)
    flipped = [
        torch.allclose(after, before.view(28, 28).flip(-1).reshape(-1), atol=1e-4)
        for before, after in zip(images, mirrored, strict=True)
    ]
    assert 60 < sum(flipped) < 140
