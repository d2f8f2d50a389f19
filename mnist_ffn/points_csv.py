"""A person's own 2-D points: a CSV of `x1,x2,label` rows, read whole or refused whole, checked row by row, and
fingerprinted (the SHA-256 of every byte) so that a run is never evaluated, resumed or compared on another file.

No torch here: the config reads a CSV's size for its validation split before torch is needed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

from mnist_ffn.catalog import MAX_CLASSES
from mnist_ffn.errors import PointsError
from mnist_ffn.files import NotARegularFile, open_regular
from mnist_ffn.messages import cut, shown

MAX_CSV_ROWS = 1_000_000
MAX_CSV_BYTES = 256 * 2**20  # room for a million rows of 250 characters; read whole or refused whole
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
