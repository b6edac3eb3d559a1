"""The shared methods of `stepline._record` behave as the ones attrs generates."""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest

from stepline._record import Record, ValueRecord
from stepline.spec._model import NO_MODIFIERS, Modifiers, Retry, Run, Value


def generated() -> type:
    @attrs.frozen(kw_only=True)
    class Point:
        x: Any
        y: Any = 0
        note: Any = attrs.field(default="", eq=False, repr=False)
        size: int = attrs.field(default=0, repr=lambda n: f"{n} bytes")

    return Point


def shared() -> type:
    @attrs.frozen(kw_only=True, repr=False, eq=False)
    class Point(ValueRecord):
        x: Any
        y: Any = 0
        note: Any = attrs.field(default="", eq=False, repr=False)
        size: int = attrs.field(default=0, repr=lambda n: f"{n} bytes")

    return Point


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ({"x": 1}, {"x": 1}),
        ({"x": 1}, {"x": 2}),
        ({"x": 1, "note": "a"}, {"x": 1, "note": "b"}),  # a field left out of eq
        ({"x": (1, [2])}, {"x": (1, [2])}),
        ({"x": "s", "y": None}, {"x": "s", "y": 0}),
    ],
)
def test_equality_hash_and_repr_match_the_generated_ones(
    a: dict[str, Any], b: dict[str, Any]
) -> None:
    made, ours = generated(), shared()
    assert (ours(**a) == ours(**b)) == (made(**a) == made(**b))
    assert (ours(**a) != ours(**b)) == (made(**a) != made(**b))
    assert repr(ours(**a)) == repr(made(**a))
    if ours(**a) == ours(**b) and not isinstance(a["x"], tuple):
        assert hash(ours(**a)) == hash(ours(**b))


def test_fields_are_compared_one_by_one_as_attrs_does() -> None:
    nan = math.nan  # one object: equal as a tuple's item, not by ==
    ours, made = shared(), generated()
    assert made(x=nan) != made(x=nan)
    assert ours(x=nan) != ours(x=nan)


def test_other_classes_are_never_equal() -> None:
    ours = shared()
    assert ours(x=1) != shared()(x=1)  # same fields, another class
    assert ours(x=1) != (1, 0)
    assert Value(path="a", value=1) != Run(path="a", argv=("true",))


def test_spec_objects_compare_hash_and_show_by_value() -> None:
    retry = Retry(3, backoff=0.5)
    assert retry == Retry(3, 0.5, 2.0)
    assert hash(retry) == hash(Retry(3, 0.5))
    assert repr(retry) == "Retry(attempts=3, backoff=0.5, factor=2.0)"
    assert Modifiers() == NO_MODIFIERS
    assert Modifiers(name="n") != NO_MODIFIERS
    step = Value(path="steps[0]", value=[1])
    assert repr(step) == (
        "Value(path='steps[0]', mods=Modifiers(name=None, timeout=None, retry=None), value=[1])"
    )
    assert {retry: 1}[Retry(3, 0.5)] == 1


def test_a_mutable_record_compares_by_identity() -> None:
    @attrs.define(repr=False, eq=False)
    class Box(Record):
        items: list[int]

    box = Box([1])
    assert box != Box([1])
    assert box == box
    assert repr(box) == "Box(items=[1])"
    assert hash(box) == object.__hash__(box)
