"""TensorFlow Playground's four 2-D data sets (circle, xor, gauss, spiral), generated from a seed as the Playground
makes them, and what a network sees of a point: its features.

The lesson's argument in pictures: a circle inside a ring, XOR quadrants and a spiral have no straight
boundary, so a network without an activation (one linear map, however deep) cannot separate them.
The sets are generated as the Playground makes them (its dataset.ts), in its coordinates, x1 and x2 in
[-6, 6], from the run's seed; `spiral` takes any number of arms, one class each.

A network sees features of a point, not the point: x1, x2, x1^2, x2^2, x1*x2, sin(x1), sin(x2), as the
Playground offers them, computed on the coordinates divided by the data's scale (6 for the generated
sets, the largest |coordinate| of a CSV's points) so that every feature lies in [-1, 1]. The scale and
the features are saved in each checkpoint: a point is turned into the network's input the same way
at training, at evaluation and when a boundary is drawn.
"""

from __future__ import annotations

import math

import torch

from mnist_ffn.catalog import PLAYGROUND_SCALE
from mnist_ffn.points_csv import Points


def generate(name: str, count: int, noise: float, seed: int, arms: int = 2) -> Points:
    """`count` points of a Playground data set; `noise` in [0, 0.5] as the Playground's 0-50%."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, size: int) -> torch.Tensor:
        return torch.rand(size, generator=generator, dtype=torch.float64) * (high - low) + low

    if name == "circle":  # a disk of radius 2.5 (class 1) inside a ring from 3.5 to 5 (class 0)
        radius = 5.0
        half = count // 2
        inner = uniform(0, radius * 0.5, half)
        outer = uniform(radius * 0.7, radius, count - half)
        r = torch.cat([inner, outer])
        angle = uniform(0, 2 * math.pi, count)
        x, y = r * torch.sin(angle), r * torch.cos(angle)
        x, y = x + uniform(-radius, radius, count) * noise, y + uniform(-radius, radius, count) * noise
        labels = (torch.cat([torch.ones(half), torch.zeros(count - half)])).long()
        classes = ("ring", "disk")
    elif name == "xor":  # quadrants: the sign of x1 * x2, points kept 0.3 away from the axes
        x, y = uniform(-5, 5, count), uniform(-5, 5, count)
        x, y = x + torch.where(x > 0, 0.3, -0.3), y + torch.where(y > 0, 0.3, -0.3)
        labels = (x * y > 0).long()  # before the noise: the noise moves points across the boundary
        x, y = x + uniform(-5, 5, count) * noise, y + uniform(-5, 5, count) * noise
        classes = ("x1*x2 < 0", "x1*x2 > 0")
    elif name == "gauss":  # two Gaussian blobs at (2, 2) and (-2, -2); noise widens them
        variance = 0.5 + (4.0 - 0.5) * (noise / 0.5)
        half = count // 2
        labels = torch.cat([torch.ones(half), torch.zeros(count - half)]).long()
        centre = torch.where(labels == 1, 2.0, -2.0).double()
        std = math.sqrt(variance)
        x = centre + torch.randn(count, generator=generator, dtype=torch.float64) * std
        y = centre + torch.randn(count, generator=generator, dtype=torch.float64) * std
        classes = ("(-2, -2)", "(2, 2)")
    elif name == "spiral":  # `arms` spirals, one class each, each turning 1.75 times out to radius 5
        per_arm = [count // arms + (1 if arm < count % arms else 0) for arm in range(arms)]
        xs, ys, label_parts = [], [], []
        for arm, n in enumerate(per_arm):
            t = torch.arange(n, dtype=torch.float64) / max(n, 1)
            r = t * 5.0
            angle = 1.75 * t * 2 * math.pi + 2 * math.pi * arm / arms
            xs.append(r * torch.sin(angle) + uniform(-1, 1, n) * noise)
            ys.append(r * torch.cos(angle) + uniform(-1, 1, n) * noise)
            label_parts.append(torch.full((n,), arm, dtype=torch.long))
        x, y, labels = torch.cat(xs), torch.cat(ys), torch.cat(label_parts)
        classes = tuple(f"arm {arm + 1}" for arm in range(arms))
    else:
        raise ValueError(name)
    return Points(list(zip(x.tolist(), y.tolist(), strict=True)), labels.tolist(), classes, PLAYGROUND_SCALE)


def features(xy, names: list[str], scale: float):
    """The network's input for points (N, 2): one column per feature name, in [-1, 1]."""
    u = torch.as_tensor(xy, dtype=torch.float32).reshape(-1, 2) / scale
    u1, u2 = u[:, 0], u[:, 1]
    columns = {
        "x1": lambda: u1,
        "x2": lambda: u2,
        "x1^2": lambda: u1 * u1,
        "x2^2": lambda: u2 * u2,
        "x1*x2": lambda: u1 * u2,
        "sin_x1": lambda: torch.sin(u1 * PLAYGROUND_SCALE),  # the Playground's sin(x1), x1 in [-6, 6]
        "sin_x2": lambda: torch.sin(u2 * PLAYGROUND_SCALE),
    }
    return torch.stack([columns[name]() for name in names], dim=1)


def plane_grid(extent: float, cells: int):
    """The plane [-extent, extent]^2 as (cells^2, 2) points, rows from the bottom up: where a boundary or a
    neuron's map is drawn."""
    axis = torch.linspace(-extent, extent, cells)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)
