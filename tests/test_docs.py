"""The docs stay true: every command and flag they show exists, every link resolves, no development log.

What a page shows is what sits in code: fenced blocks and `inline code`. Prose may say "mnist-ffn trains".
"""

import functools
import re

import pytest

from tests.helpers import PROJECT_ROOT, run_cli

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]
SUBCOMMANDS = {"configs": {"show", "copy"}}
# A command line stops at a comment, the end of an inline span, a table cell or a shell operator.
COMMAND = re.compile(r"mnist-ffn((?:[ \t]+[^\s#`|;&)]+)*)")


def code_of(text: str) -> list[str]:
    """The fenced blocks' lines and the inline code spans of a Markdown page."""
    pieces, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            pieces.append(line)
        else:
            pieces.extend(re.findall(r"`([^`]+)`", line))
    return pieces


def shown_commands(text: str) -> list[tuple[str, list[str]]]:
    """("train", ["--config", "--set"]) for each `mnist-ffn ...` the page shows; "" is the bare command."""
    found = []
    for piece in code_of(text):
        for match in COMMAND.finditer(piece):
            words = match.group(1).split()
            command = words[0] if words and not words[0].startswith("-") else ""
            rest = words[1:] if command else words
            if rest and rest[0] in SUBCOMMANDS.get(command, ()):
                command, rest = f"{command} {rest[0]}", rest[1:]
            flags = [word.split("=")[0] for word in rest if word.startswith("--")]
            found.append((command, flags))
    return found


@functools.cache
def help_text(command: str) -> str | None:
    result = run_cli(*command.split(), "--help")
    return result.stdout if result.returncode == 0 else None


def problems_in(text: str) -> list[str]:
    problems = []
    for command, flags in shown_commands(text):
        shown = f"mnist-ffn {command}".strip()
        text_of_help = help_text(command)
        if text_of_help is None:
            problems.append(f"{shown}: no such command")
            continue
        problems += [f"{shown} {flag}: not in its --help" for flag in flags if flag not in text_of_help.split()]
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_and_flag_a_page_shows_exists(page):
    assert problems_in(page.read_text()) == []


def test_the_check_fails_for_a_flag_or_a_command_that_does_not_exist():
    text = "```bash\nmnist-ffn train --config best --no-such-flag 3\n```\n"
    text += "and `mnist-ffn trian` and `mnist-ffn configs show X`"
    assert problems_in(text) == [
        "mnist-ffn train --no-such-flag: not in its --help",
        "mnist-ffn trian: no such command",
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_and_image_resolves(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith(("#", "mailto:")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name}: {target} does not exist"


def test_the_readme_is_a_front_door_that_links_every_page():
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert len(shown_commands(readme)) >= 10, "the README shows each command"
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


# Words of a development log, not of documentation: a figure says its machine, command and date instead.
DIARY = re.compile(
    r"\b(today|yesterday|that day|this session|earlier run|used to|the issue|targets? set|we measured|"
    r"before this layout|brought it to|the same hour)\b",
    re.IGNORECASE,
)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_page_reads_like_a_development_log(page):
    lines = [line for line in page.read_text().splitlines() if DIARY.search(line)]
    assert lines == []


def test_a_presets_figures_in_a_table_are_the_ones_its_header_states():
    """A figure lives in one place, the preset's header; a table row that names presets may only repeat it."""
    from mnist_ffn.presets import shipped

    presets = shipped("preset")
    rows = 0
    for page in (PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "configuration.md"):
        for line in page.read_text().splitlines():
            cells = line.split("|")[1:2]
            named = [name for name in re.findall(r"`([a-z-]+)`", cells[0] if cells else "") if name in presets]
            if not line.startswith("|") or not named:
                continue
            rows += 1
            headers = " ".join(presets[name].path.read_text().split("\n\n")[0] for name in named)
            for figure in re.findall(r"\d+\.\d+%", line):
                assert figure in headers, f"{page.name}: {figure} is in no header of {', '.join(named)}"
    assert rows >= 6
