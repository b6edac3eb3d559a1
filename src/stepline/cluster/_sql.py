"""The cluster's SQL, kept in ``.sql`` files beside this module and read once.

``sql/schema.sql`` creates the tables; ``sql/queries.sql`` holds every statement, each under a
``-- name: NAME`` line. Keeping SQL in files (rather than in Python strings) lets it be read,
linted and reviewed as SQL, and keeps each statement's reasoning in a comment beside it.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Final

__all__ = ["SCHEMA_VERSION", "query", "schema"]

SCHEMA_VERSION: Final = 3
"""The format of the tables; a database holding another is refused, never altered."""

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _read(filename: str) -> str:
    return resources.files(__package__).joinpath("sql", filename).read_text(encoding="utf-8")


@functools.cache
def _queries() -> dict[str, str]:
    text = _read("queries.sql")
    parts = _NAME.split(text)
    # parts: [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> str:
    """The statement called ``name`` in ``queries.sql`` (``KeyError`` for a typo)."""
    return _queries()[name]


def schema() -> str:
    """The whole of ``schema.sql``: idempotent, run in one transaction."""
    return _read("schema.sql")
