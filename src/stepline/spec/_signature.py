"""A template's parameters: the names it declares or uses, and refusing any other.

A template (``define``) takes the parameters named in its ``params`` defaults and every
``${params.NAME}`` written anywhere in it. Arguments outside that set — in the ``params`` of a
``submit`` of the template, or the ``with`` of a ``use`` step — are a mistake (most often a typo,
which would otherwise silently leave the default in force), so they are ``invalid_job`` with a
suggestion. A plain job submitted with ``params`` is not checked: a driver may send the same
parameters to many jobs, and only templates are written to be called with arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from .._errors import InvalidJob
from .._lazy import close_match

__all__ = ["check_arguments", "parameters_of"]

_USED: Final = re.compile(r"(?<!\$)\$\{params\.([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_DEPTH: Final = 128  # deeper JSON is refused by validation anyway; stop walking there


def parameters_of(template: object) -> frozenset[str]:
    """Every parameter ``template`` declares (``params`` keys) or uses (``${params.X}``)."""
    names: set[str] = set()
    if isinstance(template, Mapping):
        declared = template.get("params")
        if isinstance(declared, Mapping):
            names.update(key for key in declared if type(key) is str)
    todo: list[tuple[object, int]] = [(template, 0)]
    while todo:
        value, depth = todo.pop()
        if type(value) is str:
            if "${params." in value:
                names.update(_USED.findall(value))
        elif depth < _MAX_DEPTH and isinstance(value, Mapping):
            todo.extend((item, depth + 1) for item in value.values())
        elif depth < _MAX_DEPTH and isinstance(value, list):
            todo.extend((item, depth + 1) for item in value)
    return frozenset(names)


def check_arguments(template: str, raw: object, args: Mapping[str, Any], where: str) -> None:
    """Raise ``InvalidJob`` at ``where.NAME`` for an argument template ``template`` never reads."""
    if not args:
        return
    known = parameters_of(raw)
    for name in args:
        if name not in known:
            raise InvalidJob(f"{where}.{name}", _unknown(template, str(name), known))


def _unknown(template: str, name: str, known: frozenset[str]) -> str:
    message = f"template {template!r} has no parameter {name!r}"
    close = close_match(name, sorted(known))
    if close is not None:
        return f"{message} (did you mean {close!r}?)"
    return (
        f"{message} (it takes {', '.join(map(repr, sorted(known)))})"
        if known
        else (f"{message} (it takes none)")
    )
