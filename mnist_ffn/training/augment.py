"""Random distortions of whole training batches on the training device.

One affine transform per image (rotation, zoom, shift, optional mirror) plus an optional
elastic field (after Simard et al. 2003), applied with a single `grid_sample` call. The elastic
field is random noise on a coarse grid, upsampled smoothly: the same kind of smooth random
displacement as Simard's Gaussian-filtered noise, at a fraction of the cost of a large blur. The random
numbers come from a seeded generator whose state goes into the checkpoint, so an
augmented run is reproducible and resumable like any other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mnist_ffn.catalog import IMAGE_SIDE
from mnist_ffn.config import AugmentConfig


def is_enabled(config: AugmentConfig) -> bool:
    return bool(config.rotate or config.scale or config.translate or config.elastic_alpha or config.hflip)


class Augmenter:
    def __init__(self, config: AugmentConfig, background: float, generator: torch.Generator):
        self.config = config
        self.background = background  # the normalized value of a blank pixel, so shifted-in borders stay blank
        self.generator = generator
        # The field varies over about 2 * sigma pixels: one random displacement per such cell.
        self.elastic_cells = max(2, round(IMAGE_SIDE / (2 * config.elastic_sigma))) if config.elastic_alpha else 0

    def _uniform(self, count: int, half_width: float) -> torch.Tensor:
        values = torch.rand(count, generator=self.generator, device=self.generator.device)
        return (values * 2 - 1) * half_width

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        count = len(images)
        config = self.config
        angle = self._uniform(count, math.radians(config.rotate))
        zoom = 1 + self._uniform(count, config.scale)
        shift = self._uniform(2 * count, 2 * config.translate / IMAGE_SIDE).view(count, 2)  # pixels -> [-1, 1] units
        mirror = torch.ones(count, device=images.device)
        if config.hflip:
            flips = torch.rand(count, generator=self.generator, device=self.generator.device) < 0.5
            mirror = torch.where(flips, -1.0, 1.0)
        # affine_grid maps output coordinates to input coordinates, so zooming in by `zoom` divides by it.
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * mirror, -sin, shift[:, 0]], dim=1),
                torch.stack([sin * mirror, cos, shift[:, 1]], dim=1),
            ],
            dim=1,
        )
        shape = (count, 1, IMAGE_SIDE, IMAGE_SIDE)
        grid = F.affine_grid(theta, shape, align_corners=False)
        if self.elastic_cells:
            grid = grid + self._elastic_field(count)
        pictures = images.view(shape) - self.background
        warped = F.grid_sample(pictures, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (warped + self.background).view(count, -1)

    def _elastic_field(self, count: int) -> torch.Tensor:
        cells = self.elastic_cells
        noise = torch.rand(count, 2, cells, cells, generator=self.generator, device=self.generator.device) * 2 - 1
        smooth = F.interpolate(noise, size=(IMAGE_SIDE, IMAGE_SIDE), mode="bicubic", align_corners=True)
        return (smooth * (2 * self.config.elastic_alpha / IMAGE_SIDE)).permute(0, 2, 3, 1)  # pixels -> [-1, 1]
