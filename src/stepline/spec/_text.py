"""How paths and values appear in validation messages: one readable line that names the field.

Every parser of ``spec/`` builds its messages from these, so a path reads the same everywhere
(``steps[2].par[0].run``, ``tasks.build.env["odd key"]``) and no message can grow without bound
or fail to print, whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from .._lazy import close_match

__all__ = [
    "IDENT",
    "at",
    "describe",
    "describe_type",
    "key_suffix",
    "number_text",
    "short",
    "show_key",
    "suggest",
]

IDENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A name that may follow a dot in a path (``.key``); anything else is shown as ``["key"]``."""


def at(path: str, key: str) -> str:
    """The path of ``key`` below ``path``; paths are built only when needed (errors, children)."""
    if not key:
        return path
    return f"{path}.{key}" if path else key


def short(text: str) -> str:
    """A string quoted for a message, cut short: messages must stay one readable line."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def show_key(key: object) -> str:
    """An object key for a message (non-string keys only come from Python callers)."""
    return short(key) if type(key) is str else f"<{type(key).__name__} key>"


def number_text(v: float) -> str:
    """A number for a message; huge ints are not printed (str() of them can even raise)."""
    return str(v) if type(v) is float or -(10**30) < v < 10**30 else "a huge number"


def describe(v: object) -> str:
    """The JSON type of ``v`` (and a short rendering of scalars) for "expected X, got Y"."""
    if v is None:
        return "null"
    if type(v) is bool:
        return f"boolean {'true' if v else 'false'}"
    if type(v) is int or type(v) is float:
        return f"number {number_text(v)}"
    if type(v) is str:
        return f"string {short(v)}"
    if type(v) is list:
        return "list"
    if type(v) is dict:
        return "object"
    return type(v).__name__


def describe_type(v: object) -> str:
    """A JSON value's type alone, with its article ("a string", "null"): for values that come
    from a run (task outputs), which may be large and are not the user's own text."""
    if v is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list"}
    return names.get(type(v), "an object")


def key_suffix(key: object) -> str:
    """The path suffix of an object member: ``.key``, or ``["odd key"]`` when not an identifier."""
    if type(key) is str and IDENT.fullmatch(key):
        return f".{key}"
    return f"[{show_key(key)}]"


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name``, or nothing."""
    close = close_match(name, known)
    return f" (did you mean {close!r}?)" if close is not None else ""
