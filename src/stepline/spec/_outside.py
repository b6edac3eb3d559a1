"""Values from outside a job's spec, held to the limits the validator puts on ``value`` JSON.

A job's own data is checked at submit (:data:`~stepline.spec._validate.MAX_JSON_DEPTH` levels of
nesting at most). Data that arrives while the job runs — an HTTP response decoded as JSON, and any
output parsed from a process later — reaches the same places (``finished``, ``status``, the
``--state`` file, ``${tasks.T.output}``), so it must obey the same limit. Without it, a response
nested 1,000 levels deep (orjson parses up to 1,024, but encodes only 255) made ``finished`` say
``succeeded`` with an unencodable payload and broke every later ``status`` and the store.

The walk is iterative: the value may be nested deeper than Python's recursion limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from ._fields import MAX_JSON_DEPTH

__all__ = ["INVALID_OUTPUT", "too_deep"]

INVALID_OUTPUT: Final = "invalid_output"
"""The error type of a step whose outside data breaks a limit (``StepFailed.type``)."""


def too_deep(value: object, limit: int = MAX_JSON_DEPTH) -> str | None:
    """The problem with ``value``'s nesting, or None when lists and objects nest at most
    ``limit`` levels (the validator's rule: the outermost container is level 1)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        children: Iterable[object]
        if type(item) is dict:
            children = item.values()
        elif type(item) is list:
            children = item
        else:
            continue
        if level > limit:
            return f"JSON nested deeper than {limit} levels"
        stack.extend([(child, level + 1) for child in children if type(child) in _CONTAINERS])
    return None


_CONTAINERS: Final = (dict, list)
