"""The one-line messages mnist-ffn prints for a person: what went wrong, quoting at most a short piece of what it
was given, one line whatever the names in it hold."""

from __future__ import annotations

import json

QUOTED_LIMIT = 60  # characters of a person's input a message repeats: enough to recognise it, never a flood
CONTROLS = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def cut(text: str, limit: int = QUOTED_LIMIT) -> str:
    """`text`, or its first `limit` characters and how long it was: a message quotes what it was given, bounded."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shown(value: object, limit: int = QUOTED_LIMIT) -> str:
    """A value as a message quotes it: a string in double quotes (as TOML and JSON write it), anything else as
    Python writes it; cut at `limit` characters."""
    text = json.dumps(value) if isinstance(value, str) else repr(value)
    return cut(text, limit)


def reason(exc: BaseException, line: str = "first", limit: int = 200) -> str:
    """What an exception says went wrong, for a message's parentheses: an operating system error's own words
    (`No space left on device`), else the first or the last (`line`) non-empty line of its message (torch and
    SQLAlchemy end theirs with the cause; most begin with it), cut at `limit`; its type where it says nothing."""
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)[:limit]
    lines = [text.strip() for text in str(exc).splitlines() if text.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[0] if line == "first" else lines[-1])[:limit]


def one_line(message: str) -> str:
    """The message with every character that would break or hide its line (newlines, terminal controls)
    written as an escape, so that one error is one line whatever the names in it hold."""
    if message.isprintable():
        return message
    return "".join(character if character.isprintable() else escape(character) for character in message)


def escape(character: str) -> str:
    """A character as bash's $'...' and Python write it when it is not printable (a newline as \\n)."""
    if character.isprintable():
        return character
    if character in CONTROLS:
        return CONTROLS[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x80 else (f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
