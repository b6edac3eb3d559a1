"""``{"run": ...}`` jobs with nothing to substitute take a short way through ``validate_job``
(spec/_validate.py, ``_plain_run_job``): the same spec as the general path, the same errors,
and one shared spec per argv."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from stepline._errors import InvalidJob
from stepline.spec._validate import validate_job

# Templates make validate_job take the general path (they are unused by these jobs).
GENERAL: dict[str, Any] = {"templates": {"unused": {"value": 1}}}

PLAIN = [
    {"run": ["true"]},
    {"run": ["echo", "a b", "ü", "--x=1"]},
    {"run": ["/bin/sh", "-c", "exit 3"]},
    {"run": "echo hello | tr a-z A-Z"},
    {"run": "true"},
]


@pytest.mark.parametrize("raw", PLAIN, ids=range(len(PLAIN)))
def test_the_same_spec_as_the_general_path(raw: dict[str, Any]) -> None:
    short, general = validate_job(raw), validate_job(raw, **GENERAL)
    assert short is not general
    assert type(short.body) is type(general.body)
    assert attrs.asdict(short) == attrs.asdict(general)


@pytest.mark.parametrize("raw", PLAIN, ids=range(len(PLAIN)))
def test_jobs_with_the_same_argv_share_one_spec(raw: dict[str, Any]) -> None:
    assert validate_job(raw) is validate_job({"run": raw["run"]})


def test_a_long_argv_is_not_kept() -> None:
    raw = {"run": ["echo", "x" * 5000]}
    assert validate_job(raw) is not validate_job(raw)
    assert attrs.asdict(validate_job(raw)) == attrs.asdict(validate_job(raw, **GENERAL))


def test_only_the_latest_argvs_are_kept() -> None:
    first = validate_job({"run": ["echo", "first"]})
    for i in range(1000):
        validate_job({"run": ["echo", str(i)]})
    assert validate_job({"run": ["echo", "first"]}) is not first


BAD = [
    {"run": []},
    {"run": [""]},
    {"run": ["echo", "a\0b"]},
    {"run": ["echo", 1]},
    {"run": ["echo", None]},
    {"run": ""},
    {"run": "a\0b"},
    {"run": None},
    {"run": {"x": 1}},
    {"run": ["echo", "${params.missing}"]},
    {"run": "${params.missing}"},
]


@pytest.mark.parametrize("raw", BAD, ids=range(len(BAD)))
def test_the_same_errors_as_the_general_path(raw: dict[str, Any]) -> None:
    with pytest.raises(InvalidJob) as short:
        validate_job(raw)
    with pytest.raises(InvalidJob) as general:
        validate_job(raw, **GENERAL)
    assert (short.value.path, str(short.value)) == (general.value.path, str(general.value))


@pytest.mark.parametrize(
    ("raw", "params", "argv"),
    [
        ({"run": ["echo", "${params.x}"]}, {"x": "hi"}, ("echo", "hi")),
        ({"run": "echo ${params.x}"}, {"x": "hi"}, ("/bin/sh", "-c", "echo hi")),
        ({"run": ["echo", "$HOME"]}, None, ("echo", "$HOME")),
        ({"run": "echo $HOME"}, None, ("/bin/sh", "-c", "echo $HOME")),
    ],
)
def test_what_has_a_dollar_is_substituted_as_ever(
    raw: dict[str, Any], params: dict[str, Any] | None, argv: tuple[str, ...]
) -> None:
    assert validate_job(raw, params=params).body.argv == argv  # type: ignore[union-attr]
