"""The graph forms a CI pipeline is written in, at validation: matrix, inherited ``env`` and
``cwd``, lists spliced into argv, ``parse``, ``artifacts``, ``if`` switches and template
arguments. Each misuse is an ``InvalidJob`` naming its path."""

from __future__ import annotations

from typing import Any

import pytest

from stepline import InvalidJob
from stepline.spec._matrix import MAX_INSTANCES
from stepline.spec._model import Graph, Run, Task
from stepline.spec._signature import parameters_of
from stepline.spec._validate import validate_job, validate_template


def invalid(job: object, **kwargs: Any) -> InvalidJob:
    with pytest.raises(InvalidJob) as info:
        validate_job(job, **kwargs)
    return info.value


def tasks_of(job: object, **kwargs: Any) -> dict[str, Task]:
    body = validate_job(job, **kwargs).body
    assert isinstance(body, Graph)
    return {task.name: task for task in body.tasks}


def body_of(job: object, **kwargs: Any) -> Any:
    """The validated body, untyped: tests reach into it freely."""
    return validate_job(job, **kwargs).body


def first_run(task: Task) -> Run:
    step = task.body.steps[0]
    assert isinstance(step, Run)
    return step


# -- matrix ---------------------------------------------------------------------------------------


def test_a_matrix_makes_one_instance_per_combination_in_order() -> None:
    job = {
        "tasks": {
            "setup": {"steps": []},
            "test": {
                "needs": "setup",
                "matrix": {"py": ["3.11", "3.12"], "shard": [1, 2]},
                "steps": [{"run": ["pytest", "--py=${matrix.py}", "${matrix.shard}"]}],
            },
            "merge": {"needs": "test", "steps": [{"value": "${tasks.test.output}"}]},
        }
    }
    tasks = tasks_of(job)
    names = ["test[3.11,1]", "test[3.11,2]", "test[3.12,1]", "test[3.12,2]"]
    assert list(tasks) == ["setup", *names, "merge"]
    assert first_run(tasks["test[3.12,1]"]).argv == ("pytest", "--py=3.12", "1")
    assert tasks["test[3.12,1]"].matrix == {"py": "3.12", "shard": 1}
    assert {tasks[name].group for name in names} == {"test"}
    assert all(tasks[name].needs == ("setup",) for name in names)
    assert tasks["merge"].needs == tuple(names)  # `needs: test` waits for every instance
    body = validate_job(job).body
    assert isinstance(body, Graph)
    assert body.groups == {"test": tuple(names)}


def test_a_matrix_from_a_parameter() -> None:
    job = {
        "params": {"shards": [1, 2, 3]},
        "tasks": {"t": {"matrix": {"n": "${params.shards}"}, "steps": [{"value": "${matrix.n}"}]}},
    }
    assert list(tasks_of(job)) == ["t[1]", "t[2]", "t[3]"]
    assert list(tasks_of(job, params={"shards": ["a"]})) == ["t[a]"]


@pytest.mark.parametrize(
    ("matrix", "path", "words"),
    [
        ("x", "tasks.t.matrix", "expected an object of value lists, got a string"),
        ({}, "tasks.t.matrix", "must not be empty"),
        ({"n": "abc"}, "tasks.t.matrix.n", "expected a list of values"),
        ({"n": 3}, "tasks.t.matrix.n", "expected a list of values"),
        ({"n": "${params.one}"}, "tasks.t.matrix.n", "expected a list of values"),
        ({"n": []}, "tasks.t.matrix.n", "must not be empty"),
        ({"1n": [1]}, "tasks.t.matrix", "bad matrix name '1n'"),
        ({"n": [1, "1"]}, "tasks.t.matrix", "both named 't[1]'"),
        ({"a": list(range(20)), "b": list(range(20))}, "tasks.t.matrix", "400 combinations"),
    ],
)
def test_matrix_misuse(matrix: Any, path: str, words: str) -> None:
    job = {"params": {"one": 1}, "tasks": {"t": {"matrix": matrix, "steps": []}}}
    err = invalid(job)
    assert (err.path, words in err.problem) == (path, True), err.problem
    assert MAX_INSTANCES < 400


def test_an_unknown_matrix_name_is_refused_with_its_path() -> None:
    job = {"tasks": {"t": {"matrix": {"py": ["3.11"]}, "steps": [{"log": "${matrix.pyy}"}]}}}
    err = invalid(job)
    assert err.path == "tasks.t.steps[0].log"
    assert "unknown matrix name 'pyy' (this task's matrix has 'py')" in err.problem
    assert "matrix instance t[3.11]" in err.problem


def test_matrix_values_only_in_a_matrix_task() -> None:
    err = invalid({"tasks": {"t": {"steps": [{"log": "${matrix.py}"}]}}})
    assert err.path == "tasks.t.steps[0].log"
    assert "only the steps of a task with a 'matrix'" in err.problem
    assert invalid({"steps": [{"log": "x ${matrix.py}"}]}).path == "steps[0].log"


def test_matrix_values_are_data_and_typed() -> None:
    job = {"tasks": {"t": {"matrix": {"d": [1, "x"]}, "steps": [{"sleep": "${matrix.d}"}]}}}
    err = invalid(job)
    assert err.path == "tasks.t.steps[0].sleep"
    assert "in matrix instance t[x]" in err.problem


def test_a_template_sees_no_matrix_values() -> None:
    templates = {"show": {"steps": [{"log": "${matrix.py}"}]}}
    job = {"tasks": {"t": {"matrix": {"py": ["3"]}, "steps": [{"use": "show"}]}}}
    assert "only the steps of a task with a 'matrix'" in invalid(job, templates=templates).problem


def test_too_many_tasks_once_expanded() -> None:
    many = {f"t{i}": {"matrix": {"n": list(range(200))}, "steps": []} for i in range(6)}
    assert "once the matrices are expanded" in invalid({"tasks": many}).problem


def test_a_matrix_with_an_unresolved_parameter_checks_at_define_time() -> None:
    job = {"tasks": {"t": {"matrix": {"n": "${params.ns}"}, "steps": [{"sleep": "${matrix.n}"}]}}}
    spec = validate_job(job, allow_unresolved=True)
    assert isinstance(spec.body, Graph)
    assert [t.name for t in spec.body.tasks] == ["t[${params.ns}]"]


# -- env and cwd ----------------------------------------------------------------------------------


def test_env_and_cwd_are_inherited_nearest_wins_env_merges() -> None:
    job = {
        "env": {"A": "job", "B": "job"},
        "cwd": "/job",
        "tasks": {
            "t": {
                "env": {"B": "task", "C": "task"},
                "cwd": "/task",
                "steps": [{"run": "x"}, {"run": "y", "env": {"C": "step"}, "cwd": "/step"}],
            },
            "u": {"steps": [{"par": [{"run": ["z"]}]}]},
        },
    }
    tasks = tasks_of(job)
    t0, t1 = tasks["t"].body.steps
    assert isinstance(t0, Run)
    assert isinstance(t1, Run)
    assert (t0.env, t0.cwd) == ({"A": "job", "B": "task", "C": "task"}, "/task")
    assert (t1.env, t1.cwd) == ({"A": "job", "B": "task", "C": "step"}, "/step")
    par: Any = tasks["u"].body.steps[0]
    inner = par.steps[0]
    assert (inner.env, inner.cwd) == ({"A": "job", "B": "job"}, "/job")


def test_job_env_and_cwd_on_a_steps_job_and_in_templates() -> None:
    templates = {"t": {"env": {"T": "1"}, "steps": [{"run": "x"}]}}
    body = body_of(
        {"env": {"J": "${params.j}"}, "cwd": "/w", "params": {"j": "v"}, "steps": [{"use": "t"}]},
        templates=templates,
    )
    assert type(body).__name__ == "Seq"
    run = body.steps[0].job.body.steps[0]
    assert (run.env, run.cwd) == ({"J": "v", "T": "1"}, "/w")


def test_env_and_cwd_take_matrix_values() -> None:
    job = {"tasks": {"t": {"matrix": {"py": ["3.11"]}, "env": {"PY": "python${matrix.py}"},
                          "cwd": "/src/${matrix.py}", "steps": [{"run": "x"}]}}}  # fmt: skip
    run = first_run(tasks_of(job)["t[3.11]"])
    assert (run.env, run.cwd) == ({"PY": "python3.11"}, "/src/3.11")


@pytest.mark.parametrize(
    ("job", "path", "words"),
    [
        ({"env": [], "steps": []}, "env", "expected an object of strings"),
        ({"env": {"A=B": "x"}, "steps": []}, "env", "bad environment variable name"),
        ({"cwd": 3, "steps": []}, "cwd", "expected a string"),
        ({"tasks": {"t": {"env": {"A": 1}, "steps": []}}}, "tasks.t.env.A", "expected a string"),
        ({"tasks": {"t": {"cwd": "a\0b", "steps": []}}}, "tasks.t.cwd", "NUL"),
        ({"tasks": {"t": {"en": {}, "steps": []}}}, "tasks.t", "did you mean 'env'?"),
    ],
)
def test_env_and_cwd_misuse(job: Any, path: str, words: str) -> None:
    err = invalid(job)
    assert (err.path, words in err.problem) == (path, True), err.problem


# -- lists spliced into argv ----------------------------------------------------------------------


def test_a_list_standing_alone_is_spliced_into_argv() -> None:
    job = {
        "params": {"files": ["a.py", "b c.py"], "n": [1, 2.5], "none": []},
        "steps": [{"run": ["ruff", "${params.files}", "--", "${params.n}", "${params.none}"]}],
    }
    run = body_of(job).steps[0]
    assert run.argv == ("ruff", "a.py", "b c.py", "--", "1", "2.5")


@pytest.mark.parametrize(
    ("params", "path", "words"),
    [
        ({"x": [["a"]]}, "steps[0].run[1][0]", "expected a string or a number to splice, got list"),
        ({"x": [True]}, "steps[0].run[1][0]", "got boolean true"),
        ({"x": {"a": 1}}, "steps[0].run[1]", "expected a string, got object"),
        ({"x": False}, "steps[0].run[1]", "expected a string, got boolean false"),
    ],
)
def test_splice_misuse(params: Any, path: str, words: str) -> None:
    err = invalid({"steps": [{"run": ["p", "${params.x}"]}]}, params=params)
    assert (err.path, words in err.problem) == (path, True), err.problem


def test_an_argv_spliced_to_nothing_is_refused() -> None:
    err = invalid({"steps": [{"run": ["${params.x}"]}]}, params={"x": []})
    assert (err.path, "no arguments left" in err.problem) == ("steps[0].run", True)


def test_a_list_inside_longer_text_is_json_text() -> None:
    job = {"params": {"x": ["a"]}, "steps": [{"run": ["echo", "x=${params.x}"]}]}
    assert body_of(job).steps[0].argv == ("echo", 'x=["a"]')


# -- parse ----------------------------------------------------------------------------------------


def test_parse_modes() -> None:
    for mode in ("json", "text", "lines"):
        assert body_of({"run": "x", "parse": mode}).parse == mode
    err = invalid({"run": "x", "parse": "yaml"})
    problem = "expected one of 'json', 'text', 'lines'"
    assert (err.path, problem in err.problem) == ("steps[0].parse", True)
    assert "unknown key 'parse' for a sleep step" in invalid({"sleep": 1, "parse": "json"}).problem


# -- artifacts ------------------------------------------------------------------------------------


def test_artifacts_are_relative_globs() -> None:
    spec = validate_job({"artifacts": ["junit-*.xml", "out/**/*.html"], "steps": []})
    assert spec.artifacts == ("junit-*.xml", "out/**/*.html")
    assert validate_job({"artifacts": "a.txt", "steps": []}).artifacts == ("a.txt",)


@pytest.mark.parametrize(
    ("artifacts", "path", "words"),
    [
        (["/etc/passwd"], "artifacts[0]", "outside the workspace"),
        (["ok", "../x"], "artifacts[1]", "reaches outside the workspace"),
        (["a/../../x"], "artifacts[0]", "reaches outside the workspace"),
        ([""], "artifacts[0]", "must not be empty"),
        ([3], "artifacts[0]", "expected a string"),
        ({"a": 1}, "artifacts", "expected a list of glob patterns"),
    ],
)
def test_artifacts_misuse(artifacts: Any, path: str, words: str) -> None:
    err = invalid({"artifacts": artifacts, "steps": []})
    assert (err.path, words in err.problem) == (path, True), err.problem


# -- if switches ----------------------------------------------------------------------------------


def test_if_takes_a_boolean_parameter() -> None:
    job = {"params": {"lint": True}, "tasks": {"lint": {"if": "${params.lint}", "steps": []}}}
    assert tasks_of(job)["lint"].when == "success"
    assert tasks_of(job, params={"lint": False})["lint"].when == "never"
    err = invalid(job, params={"lint": "no"})
    assert (err.path, "got 'no'" in err.problem) == ("tasks.lint.if", True)
    unresolved = {"tasks": {"lint": {"if": "${params.lint}", "steps": []}}}
    assert validate_job(unresolved, allow_unresolved=True)


# -- template arguments ---------------------------------------------------------------------------


TEMPLATES = {
    "test": {
        "params": {"python": "python3"},
        "steps": [{"run": ["${params.python}", "-m", "pytest", "${params.paths}"]}],
    }
}


def test_a_use_refuses_arguments_the_template_never_reads() -> None:
    job = {"steps": [{"use": "test", "with": {"paths": ["t"], "pyhton": "py"}}]}
    err = invalid(job, templates=TEMPLATES)
    assert err.path == "steps[0].with.pyhton"
    assert err.problem == "template 'test' has no parameter 'pyhton' (did you mean 'python'?)"
    ok = {"steps": [{"use": "test", "with": {"paths": ["t"], "python": "py"}}]}
    body = body_of(ok, templates=TEMPLATES)
    assert body.steps[0].job.body.steps[0].argv == ("py", "-m", "pytest", "t")


def test_define_time_checks_arguments_too() -> None:
    with pytest.raises(InvalidJob) as info:
        validate_template({"steps": [{"use": "test", "with": {"x": 1}}]}, TEMPLATES)
    assert info.value.path == "steps[0].with.x"


def test_parameters_of_a_template() -> None:
    assert parameters_of(TEMPLATES["test"]) == {"python", "paths"}
    assert parameters_of({"steps": [{"log": "$${params.not_one} ${params.one}"}]}) == {"one"}


def test_the_pipeline_in_docs_graphs_validates() -> None:
    """The example of docs/graphs.md's pipeline section is a valid job as written."""
    import json
    import re
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "graphs.md").read_text()
    section = text[text.index("## Pipelines") :]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    tasks = tasks_of(json.loads(block.group(1)))
    assert list(tasks) == ["files", "lint", "test[1]", "test[2]", "test[3]", "report"]
    assert tasks["report"].needs == ("lint", "test[1]", "test[2]", "test[3]")
