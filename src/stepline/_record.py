"""``__repr__``, ``__eq__`` and ``__hash__`` written once for the attrs classes built at start-up.

attrs writes each class's methods as Python source and compiles it when the class is created,
and ``stepline serve`` builds some thirty such classes before ``ready``: compiling their
``__repr__``, ``__eq__`` and ``__hash__`` was about a third of its start-up beyond importing
trio (NOTES.md, Performance). The generated ``__init__`` stays: it is called per job. A class
declared ``@frozen(repr=False, eq=False)`` deriving from :class:`ValueRecord` (or
``@define(repr=False, eq=False)`` from :class:`Record`) behaves as the generated methods would,
from these shared ones: the same ``repr``, equality and hash by the fields' values (honouring
each field's ``repr``/``eq``/``hash`` options), the class first. They are slower per call than
generated code; no hot path compares, hashes or prints these objects.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Record", "ValueRecord"]


def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    # What attrs.fields(cls) returns, read without its checks (this is called per compare and
    # per hash); the stub cannot know that a decorated class has the attribute.
    fields: tuple[attrs.Attribute[Any], ...] = cls.__attrs_attrs__  # type: ignore[attr-defined]
    return fields


def _compared(obj: object, field: attrs.Attribute[Any]) -> Any:
    value = getattr(obj, field.name)
    key = getattr(field, "eq_key", None)  # a field's eq=callable (not in attrs' type stub)
    return value if key is None else key(value)


def _shown(obj: object, field: attrs.Attribute[Any]) -> str:
    value = getattr(obj, field.name)
    shows: Any = field.repr  # True, or the field's repr=callable (typed bool in attrs' stub)
    return repr(value) if shows is True else str(shows(value))


class Record:
    """The shared ``__repr__`` of an attrs class: ``Name(field=value, ...)``, as attrs writes it.

    For a mutable class (``@define(repr=False, eq=False)``), which compares by identity."""

    __slots__ = ()

    def __repr__(self) -> str:
        cls = type(self)
        shown = ", ".join(f"{a.name}={_shown(self, a)}" for a in _fields(cls) if a.repr)
        return f"{cls.__qualname__.rsplit('>.', 1)[-1]}({shown})"  # as attrs: no "<locals>."


class ValueRecord(Record):
    """:class:`Record` that compares and hashes by value: for ``@frozen(repr=False, eq=False)``.

    Equal when of the same class with equal compared fields, field by field (so a NaN field is
    not equal to itself); the hash is that of the class and the hashed fields (a field's ``hash``
    option defaults to its ``eq``), as attrs generates."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(
            _compared(self, a) == _compared(other, a) for a in _fields(self.__class__) if a.eq
        )

    def __hash__(self) -> int:
        hashed = (a.name for a in _fields(self.__class__) if (a.eq if a.hash is None else a.hash))
        return hash((self.__class__, *(getattr(self, name) for name in hashed)))
