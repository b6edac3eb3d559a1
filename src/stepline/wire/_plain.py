"""The hot path's decoder: a plain ``submit`` line, without the command classes.

A line ``{"op": "submit", "job": ...}`` (with at most ``name`` and ``id`` besides) is by far the
most common command, and the one whose cost counts: it is decoded here into a
:class:`PlainSubmit` tuple. Every other line goes to
:func:`~stepline.wire._commands.decode_command`, whose frozen command classes are imported with
it, at the first such line: a ``stepline serve`` does not create eleven attrs classes before
``ready`` that a driver submitting jobs never needs (NOTES.md, Performance).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from ._events import RequestId

__all__ = ["PlainSubmit", "decode_plain_submit", "plain_submit", "request_id_of"]

_SUBMIT_KEYS = frozenset({"op", "id", "job", "name"})
_make = tuple.__new__  # what PlainSubmit._make does, less its Python-level length check


class PlainSubmit(NamedTuple):
    """A ``submit`` with only ``job`` and optionally ``name`` and ``id``: the hot path."""

    job: Any
    name: str | None
    request_id: RequestId


def decode_plain_submit(line: bytes) -> PlainSubmit | None:
    """The line if it is a plain, valid ``submit``, else None (and
    :func:`~stepline.wire._commands.decode_command` will decode it, refusing it with the reason
    if need be). No command object is made: building the frozen ``Submit`` was half the cost of
    decoding a trivial job's line."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict:
        return None
    if len(obj) == 2 and obj.get("op") == "submit" and "job" in obj:  # plain_submit's first
        return _make(PlainSubmit, (obj["job"], None, None))  # case, without a second call
    return plain_submit(obj)


def plain_submit(obj: dict[Any, Any]) -> PlainSubmit | None:
    """The common ``{"op": "submit", "job": {...}}`` without cattrs (the hot path: the
    strict decoder is a visible share of a trivial job). Anything less plain returns None and
    takes the strict, explaining path."""
    if obj.get("op") != "submit":
        return None
    if len(obj) == 2 and "job" in obj:  # {"op": "submit", "job": ...}: nothing more to check
        return _make(PlainSubmit, (obj["job"], None, None))
    if not _SUBMIT_KEYS.issuperset(obj):
        return None
    name = obj.get("name")
    if "job" not in obj or (name is not None and not isinstance(name, str)):
        return None
    request_id = request_id_of(obj)
    if request_id is None and "id" in obj:
        return None
    return PlainSubmit(obj["job"], name, request_id)


def request_id_of(obj: dict[str, Any]) -> RequestId:
    """The command's ``id``, if it has one that can be echoed (a string or an integer)."""
    rid = obj.get("id")
    if rid is None or isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        return rid
    return None  # an id of another type cannot be echoed; _structure reports it
