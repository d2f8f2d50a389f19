"""Presets and sweep specs shipped inside the package, addressed by name: `--config best`, `sweep lesson`.

configs/ and sweeps/ live at the top of the repository; the build maps them into the packages
mnist_ffn.configs and mnist_ffn.sweeps (pyproject.toml: package-dir), so a checkout's editable install
and a wheel read the same files through importlib.resources. The folder is the registry: every
*.toml in it is shipped, under its file name without the suffix.
"""

from __future__ import annotations

import difflib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from mnist_ffn.errors import ConfigError, UsageError
from mnist_ffn.files import write_atomically
from mnist_ffn.messages import cut

PACKAGES = {"preset": "mnist_ffn.configs", "sweep spec": "mnist_ffn.sweeps"}
FOLDERS = {"preset": "configs", "sweep spec": "sweeps"}  # as a qualified name says it: configs/fashion


@dataclass(frozen=True)
class Shipped:
    """One file the package ships: its name, what it is, where it is, and its header's first line."""

    name: str
    kind: str  # "preset" or "sweep spec"
    path: Path

    @property
    def qualified(self) -> str:
        return f"{FOLDERS[self.kind]}/{self.name}"

    @property
    def summary(self) -> str:
        """The first line of the file's header comment, without a leading "NAME: "."""
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if text:
                return text.removeprefix(f"{self.name}: ")
        return ""


def shipped(kind: str) -> dict[str, Shipped]:
    """Every shipped file of one kind, by name, in name order."""
    try:
        folder = importlib.resources.files(PACKAGES[kind])
    except ModuleNotFoundError:  # a checkout on PYTHONPATH, not installed: the folder beside mnist_ffn/
        folder = Path(__file__).resolve().parent.parent / FOLDERS[kind]
    # A Traversable: a real folder for every install this project supports (a wheel or an editable one).
    files = sorted((Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")), key=_stem)
    return {path.stem: Shipped(path.stem, kind, path) for path in files}


def _stem(path: Path) -> str:
    return path.stem


def everything() -> list[Shipped]:
    return [item for kind in PACKAGES for item in shipped(kind).values()]


def resolve(value: str | Path, kind: str, *, option: str, relative_to: Path | None = None) -> Path:
    """The file `value` names: a path that exists wins; else a bare name (a str without "/") among the shipped
    files of `kind`.

    Anything else is one ConfigError (exit 2) that lists the shipped names, with a did-you-mean.
    `relative_to` is the folder a relative path is read from (a sweep spec's own folder).
    """
    text = str(value)
    candidate = Path(text).expanduser()
    if relative_to is not None and not candidate.is_absolute():
        candidate = relative_to / candidate
    # A file that exists wins; a folder does not shadow a name (runs/default is no preset), and a broken link
    # is the path's problem, not a name's.
    if (candidate.exists() and not candidate.is_dir()) or candidate.is_symlink():
        return candidate
    where = f"{option} {text}" if option else text
    if "/" in text or isinstance(value, Path):  # a path, not a name
        raise ConfigError([f"{where}: {'config file' if kind == 'preset' else kind} not found"])
    available = shipped(kind)
    name = text.removesuffix(".toml")
    if name in available:
        return available[name].path
    if candidate.is_dir():
        return candidate  # read as a file, it says it is a folder
    hint = difflib.get_close_matches(name, list(available), n=1, cutoff=0.5)
    did_you_mean = f"; did you mean {hint[0]}?" if hint else ""
    names = ", ".join(available)
    raise ConfigError([f"{where}: no such file, and no {kind} of that name ({kind}s: {names}){did_you_mean}"])


def find(name: str) -> Shipped:
    """A shipped file for `configs show` and `configs copy`: NAME, or configs/NAME or sweeps/NAME when a
    preset and a sweep spec share the name (a preset's own sweep does)."""
    text = name.removesuffix(".toml")
    folder, _, bare = text.rpartition("/")
    kinds = [kind for kind, where in FOLDERS.items() if where == folder] if folder else list(PACKAGES)
    found = [shipped(kind) for kind in kinds]
    matches = [items[bare] for items in found if bare in items]
    if len(matches) == 1:
        return matches[0]
    if matches:
        choices = " or ".join(match.qualified for match in matches)
        raise ConfigError([f"{cut(name)}: both a preset and a sweep spec; say which: {choices}"])
    names = sorted({item.name for item in everything()})
    hint = difflib.get_close_matches(bare, names, n=1, cutoff=0.5)
    did_you_mean = f"; did you mean {hint[0]}?" if hint else ""
    raise ConfigError([f"{cut(name)}: no preset or sweep spec of that name (see mnist-ffn configs){did_you_mean}"])


def copy_to(item: Shipped, destination: Path, *, force: bool, folder: bool = False) -> Path:
    """Copy a shipped file to edit: into a folder under its own name, or to a file; refuses to overwrite
    without `force`. `folder`: the destination was written as a folder (`new/`), which must exist. Returns the
    file written."""
    if folder and not destination.is_dir():
        raise UsageError(f"{cut(str(destination), 300)}/: no such folder; make it first, or name the file to write")
    target = destination / f"{item.name}.toml" if destination.is_dir() else destination
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise UsageError(f"{target}: not a regular file (a link, a device); name the file itself")
    if target.exists() and not force:
        raise UsageError(f"{target} exists; add --force to replace it")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent}: no such folder")
    write_atomically(target, lambda file: file.write(item.path.read_bytes()))
    return target
