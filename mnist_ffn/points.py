"""2-D data sets: TensorFlow Playground's four (circle, xor, gauss, spiral) and a person's own CSV of points.

The lesson's argument in pictures: a circle inside a ring, XOR quadrants and a spiral have no straight
boundary, so a network without an activation (one linear map, however deep) cannot separate them.
The sets are generated as the Playground makes them (its dataset.ts), in its coordinates, x1 and x2 in
[-6, 6], from the run's seed; `spiral` takes any number of arms, one class each.

A network sees features of a point, not the point: x1, x2, x1^2, x2^2, x1*x2, sin(x1), sin(x2), as the
Playground offers them, computed on the coordinates divided by the data's scale (6 for the generated
sets, the largest |coordinate| of a CSV's points) so that every feature lies in [-1, 1]. The scale and
the features are saved in each checkpoint: a point is turned into the network's input the same way
at training, at evaluation and when a boundary is drawn.

No torch at import: the config checks the names here before torch is needed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

from mnist_ffn.errors import PointsError
from mnist_ffn.reading import NotARegularFile, open_regular
from mnist_ffn.shell import cut, shown

PLANE_SETS = ("circle", "xor", "gauss", "spiral")
POINTS = "points"  # data.dataset of a CSV's points (data.points = FILE selects it)
FEATURES = ("x1", "x2", "x1^2", "x2^2", "x1*x2", "sin_x1", "sin_x2")
PLAYGROUND_SCALE = 6.0  # the Playground draws its points in [-6, 6] x [-6, 6]
MAX_CSV_ROWS = 1_000_000
MAX_CSV_BYTES = 256 * 2**20  # room for a million rows of 250 characters; read whole or refused whole
MAX_CLASSES = 100
MAX_COORDINATE = 1e15  # and the largest |coordinate| at least 1 / MAX_COORDINATE: the scale divides every point


class TooManyPoints(PointsError):
    """A CSV with more points than the reader was asked to take (refused as soon as it reads one more)."""


@dataclass
class Points:
    """Points in the plane (N, 2) as float32 lists, their int labels, the class names and the scale."""

    xy: list[tuple[float, float]]
    labels: list[int]
    classes: tuple[str, ...]
    scale: float
    sha256: str = ""  # a CSV's bytes: a run names its file, and must be evaluated on the same points


def generate(name: str, count: int, noise: float, seed: int, arms: int = 2) -> Points:
    """`count` points of a Playground data set; `noise` in [0, 0.5] as the Playground's 0-50%."""
    import torch

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


def read_csv(path: Path, max_rows: int | None = None) -> Points:
    """A person's points: rows `x1,x2,label` (a header row is optional), labels whole numbers 0..K-1 or any
    whole numbers (then renumbered in order); one PointsError (exit 2) naming the file and the row for anything else.

    The file is read whole or refused whole (over MAX_CSV_BYTES, or more than `max_rows` points, MAX_CSV_ROWS unless
    given: refused as soon as one more is read), and its fingerprint covers every byte of it."""
    return parse_csv(_content(path), path, max_rows)


def parse_csv(content: bytes, path: Path | str, max_rows: int | None = None) -> Points:
    """`read_csv` of a file's content (an upload's, say); `path` is what messages call it."""
    max_rows = MAX_CSV_ROWS if max_rows is None else max_rows
    text = _text(content, path)
    xy, raw_labels = [], []
    rows = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except csv.Error as exc:  # a field longer than the csv module takes (131,072 characters), a stray quote
            raise PointsError(f"{path}, row {rows.line_num}: not a row of x1,x2,label ({exc})") from None
        number = rows.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != 3:
            raise PointsError(f"{path}, row {number}: expected 3 values (x1,x2,label), found {len(row):,}")
        cells = [cell.strip() for cell in row]
        try:
            x1, x2 = float(cells[0]), float(cells[1])
        except ValueError:
            if not xy and not raw_labels and number == 1:  # a header
                continue
            raise PointsError(
                f"{path}, row {number}: x1 and x2 must be numbers, got {shown(cells[0])}, {shown(cells[1])}"
            ) from None
        if not (math.isfinite(x1) and math.isfinite(x2)):
            raise PointsError(
                f"{path}, row {number}: x1 and x2 must be finite numbers, got {cut(cells[0])}, {cut(cells[1])}"
            )
        if max(abs(x1), abs(x2)) > MAX_COORDINATE:  # beyond it, float32 features overflow
            raise PointsError(
                f"{path}, row {number}: x1 and x2 must be within +-{MAX_COORDINATE:g}, "
                f"got {cut(cells[0])}, {cut(cells[1])}"
            )
        try:
            label = int(cells[2]) if len(cells[2]) <= 20 else int("x")  # a label is a 64-bit whole number at most
        except ValueError:
            raise PointsError(
                f"{path}, row {number}: the label must be a whole number, got {shown(cells[2])}"
            ) from None
        xy.append((x1, x2))
        raw_labels.append(label)
        if len(xy) > max_rows:
            raise TooManyPoints(f"{path}, row {number}: more than {max_rows:,} points; mnist-ffn reads up to that")
    values = sorted(set(raw_labels))
    if len(values) < 2:
        found = f"only label {values[0]}" if values else "no points"
        raise PointsError(f"{path}: {found}; a classifier needs at least two classes")
    if len(values) > MAX_CLASSES:
        raise PointsError(f"{path}: {len(values)} different labels; mnist-ffn takes up to {MAX_CLASSES} classes")
    index = {value: position for position, value in enumerate(values)}
    scale = max(max(abs(x1), abs(x2)) for x1, x2 in xy)
    if scale < 1 / MAX_COORDINATE:
        raise PointsError(f"{path}: every point lies within {scale:g} of (0, 0); scale the coordinates up")
    digest = hashlib.sha256(content).hexdigest()  # every byte of the file, as file_digest hashes it
    return Points(xy, [index[label] for label in raw_labels], tuple(str(value) for value in values), scale, digest)


def file_digest(path: Path) -> str:
    """The fingerprint `read_csv` gives a CSV (the SHA-256 of all its bytes), without reading its points: what a
    comparison or a sweep holds each of its runs to. PointsError, as read_csv's, for a file it cannot read."""
    return hashlib.sha256(_content(path)).hexdigest()


def _content(path: Path) -> bytes:
    """The whole file, or PointsError: refused whole when larger than MAX_CSV_BYTES, never cut."""
    try:
        with open_regular(path) as binary:
            content = binary.read(MAX_CSV_BYTES + 1)  # one byte more than allowed says the file is larger
    except FileNotFoundError:
        raise PointsError(f"data.points {path}: no such file") from None
    except IsADirectoryError:
        raise PointsError(f"data.points {path}: is a folder, not a CSV file") from None
    except NotARegularFile as exc:
        raise PointsError(f"data.points {path}: {exc.strerror}, not a CSV file") from None
    except OSError as exc:
        raise PointsError(f"data.points {path}: cannot read it ({exc.strerror})") from None
    if len(content) > MAX_CSV_BYTES:
        raise PointsError(
            f"data.points {path}: larger than {MAX_CSV_BYTES // 2**20} MiB; mnist-ffn reads CSVs up to that "
            f"({MAX_CSV_ROWS:,} points)"
        )
    return content


def _text(content: bytes, path: Path) -> str:
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PointsError(f"data.points {path}: not text (UTF-8), so not a CSV file") from None


def features(xy, names: list[str], scale: float):
    """The network's input for points (N, 2): one column per feature name, in [-1, 1]."""
    import torch

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
    import torch

    axis = torch.linspace(-extent, extent, cells)
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)
