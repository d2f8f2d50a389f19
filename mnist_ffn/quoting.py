"""Commands printed for a person to paste.

Every argument is quoted so that a POSIX shell reads back exactly that argument: a folder named
`my runs`, `it's` or `$(rm -rf ~)` pastes as that folder, never as two words or a command. A name
with a newline or another character that is not printable is spelt in bash's $'...' form, whose
escapes keep the line one line (shlex.quote would keep the newline itself, inside quotes).
"""

from __future__ import annotations

import shlex

from mnist_ffn.messages import CONTROLS, escape

_ESCAPES = {"\\": "\\\\", "'": "\\'", **CONTROLS}


def quote(argument: object) -> str:
    text = str(argument)
    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join(_ESCAPES.get(character, escape(character)) for character in text) + "'"


def command_line(*arguments: object) -> str:
    """`mnist-ffn train --resume 'my runs/a'`: each argument quoted for the shell."""
    return " ".join(quote(argument) for argument in arguments)
