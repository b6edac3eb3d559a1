"""The field helpers of ``spec/`` (:class:`~stepline.spec._fields.Fields`): the public API every
parser of a job form uses, so each helper is documented and behaves as documented."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stepline import InvalidJob
from stepline.spec import _fields
from stepline.spec._fields import EMPTY, Fields
from stepline.spec._model import Retry


def fields(params: dict[str, Any] | None = None, *, unresolved: bool = False) -> Fields:
    return Fields(params or EMPTY, None, unresolved, ())


def test_the_docstring_table_lists_every_field_reader() -> None:
    table = set(re.findall(r"^``(\w+)``\s", _fields.__doc__ or "", re.M))
    readers = {"resolve", "string", "number", "count", "flag", "json_field", "env", "retry"}
    assert table == readers | {"limits", "runner"}
    assert all(callable(getattr(Fields, name)) for name in table)


def test_string_substitutes_then_checks_the_type() -> None:
    f = fields({"who": "world", "n": 3})
    assert f.string("hello ${params.who}", "steps[0]", "log") == "hello world"
    assert f.string("${params.n}x", "steps[0]", "log") == "3x"
    with pytest.raises(InvalidJob, match=r"^steps\[0\]\.log: expected a string, got number 3$"):
        f.string("${params.n}", "steps[0]", "log")
    with pytest.raises(InvalidJob, match="NUL"):
        f.string("a\0b", "steps[0]", "cwd", no_nul=True)


def test_number_and_count_are_strict() -> None:
    f = fields()
    assert f.number(2, "", "timeout") == 2.0
    assert f.count(3, "", "limit", 1) == 3
    with pytest.raises(InvalidJob, match="expected a number, got boolean true"):
        f.number(True, "", "timeout")
    with pytest.raises(InvalidJob, match="must not be negative"):
        f.number(-1, "", "timeout")
    with pytest.raises(InvalidJob, match=r"expected an integer, got number 2\.5"):
        f.count(2.5, "", "limit", 1)
    with pytest.raises(InvalidJob, match="must be at least 1, got 0"):
        f.count(0, "", "limit", 1)


def test_flag_is_none_when_absent_and_refuses_anything_but_a_boolean() -> None:
    f = fields({"on": True})
    assert f.flag({}, "", "stream") is None
    assert f.flag({"stream": "${params.on}"}, "", "stream") is True
    with pytest.raises(InvalidJob, match=r"^stream: expected true or false, got a string$"):
        f.flag({"stream": "yes"}, "", "stream")


def test_json_field_names_the_inner_path_of_a_problem() -> None:
    f = fields({"x": [1, 2]})
    assert f.json_field({"a": "${params.x}"}, "steps[0]", "value") == {"a": [1, 2]}
    with pytest.raises(InvalidJob, match=r"^steps\[0\]\.value\.a\[1\]: numbers must be finite"):
        f.json_field({"a": [0, float("inf")]}, "steps[0]", "value")


def test_env_and_retry_objects() -> None:
    f = fields({"v": "1"})
    assert f.env({"A": "${params.v}"}, "steps[0]") == {"A": "1"}
    assert f.retry({"attempts": 2}, "", "retry") == Retry(2, 0.0, 2.0)
    with pytest.raises(InvalidJob, match="bad environment variable name 'A=B'"):
        f.env({"A=B": "x"}, "steps[0]")
    with pytest.raises(InvalidJob, match=r"^retry: missing 'attempts'$"):
        f.retry({"backoff": 1}, "", "retry")


def test_a_substituted_value_is_data_never_substituted_again() -> None:
    f = fields({"a": "${params.b}", "b": "secret"})
    assert f.string("${params.a}", "", "log") == "${params.b}"
    assert f.literal.string("${params.b}", "", "log") == "${params.b}"


def test_lenient_only_at_define_time_and_only_for_one_whole_parameter() -> None:
    define = fields(unresolved=True)
    assert define.lenient("${params.d}")
    assert not define.lenient("x ${params.d}")
    assert not fields().lenient("${params.d}")
    placeholder: object = define.number("${params.d}", "", "sleep")
    assert placeholder == "${params.d}"  # kept, to be checked once the value is known
