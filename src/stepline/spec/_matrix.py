"""Task matrices: a task written once and run once per combination of values.

``"matrix": {"py": ["3.11", "3.12"], "shard": [1, 2, 3]}`` makes six *instances* of the task,
in the order of :func:`itertools.product` (the last name varies fastest), each seeing its own
values as ``${matrix.py}`` and ``${matrix.shard}``. A value list may also be a parameter
(``"shard": "${params.shards}"``) that resolves to a list.

Instances are ordinary tasks of the graph the engine runs, named ``TASK[v1,v2]`` (each value as
text: a string as it is, anything else as JSON), so ``task`` events, errors and ``stepline
graph`` name them; the matrix task's own name stands for all of them: ``needs: "TASK"`` waits
for every instance, and ``${tasks.TASK.output}`` is the list of their outputs in matrix order.
Expanding at submit time keeps the engine's graph runner unaware of matrices (and ``limit``
bounds instances as it bounds tasks), at the price of validating each instance's steps once —
microseconds per instance, and it checks every combination's values before anything runs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import orjson
from attrs import frozen

from .._errors import InvalidJob
from ._text import describe_type

if TYPE_CHECKING:
    from ._fields import Fields

__all__ = ["MAX_INSTANCES", "Matrix", "parse_matrix"]

MAX_INSTANCES: Final = 256
"""Instances of one matrix task: a typo in a parameter must not make a million tasks."""

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@frozen
class Matrix:
    """A matrix task's instances: each one's values and its name, in matrix order."""

    values: tuple[Mapping[str, Any], ...]
    labels: tuple[str, ...]


def parse_matrix(v: Fields, raw: object, path: str, task: str) -> Matrix:
    """The ``matrix`` of task ``task`` (at ``path``): its instances, or an ``InvalidJob``."""
    where = f"{path}.matrix"
    if type(raw) is not dict:
        raise InvalidJob(where, f"expected an object of value lists, got {describe_type(raw)}")
    if not raw:
        raise InvalidJob(where, "must not be empty: name at least one list of values")
    axes: list[tuple[str, list[Any]]] = []
    for name, values in raw.items():
        if type(name) is not str or not _NAME.fullmatch(name):
            raise InvalidJob(
                where,
                f"bad matrix name {str(name)[:40]!r}: letters, digits and _, not first a digit",
            )
        axes.append((name, _axis(v, values, where, name)))
    count = 1
    for _, values in axes:
        count *= len(values)
    if count > MAX_INSTANCES:
        raise InvalidJob(where, f"{count} combinations: at most {MAX_INSTANCES} instances")
    combos = [dict(zip([n for n, _ in axes], c, strict=True)) for c in _product(axes)]
    labels = [f"{task}[{','.join(_text(x) for x in combo.values())}]" for combo in combos]
    if len(set(labels)) < len(labels):
        twice = next(label for label in labels if labels.count(label) > 1)
        raise InvalidJob(where, f"two combinations are both named {twice!r}: values must differ")
    return Matrix(values=tuple(combos), labels=tuple(labels))


def _axis(v: Fields, raw: object, where: str, name: str) -> list[Any]:
    """One name's values: a list, or a ``${params.X}`` holding one (unresolved: a stand-in)."""
    value = v.json_field(raw, where, name)
    if type(value) is list:
        if not value:
            raise InvalidJob(f"{where}.{name}", "must not be empty: an instance needs a value")
        return value
    if v.lenient(value):
        return [value]  # define time: one instance stands for the unknown list
    raise InvalidJob(
        f"{where}.{name}",
        f"expected a list of values (or a ${{params.X}} holding one), got {describe_type(value)}",
    )


def _product(axes: list[tuple[str, list[Any]]]) -> itertools.product[tuple[Any, ...]]:
    return itertools.product(*(values for _, values in axes))


def _text(value: object) -> str:
    return value if type(value) is str else orjson.dumps(value).decode()
