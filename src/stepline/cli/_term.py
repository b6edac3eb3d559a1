"""Terminal styling for the human-facing commands (``run``, ``demo``): colour only on a tty.

Colour is on when the stream is a terminal, ``NO_COLOR`` is unset (https://no-color.org) and
``TERM`` is not ``dumb``; off otherwise, so piped or captured output stays plain text.
"""

from __future__ import annotations

import os
from typing import Final, TextIO

__all__ = ["STYLES", "is_tty", "paint", "use_color"]

STYLES: Final = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def use_color(stream: TextIO) -> bool:
    return is_tty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str, on: bool) -> str:
    """``text`` in ``style`` (a key of :data:`STYLES`) when ``on``; unchanged otherwise."""
    return f"\x1b[{STYLES[style]}m{text}\x1b[0m" if on else text
