"""Tests of job spec validation: raw JSON in, frozen specs (or an InvalidJob with a path) out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stepline._errors import InvalidJob
from stepline.spec._model import (
    NO_MODIFIERS,
    Fail,
    JobSpec,
    Log,
    Modifiers,
    Par,
    Race,
    Retry,
    Run,
    Seq,
    Sleep,
    Try,
    Use,
    Value,
)
from stepline.spec._validate import MAX_JSON_DEPTH, MAX_STEP_DEPTH, validate_job, validate_template


def invalid(raw: object, **kwargs: Any) -> InvalidJob:
    """The InvalidJob that validating ``raw`` raises."""
    with pytest.raises(InvalidJob) as info:
        validate_job(raw, **kwargs)
    return info.value


def steps_of(spec: JobSpec) -> tuple[Any, ...]:
    """The steps of a job: its ``Seq`` body's, or a bare step job's one step, which is its body
    (at ``steps[0]``, where a ``Seq`` body sits at the job's own path)."""
    if spec.body.path.endswith("steps[0]"):
        return (spec.body,)
    assert isinstance(spec.body, Seq)
    return spec.body.steps


def only_step(raw: object, **kwargs: Any) -> Any:
    """The single step of a one-step job."""
    steps = steps_of(validate_job(raw, **kwargs))
    assert len(steps) == 1
    return steps[0]


def nested(kind: str, levels: int) -> dict[str, Any]:
    """``levels`` steps nested through ``kind`` (seq/par/race/try), a value step innermost."""
    step: dict[str, Any] = {"value": 1}
    for _ in range(levels - 1):
        step = {kind: step if kind == "try" else [step]}
    return step


# -- step kinds ---------------------------------------------------------------------------------


def test_sleep_accepts_float_and_int() -> None:
    assert only_step({"sleep": 1.5}) == Sleep(path="steps[0]", seconds=1.5)
    step = only_step({"sleep": 2})
    assert step.seconds == 2.0
    assert type(step.seconds) is float
    assert only_step({"sleep": 0}).seconds == 0.0


def test_value_accepts_any_json() -> None:
    value: Any
    for value in (None, True, 0, -3, 2.5, "s", [], {}, [1, {"a": [None, "x"]}], {"k": {"j": []}}):
        assert only_step({"value": value}) == Value(path="steps[0]", value=value)


def test_value_is_not_copied_when_nothing_is_substituted() -> None:
    data = {"a": [1, 2, {"b": "c"}]}
    assert only_step({"value": data}).value is data


def test_log_and_fail() -> None:
    assert only_step({"log": "hello"}) == Log(path="steps[0]", message="hello")
    assert only_step({"fail": "boom"}) == Fail(path="steps[0]", message="boom")


def test_run_argv_list() -> None:
    step = only_step({"run": ["echo", "hi", ""]})
    assert step == Run(path="steps[0]", argv=("echo", "hi", ""))
    assert step.grace == 5.0
    assert step.env is None
    assert step.cwd is None
    assert step.stdin is None


def test_run_shell_line() -> None:
    assert only_step({"run": "echo $HOME | wc"}).argv == ("/bin/sh", "-c", "echo $HOME | wc")


def test_run_options() -> None:
    step = only_step(
        {"run": ["cat"], "env": {"A": "1", "B": ""}, "cwd": "/tmp", "stdin": "in", "grace": 0.5}
    )
    assert step == Run(
        path="steps[0]", argv=("cat",), env={"A": "1", "B": ""}, cwd="/tmp", stdin="in", grace=0.5
    )


@pytest.mark.parametrize(
    ("run", "path", "words"),
    [
        (5, "steps[0].run", "expected a list of strings or a shell line, got number"),
        (None, "steps[0].run", "got null"),
        ({}, "steps[0].run", "got object"),
        ([], "steps[0].run", "empty list"),
        ("", "steps[0].run", "must not be empty"),
        ([""], "steps[0].run[0]", "must not be empty"),
        (["ls", 5], "steps[0].run[1]", "expected a string, got number"),
        (["ls", True], "steps[0].run[1]", "got boolean"),
        (["ls", "a\0b"], "steps[0].run[1]", "NUL"),
        ("echo \0", "steps[0].run", "NUL"),
    ],
)
def test_run_errors(run: object, path: str, words: str) -> None:
    err = invalid({"steps": [{"run": run}]})
    assert err.path == path
    assert words in err.problem


@pytest.mark.parametrize(
    ("options", "path", "words"),
    [
        ({"env": []}, "steps[0].env", "expected an object of strings, got list"),
        ({"env": {"A": 1}}, "steps[0].env.A", "expected a string, got number"),
        ({"env": {"A=B": "x"}}, "steps[0].env", "bad environment variable name 'A=B'"),
        ({"env": {"": "x"}}, "steps[0].env", "bad environment variable name"),
        ({"cwd": 1}, "steps[0].cwd", "expected a string"),
        ({"cwd": "/a\0"}, "steps[0].cwd", "NUL"),
        ({"stdin": ["x"]}, "steps[0].stdin", "expected a string, got list"),
        ({"grace": -1}, "steps[0].grace", "must not be negative, got -1"),
        ({"grace": "5"}, "steps[0].grace", "expected a number, got string '5'"),
    ],
)
def test_run_option_errors(options: dict[str, Any], path: str, words: str) -> None:
    err = invalid({"steps": [{"run": ["x"], **options}]})
    assert err.path == path
    assert words in err.problem


def test_seq_par_race() -> None:
    assert only_step({"seq": []}) == Seq(path="steps[0]", steps=())
    step = only_step({"seq": [{"value": 1}, {"value": 2}]})
    assert [s.path for s in step.steps] == ["steps[0].seq[0]", "steps[0].seq[1]"]
    par = only_step({"par": [{"value": 1}], "limit": 3})
    assert par == Par(path="steps[0]", steps=(Value(path="steps[0].par[0]", value=1),), limit=3)
    assert only_step({"par": [{"value": 1}]}).limit is None
    race = only_step({"race": [{"sleep": 1}, {"value": 2}]})
    assert isinstance(race, Race)
    assert [s.path for s in race.steps] == ["steps[0].race[0]", "steps[0].race[1]"]


@pytest.mark.parametrize("kind", ["par", "race"])
def test_par_and_race_must_not_be_empty(kind: str) -> None:
    err = invalid({"steps": [{"seq": [{kind: []}]}]})
    assert err.path == f"steps[0].seq[0].{kind}"
    assert "must not be empty" in err.problem


@pytest.mark.parametrize("kind", ["seq", "par", "race"])
def test_step_lists_must_be_lists(kind: str) -> None:
    err = invalid({kind: {"value": 1}})
    assert err.path == f"steps[0].{kind}"
    assert "expected a list of steps, got object" in err.problem


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        (0, "at least 1, got 0"),
        (2.5, "expected an integer"),
        (True, "got boolean"),
        ("2", "got string"),
    ],
)
def test_par_limit_is_a_positive_int(limit: object, words: str) -> None:
    err = invalid({"par": [{"value": 1}], "limit": limit})
    assert err.path == "steps[0].limit"
    assert words in err.problem


def test_try_and_catch() -> None:
    step = only_step({"try": {"fail": "x"}, "catch": {"value": 1}})
    assert step == Try(
        path="steps[0]",
        body=Fail(path="steps[0].try", message="x"),
        catch=Value(path="steps[0].catch", value=1),
    )
    assert only_step({"try": {"value": 1}}).catch is None


def test_try_errors_name_the_inner_path() -> None:
    err = invalid({"try": {"sleep": -1}})
    assert err.path == "steps[0].try.sleep"
    err = invalid({"try": {"value": 1}, "catch": [{"value": 1}]})
    assert err.path == "steps[0].catch"
    assert "a step must be an object, got list" in err.problem


# -- modifiers ----------------------------------------------------------------------------------


def test_modifiers() -> None:
    step = only_step(
        {"value": 1, "name": "n", "timeout": 2, "retry": {"attempts": 3, "backoff": 0.5}}
    )
    assert step.mods == Modifiers(name="n", timeout=2.0, retry=Retry(3, 0.5, 2.0))
    assert only_step({"value": 1}).mods is NO_MODIFIERS
    assert only_step({"value": 1, "retry": {"attempts": 1}}).mods.retry == Retry(1, 0.0, 2.0)
    assert only_step({"value": 1, "retry": {"attempts": 2, "factor": 0}}).mods.retry.factor == 0.0


@pytest.mark.parametrize(
    ("mods", "path", "words"),
    [
        ({"name": 5}, "steps[0].name", "expected a string, got number"),
        ({"name": None}, "steps[0].name", "got null"),
        ({"timeout": -0.5}, "steps[0].timeout", "must not be negative, got -0.5"),
        ({"timeout": "1"}, "steps[0].timeout", "expected a number, got string"),
        ({"timeout": True}, "steps[0].timeout", "expected a number, got boolean"),
        ({"retry": 3}, "steps[0].retry", "expected an object, got number"),
        ({"retry": {}}, "steps[0].retry", "missing 'attempts'"),
        ({"retry": {"attempts": 2, "tries": 1}}, "steps[0].retry", "unknown key 'tries'"),
        ({"retry": {"attempts": 0}}, "steps[0].retry.attempts", "at least 1, got 0"),
        ({"retry": {"attempts": 2.5}}, "steps[0].retry.attempts", "expected an integer"),
        ({"retry": {"attempts": 2.0}}, "steps[0].retry.attempts", "expected an integer"),
        ({"retry": {"attempts": True}}, "steps[0].retry.attempts", "got boolean"),
        ({"retry": {"attempts": 2, "backoff": -1}}, "steps[0].retry.backoff", "negative"),
        ({"retry": {"attempts": 2, "factor": "2"}}, "steps[0].retry.factor", "expected a number"),
    ],
)
def test_modifier_errors(mods: dict[str, Any], path: str, words: str) -> None:
    err = invalid({"steps": [{"value": 1, **mods}]})
    assert err.path == path
    assert words in err.problem


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    ("template", "path"),
    [
        ({"sleep": "X"}, "steps[0].sleep"),
        ({"value": 1, "timeout": "X"}, "steps[0].timeout"),
        ({"run": ["x"], "grace": "X"}, "steps[0].grace"),
        ({"value": 1, "retry": {"attempts": 2, "backoff": "X"}}, "steps[0].retry.backoff"),
        ({"value": 1, "retry": {"attempts": 2, "factor": "X"}}, "steps[0].retry.factor"),
    ],
)
def test_numbers_must_be_finite(bad: float, template: dict[str, Any], path: str) -> None:
    raw = orjson.loads(orjson.dumps(template).replace(b'"X"', b"0"))
    field = raw
    for key in path.split(".")[1:-1]:
        field = field[key]
    field[path.rsplit(".", 1)[1]] = bad
    err = invalid(raw)
    assert err.path == path
    assert "finite" in err.problem


def test_huge_ints_are_refused_without_crashing() -> None:
    err = invalid({"sleep": 10**400})
    assert err.path == "steps[0].sleep"
    assert "too large" in err.problem
    err = invalid({"value": 2**64})
    assert err.path == "steps[0].value"
    assert "64-bit" in err.problem
    err = invalid({"par": [{"value": 1}], "limit": -(10**5000)})
    assert err.path == "steps[0].limit"


def test_value_must_be_finite_json() -> None:
    err = invalid({"value": {"a": [1, float("nan")]}})
    assert err.path == "steps[0].value.a[1]"
    assert "finite" in err.problem
    err = invalid({"value": {"odd key": float("inf")}})
    assert err.path == "steps[0].value['odd key']"
    err = invalid({"value": (1, 2)})
    assert "not a JSON value: tuple" in err.problem
    err = invalid({"value": {1: 2}})
    assert "keys must be strings" in err.problem


# -- shape of steps and jobs ----------------------------------------------------------------------


def test_unknown_key_names_path_and_key() -> None:
    err = invalid({"steps": [{"value": 1}, {"sleeep": 1}]})
    assert err.path == "steps[1]"
    assert "unknown key 'sleeep'" in err.problem
    assert "did you mean 'sleep'" in err.problem
    err = invalid({"steps": [{"sleep": 1, "colour": "red"}]})
    assert err.path == "steps[0]"
    assert "unknown key 'colour'" in err.problem


def test_options_of_other_kinds_are_refused() -> None:
    err = invalid({"steps": [{"sleep": 1, "limit": 2}]})
    assert err.path == "steps[0]"
    assert "unknown key 'limit' for a sleep step" in err.problem
    assert "catch" in invalid({"value": 1, "catch": {"value": 2}}).problem
    assert "with" in invalid({"par": [{"value": 1}], "with": {}}).problem


def test_zero_or_two_kind_keys() -> None:
    err = invalid({"steps": [{"sleep": 1, "value": 2}]})
    assert err.path == "steps[0]"
    assert "more than one step kind" in err.problem
    assert "'sleep'" in err.problem
    assert "'value'" in err.problem
    err = invalid({"steps": [{"name": "x", "timeout": 1}]})
    assert err.path == "steps[0]"
    assert "no step kind" in err.problem
    err = invalid({"steps": [{}]})
    assert "empty step" in err.problem


def test_steps_must_be_objects() -> None:
    err = invalid({"steps": [{"value": 1}, "sleep"]})
    assert err.path == "steps[1]"
    assert "a step must be an object, got string 'sleep'" in err.problem


def test_nested_error_paths() -> None:
    job = {
        "steps": [
            {"value": 1},
            {"value": 2},
            {"par": [{"run": 5}]},
        ]
    }
    err = invalid(job)
    assert err.path == "steps[2].par[0].run"
    assert err.problem == "expected a list of strings or a shell line, got number 5"
    assert str(err) == f"steps[2].par[0].run: {err.problem}"
    deep = {"seq": [{"value": 1}, {"race": [{"try": {"par": [{"value": 1}, {"sleep": -1}]}}]}]}
    err = invalid({"steps": [deep]})
    assert err.path == "steps[0].seq[1].race[0].try.par[1].sleep"
    assert err.problem == "must not be negative, got -1"


def test_bare_step_is_a_one_step_job() -> None:
    spec = validate_job({"sleep": 1, "name": "nap", "timeout": 3})
    assert spec == JobSpec(body=Sleep(path="steps[0]", mods=Modifiers("nap", 3.0), seconds=1.0))
    assert validate_job({"steps": [{"sleep": 1}]}).body == Seq(
        path="", steps=(Sleep(path="steps[0]", seconds=1.0),)
    )
    assert spec.name is None
    assert spec.timeout is None
    assert invalid({"sleep": -1}).path == "steps[0].sleep"


def test_bare_step_takes_no_job_keys() -> None:
    err = invalid({"value": 1, "params": {}})
    assert err.path == "steps[0]"
    assert "unknown key 'params'" in err.problem


def test_full_job() -> None:
    spec = validate_job(
        {
            "name": "j",
            "timeout": 10,
            "retry": {"attempts": 2},
            "params": {"x": 1},
            "steps": [{"value": 1}, {"log": "hi"}],
        }
    )
    assert spec.name == "j"
    assert spec.timeout == 10.0
    assert spec.retry == Retry(2)
    assert spec.params == {"x": 1}
    assert spec.body == Seq(
        path="", steps=(Value(path="steps[0]", value=1), Log(path="steps[1]", message="hi"))
    )


def test_empty_steps_is_allowed() -> None:
    assert validate_job({"steps": []}).body == Seq(path="", steps=())


@pytest.mark.parametrize(
    ("job", "path", "words"),
    [
        ([{"value": 1}], "", "a job must be an object, got list"),
        ("x", "", "a job must be an object"),
        (None, "", "a job must be an object, got null"),
        ({}, "", "a job needs 'steps'"),
        ({"name": "x"}, "", "a job needs 'steps'"),
        ({"steps": [], "extra": 1}, "", "unknown key 'extra'"),
        ({"step": []}, "", "unknown key 'step'"),
        ({"steps": {}}, "steps", "expected a list of steps, got object"),
        ({"steps": [], "name": 1}, "name", "expected a string"),
        ({"steps": [], "timeout": -1}, "timeout", "must not be negative"),
        ({"steps": [], "retry": {"attempts": 0}}, "retry.attempts", "at least 1"),
        ({"steps": [], "params": []}, "params", "expected an object, got list"),
        ({"steps": [], "tasks": {}}, "", "'steps' or 'tasks', not both"),  # tasks: test_graph.py
        ({"tasks": {}}, "tasks", "must not be empty"),
        ({"steps": [], "on_finish": {}}, "on_finish", "expected a list of callbacks"),
    ],
)
def test_job_errors(job: object, path: str, words: str) -> None:
    err = invalid(job)
    assert err.path == path
    assert words in err.problem


# -- depth limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["seq", "par", "race", "try"])
def test_step_nesting_limit(kind: str) -> None:
    validate_job(nested(kind, MAX_STEP_DEPTH))
    err = invalid(nested(kind, MAX_STEP_DEPTH + 1))
    assert "steps nested deeper than 64 levels" in err.problem
    assert err.path.count(kind) == MAX_STEP_DEPTH
    err = invalid(nested(kind, 70))
    assert "steps nested deeper than 64 levels" in err.problem


def test_step_nesting_limit_from_parsed_json() -> None:
    text = '{"seq":[' * 500 + '{"value":1}' + "]}" * 500  # 1000 JSON levels: orjson's limit is 1024
    err = invalid(orjson.loads(text))
    assert "nested deeper" in err.problem
    text = '{"try":' * 1000 + '{"value":1}' + "}" * 1000
    assert "nested deeper" in invalid(orjson.loads(text)).problem


def test_deep_garbage_never_raises_recursion_error() -> None:
    deep_list = orjson.loads("[" * 1000 + "]" * 1000)
    deep_object = orjson.loads('{"a":' * 1000 + "1" + "}" * 1000)
    for raw in (
        deep_list,
        deep_object,
        {"steps": deep_list},
        {"steps": [deep_list]},
        {"steps": [], "params": {"p": deep_list}},
        {"run": ["x"], "env": deep_object},
        {"value": 1, "retry": deep_object},
        {"use": "t", "with": {"x": deep_list}},
    ):
        with pytest.raises(InvalidJob):
            validate_job(raw, templates={"t": {"value": 1}})


def test_value_nesting_limit() -> None:
    ok: Any = 1
    for _ in range(MAX_JSON_DEPTH):
        ok = [ok]
    assert only_step({"value": ok}).value is ok
    err = invalid({"value": [ok]})
    assert "JSON nested deeper than 64 levels" in err.problem
    assert err.path.startswith("steps[0].value[0][0]")
    err = invalid({"value": orjson.loads("[" * 1000 + "]" * 1000)})
    assert "JSON nested deeper than 64 levels" in err.problem


def test_template_chains_count_towards_the_step_depth() -> None:
    templates: dict[str, Any] = {f"t{i}": {"use": f"t{i + 1}"} for i in range(200)}
    templates["t200"] = {"value": 1}
    err = invalid({"use": "t0"}, templates=templates)
    assert "steps nested deeper than 64 levels" in err.problem
    assert err.path.startswith("steps[0].use.steps[0].use.steps[0]")


# -- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [1.5, 7, None, True, "text", [1, "a"], {"k": [None]}])
def test_whole_placeholder_becomes_the_value_itself(value: Any) -> None:
    step = only_step({"value": "${params.p}"}, params={"p": value})
    assert step.value == value
    assert type(step.value) is type(value)


def test_substitution_happens_before_type_checks() -> None:
    assert only_step({"sleep": "${params.d}"}, params={"d": 1.5}).seconds == 1.5
    step = only_step(
        {
            "par": [{"value": 1}],
            "limit": "${params.n}",
            "timeout": "${params.t}",
            "retry": "${params.r}",
        },
        params={"n": 2, "t": 3, "r": {"attempts": 4}},
    )
    assert step.limit == 2
    assert step.mods == Modifiers(timeout=3.0, retry=Retry(4))
    assert only_step({"run": "${params.argv}"}, params={"argv": ["ls", "-l"]}).argv == ("ls", "-l")


def test_substituted_values_are_type_checked_with_the_field_path() -> None:
    err = invalid({"steps": [{"sleep": "${params.d}"}]}, params={"d": "soon"})
    assert err.path == "steps[0].sleep"
    assert "expected a number, got string 'soon'" in err.problem
    err = invalid({"sleep": "${params.d}"}, params={"d": -2})
    assert "must not be negative" in err.problem
    err = invalid({"value": 1, "retry": {"attempts": "${params.n}"}}, params={"n": True})
    assert err.path == "steps[0].retry.attempts"


def test_embedding_in_longer_strings() -> None:
    params = {"s": "str", "n": 5, "f": 1.5, "b": False, "z": None, "l": [1, "a"], "o": {"k": 2}}
    text = "${params.s}|${params.n}|${params.f}|${params.b}|${params.z}|${params.l}|${params.o}"
    assert only_step({"log": text}, params=params).message == (
        'str|5|1.5|false|null|[1,"a"]|{"k":2}'
    )
    assert only_step({"log": "<${params.s}>"}, params=params).message == "<str>"


def test_every_string_of_the_step_tree_is_substituted() -> None:
    p = {"x": "X"}
    step = only_step(
        {
            "run": ["echo", "a${params.x}"],
            "env": {"${params.x}": "v${params.x}"},
            "cwd": "/${params.x}",
            "stdin": "${params.x}!",
            "name": "n${params.x}",
        },
        params=p,
    )
    assert step.argv == ("echo", "aX")
    assert step.env == {"${params.x}": "vX"}  # object keys are never substituted
    assert step.cwd == "/X"
    assert step.stdin == "X!"
    assert step.mods.name == "nX"
    value = only_step({"value": {"${params.x}": ["${params.x}", {"k": "-${params.x}-"}]}}, params=p)
    assert value.value == {"${params.x}": ["X", {"k": "-X-"}]}
    assert only_step({"fail": "${params.x}"}, params=p).message == "X"


def test_dollar_escape_and_other_forms_are_left_alone() -> None:
    p = {"x": 1}
    assert only_step({"log": "$${params.x}"}, params=p).message == "${params.x}"
    assert only_step({"log": "a $${HOME} b"}, params=p).message == "a ${HOME} b"
    for text in (
        "${HOME}",
        # ${tasks...} and ${job...} now mean something: see tests/test_graph.py
        "${params.bad-name}",
        "$x",
        "${",
        "$",
    ):
        assert only_step({"log": text}, params=p).message == text
    assert only_step({"run": "echo ${HOME} ${params.x}"}, params=p).argv[2] == "echo ${HOME} 1"
    assert only_step({"value": "$${params.x}"}).value == "${params.x}"


def test_unknown_parameter_names_path() -> None:
    err = invalid({"steps": [{"value": 1}, {"seq": [{"log": "hi ${params.who}"}]}]})
    assert err.path == "steps[1].seq[0].log"
    assert "unknown parameter 'who'" in err.problem
    err = invalid({"value": {"a": [0, "${params.nope}"]}})
    assert err.path == "steps[0].value.a[1]"
    assert "unknown parameter 'nope'" in err.problem
    err = invalid({"run": ["x"], "env": {"A": "${params.e}"}})
    assert err.path == "steps[0].env.A"
    assert invalid({"steps": [], "name": "${params.n}"}).path == "name"


def test_submit_params_override_defaults() -> None:
    job = {"params": {"a": 1, "b": "two"}, "steps": [{"value": ["${params.a}", "${params.b}"]}]}
    spec = validate_job(job)
    assert steps_of(spec)[0].value == [1, "two"]
    spec = validate_job(job, params={"a": 10, "c": 3})
    assert steps_of(spec)[0].value == [10, "two"]
    assert spec.params == {"a": 10, "b": "two", "c": 3}


def test_job_level_fields_are_substituted_but_not_params() -> None:
    job = {
        "params": {"t": 5, "self": "${params.t}"},
        "name": "job ${params.t}",
        "timeout": "${params.t}",
        "steps": [{"value": "${params.self}"}],
    }
    spec = validate_job(job)
    assert spec.name == "job 5"
    assert spec.timeout == 5.0
    assert spec.params["self"] == "${params.t}"
    assert steps_of(spec)[0].value == "${params.t}"


def test_parameter_values_are_not_substituted_again() -> None:
    params = {"a": "${params.b}", "b": 1, "step": {"log": "${params.b}"}}
    assert only_step({"log": "${params.a}"}, params=params).message == "${params.b}"
    assert only_step({"log": "<${params.a}>"}, params=params).message == "<${params.b}>"
    step = only_step({"seq": ["${params.step}"]}, params=params)
    assert step.steps == (Log(path="steps[0].seq[0]", message="${params.b}"),)
    assert only_step({"value": ["${params.a}"]}, params=params).value == ["${params.b}"]


def test_steps_from_parameters_are_validated() -> None:
    step = only_step({"seq": "${params.s}"}, params={"s": [{"value": 1}, {"sleep": 2}]})
    assert [s.path for s in step.steps] == ["steps[0].seq[0]", "steps[0].seq[1]"]
    assert only_step({"try": "${params.t}"}, params={"t": {"value": 1}}).body.path == (
        "steps[0].try"
    )
    err = invalid({"seq": "${params.s}"}, params={"s": [{"sleep": -1}]})
    assert err.path == "steps[0].seq[0].sleep"


def test_parameter_values_must_be_json() -> None:
    err = invalid({"value": 1}, params={"x": float("nan")})
    assert err.path == "params.x"
    assert "finite" in err.problem
    err = invalid({"steps": [], "params": {"d": {"k": [float("inf")]}}})
    assert err.path == "params.d.k[0]"
    err = invalid({"value": 1}, params={"x": orjson.loads("[" * 1000 + "]" * 1000)})
    assert "nested deeper" in err.problem


def test_parameter_values_count_towards_the_value_depth() -> None:
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = [deep]
    assert only_step({"value": "${params.d}"}, params={"d": deep}).value == deep
    err = invalid({"value": {"k": "${params.d}"}}, params={"d": [deep]})
    assert "nested deeper" in err.problem


# -- templates (use) ------------------------------------------------------------------------------

TEMPLATES: dict[str, Any] = {
    "greet": {
        "params": {"who": "world", "n": 1},
        "steps": [{"log": "hello ${params.who}"}, {"value": "${params.n}"}],
    },
    "bare": {"sleep": "${params.d}", "name": "nap"},
    "outer": {
        "steps": [{"use": "greet", "with": {"who": "${params.who}"}}],
        "params": {"who": "o"},
    },
    "a": {"use": "b"},
    "b": {"steps": [{"value": 1}, {"use": "a"}]},
    "self": {"use": "self"},
}


def test_use_expands_the_template() -> None:
    step = only_step({"use": "greet"}, templates=TEMPLATES)
    assert isinstance(step, Use)
    assert step.path == "steps[0]"
    assert step.template == "greet"
    assert step.job.body == Seq(
        path="steps[0].use",
        steps=(
            Log(path="steps[0].use.steps[0]", message="hello world"),
            Value(path="steps[0].use.steps[1]", value=1),
        ),
    )
    assert step.job.params == {"who": "world", "n": 1}


def test_use_with_overrides_defaults_and_is_substituted_in_the_outer_job() -> None:
    job = {"params": {"me": "you"}, "steps": [{"use": "greet", "with": {"who": "${params.me}"}}]}
    step = steps_of(validate_job(job, templates=TEMPLATES))[0]
    assert isinstance(step, Use)
    assert steps_of(step.job)[0].message == "hello you"
    step = only_step({"use": "greet", "with": {"n": [1, 2]}}, templates=TEMPLATES)
    assert step.job.body.steps[1].value == [1, 2]


def test_use_of_a_bare_step_template() -> None:
    step = only_step({"use": "bare", "with": {"d": 2}, "name": "u"}, templates=TEMPLATES)
    assert step.mods.name == "u"
    assert step.job.body == Sleep(  # a bare step template's body is its step
        path="steps[0].use.steps[0]", mods=Modifiers(name="nap"), seconds=2.0
    )


def test_outer_params_do_not_leak_into_templates() -> None:
    err = invalid({"use": "bare"}, params={"d": 1}, templates=TEMPLATES)
    assert err.path == "steps[0].use.steps[0].sleep"
    assert "unknown parameter 'd'" in err.problem


def test_nested_templates() -> None:
    step = only_step({"use": "outer", "with": {"who": "n"}}, templates=TEMPLATES)
    inner = step.job.body.steps[0]
    assert inner.path == "steps[0].use.steps[0]"
    assert inner.job.body.steps[0] == Log(
        path="steps[0].use.steps[0].use.steps[0]", message="hello n"
    )


def test_unknown_template() -> None:
    err = invalid({"steps": [{"value": 1}, {"use": "nope"}]}, templates=TEMPLATES)
    assert err.path == "steps[1].use"
    assert "unknown template 'nope'" in err.problem
    assert invalid({"use": "x"}).path == "steps[0].use"


def test_template_errors_carry_the_use_prefix() -> None:
    templates = {"t": {"steps": [{"value": 1}, {"par": []}]}, "j": {"steps": [], "timeout": -1}}
    err = invalid({"steps": [{"value": 1}, {"use": "t"}]}, templates=templates)
    assert err.path == "steps[1].use.steps[1].par"
    assert invalid({"use": "j"}, templates=templates).path == "steps[0].use.timeout"


def test_template_cycle() -> None:
    err = invalid({"use": "a"}, templates=TEMPLATES)
    assert "template cycle: a -> b -> a" in err.problem
    assert err.path == "steps[0].use.steps[0].use.steps[1].use"
    err = invalid({"use": "self"}, templates=TEMPLATES)
    assert "template cycle: self -> self" in err.problem


def test_use_errors() -> None:
    assert "expected a string" in invalid({"use": 5}, templates=TEMPLATES).problem
    err = invalid({"use": "greet", "with": [1]}, templates=TEMPLATES)
    assert err.path == "steps[0].with"
    assert "expected an object" in err.problem
    err = invalid({"use": "greet", "with": {"who": "${params.x}"}}, templates=TEMPLATES)
    assert err.path == "steps[0].with.who"
    assert "unknown parameter 'x'" in err.problem


# -- define time (allow_unresolved) -------------------------------------------------------------


def test_allow_unresolved_leaves_unknown_parameters() -> None:
    job = {
        "steps": [
            {"log": "hi ${params.who} $${x}"},
            {"sleep": "${params.d}", "timeout": "${params.t}"},
            {"par": "${params.steps}", "limit": "${params.n}"},
            {"run": ["x"], "env": "${params.env}", "grace": "${params.g}"},
            {"value": 1, "retry": {"attempts": "${params.a}"}},
            {"try": "${params.s}"},
        ]
    }
    steps = steps_of(validate_job(job, allow_unresolved=True))
    assert steps[0].message == "hi ${params.who} ${x}"
    assert steps[1].seconds == "${params.d}"
    with pytest.raises(InvalidJob):
        validate_job(job)


def test_allow_unresolved_still_checks_types_and_structure() -> None:
    err = invalid({"sleep": "soon"}, allow_unresolved=True)
    assert err.path == "steps[0].sleep"
    err = invalid({"sleep": "${params.d} s"}, allow_unresolved=True)
    assert err.path == "steps[0].sleep"
    err = invalid({"sleep": "${params.d}"}, params={"d": "x"}, allow_unresolved=True)
    assert err.path == "steps[0].sleep"
    assert invalid({"sleeep": "${params.d}"}, allow_unresolved=True).path == ""
    assert (
        "unknown key" in invalid({"steps": [{"value": 1, "x": 1}]}, allow_unresolved=True).problem
    )


def test_validate_template() -> None:
    validate_template({"sleep": "${params.d}"}, {})
    validate_template({"use": "bare", "with": {"d": "${params.later}"}}, TEMPLATES)
    validate_template({"use": "${params.which}"}, TEMPLATES)
    with pytest.raises(InvalidJob) as info:
        validate_template({"steps": [{"sleep": -1}]}, {})
    assert info.value.path == "steps[0].sleep"
    with pytest.raises(InvalidJob) as info:
        validate_template({"use": "missing"}, TEMPLATES)
    assert "unknown template" in info.value.problem


def test_validate_template_with_its_name_catches_cycles_through_it() -> None:
    templates: dict[str, Any] = {"b": {"use": "new"}, "new": {"value": 1}}
    validate_template({"use": "b"}, templates)  # b uses the old "new": no cycle seen
    with pytest.raises(InvalidJob) as info:
        validate_template({"use": "b"}, templates, name="new")
    assert "template cycle: new -> b -> new" in info.value.problem


# -- robustness -----------------------------------------------------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(["${params.p}", "x ${params.q}", "$${", "", "a", "${params.step}"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "steps",
                    "sleep",
                    "value",
                    "run",
                    "seq",
                    "par",
                    "race",
                    "try",
                    "catch",
                    "use",
                    "with",
                    "name",
                    "timeout",
                    "retry",
                    "attempts",
                    "limit",
                    "env",
                    "grace",
                    "params",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(raw=_json, p=_json)
def test_any_input_gives_a_spec_or_invalid_job(raw: object, p: object) -> None:
    templates = {"t": {"steps": [{"value": "${params.p}"}]}}
    try:
        spec = validate_job(raw, params={"p": p, "step": raw}, templates=templates)
    except InvalidJob:
        return
    assert isinstance(spec, JobSpec)


def test_job_key_on_a_bare_step_explains_itself() -> None:
    """Regression: the hint used to be "did you mean 'on_finish'?" for 'on_finish' itself."""
    with pytest.raises(InvalidJob) as err:
        validate_job({"run": "true", "on_finish": []})
    assert err.value.path == "steps[0]"
    assert "it is a job key" in err.value.message
    assert "did you mean" not in err.value.message


@pytest.mark.parametrize(
    ("job", "hint"),
    [
        ({"steps": [{"run": "true"}], "paralel": 2}, "(did you mean a 'par' step?)"),
        ({"cmd": ["true"]}, "(did you mean a 'run' step?)"),
        ({"steps": [{"cmd": "true"}]}, "(did you mean 'run'?)"),
        ({"run": "true", "command": "x"}, "for a run step (did you mean 'run'?)"),
        ({"run": "true", "timout": 3}, "(did you mean 'timeout'?)"),
        ({"run": "true", "enviroment": {}}, "(did you mean 'env'?)"),
        ({"par": [], "concurency": 2}, "for a par step (did you mean 'limit'?)"),
        ({"use": "t", "wiht": {}}, "(did you mean 'with'?)"),
        ({"value": 1, "retries": 3}, "(did you mean 'retry'?)"),
        ({"steps": [{"run": "true"}], "stpes": []}, "(did you mean 'steps'?)"),
        ({"sleep": 1, "limit": 2}, "for a sleep step: it belongs on a par step"),
        ({"sleep": 1, "cwd": "/"}, "for a sleep step: it belongs on a run step"),
        ({"steps": [{"run": "true"}], "sleep": 1}, 'a sleep step goes in the job\'s "steps"'),
    ],
)
def test_unknown_keys_get_a_hint_that_fits_where_they_are(job: Any, hint: str) -> None:
    """Regression: difflib alone proposed 'params' for 'paralel' and 'cwd' for 'cmd', from the
    keys of every level at once."""
    with pytest.raises(InvalidJob) as err:
        validate_job(job, templates={"t": {"steps": [{"value": 1}]}})
    assert hint in err.value.message


def test_a_step_key_at_job_level_is_never_suggested_as_itself() -> None:
    """Regression: a job-level key that only steps take said "did you mean 'env'?" for 'env'."""
    for key in ("stdin", "grace", "with", "catch"):
        with pytest.raises(InvalidJob) as err:
            validate_job({"steps": [{"run": "true"}], key: 1})
        assert f"did you mean {key!r}" not in err.value.message
        assert "it belongs on a" in err.value.message
