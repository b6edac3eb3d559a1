"""Jobs as graphs: validation of ``tasks``, running them, data flow, the workspace.

Timing tests run on trio's mock clock (``autojump_clock``), so "ran concurrently" is an exact
elapsed time. Tests that start real processes (workspace, ``run`` outputs) use the real clock:
the mock clock jumps while a real child runs (field notes).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from stepline import Config, Executor, InvalidJob
from stepline.engine._tasks import CLEANUP_GRACE
from stepline.spec._graph import MAX_TASKS, find_cycle
from stepline.spec._model import Deferred, Graph, Seq, Sleep
from stepline.spec._validate import validate_job

from ..conftest import MemoryOutbox, running_executor
from ..proc_tools import state

Event = dict[str, Any]


def invalid(job: object, **kwargs: Any) -> InvalidJob:
    with pytest.raises(InvalidJob) as info:
        validate_job(job, **kwargs)
    return info.value


def graph(**tasks: Any) -> dict[str, Any]:
    """A job of named tasks: ``graph(a={"steps": [...]}, b={...})``."""
    return {"tasks": tasks}


def task(*steps: Any, needs: Any = None, when: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": list(steps)}
    if needs is not None:
        out["needs"] = needs
    if when is not None:
        out["if"] = when
    return out


async def run_job(job: Any, **config: Any) -> tuple[Event, list[Event]]:
    """Run one job; its ``finished`` event and its ``task`` events."""
    async with running_executor(**config) as (ex, out):
        record = await ex.submit(job)
        finished = await out.finished(record.id)
    return finished, task_events(out, record.id)


def task_events(out: MemoryOutbox, job_id: str) -> list[Event]:
    return [e for e in out.events if e["event"] == "task" and e["job"] == job_id]


def statuses(events: list[Event]) -> dict[str, list[str]]:
    """Each task's statuses, in order."""
    out: dict[str, list[str]] = {}
    for ev in events:
        out.setdefault(ev["task"], []).append(ev["status"])
    return out


# -- validation -----------------------------------------------------------------------------------

OK = {"steps": [{"value": 1}]}


@pytest.mark.parametrize(
    ("job", "path", "words"),
    [
        ({"tasks": {}}, "tasks", "must not be empty"),
        ({"tasks": []}, "tasks", "expected an object of named tasks, got a list"),
        ({"tasks": {"a": OK}, "steps": []}, "", "'steps' or 'tasks', not both"),
        ({"tasks": {"a": []}}, "tasks.a", "a task must be an object with 'steps', got a list"),
        ({"tasks": {"a": {}}}, "tasks.a", "missing 'steps'"),
        ({"tasks": {"a": {"steps": [], "need": []}}}, "tasks.a", "did you mean 'needs'?"),
        ({"tasks": {"a": {"run": "x"}}}, "tasks.a", "unknown key 'run' for a task"),
        ({"tasks": {"a b": OK}}, "tasks", "bad task name 'a b'"),
        ({"tasks": {"1a": OK}}, "tasks", "bad task name '1a'"),
        (graph(a=task(needs=["b"])), "tasks.a.needs[0]", "unknown task 'b'"),
        (graph(fetch=OK, a=task(needs=["fetc"])), "tasks.a.needs[0]", "did you mean 'fetch'?"),
        (graph(a=task(needs=["a"])), "tasks.a.needs[0]", "a task cannot need itself"),
        (graph(a=OK, b=task(needs=["a", "a"])), "tasks.b.needs[1]", "'a' is listed twice"),
        (graph(a=task(needs=3)), "tasks.a.needs", "expected a list of task names, got a number"),
        (graph(a=task(needs=[1])), "tasks.a.needs[0]", "expected a task name, got a number"),
        (graph(a=task(when="sometimes")), "tasks.a.if", "got 'sometimes'"),
        (graph(a={"steps": [], "if": 1}), "tasks.a.if", "got a number"),
        (graph(a=task(when="failure")), "tasks.a.if", "'needs' is empty"),
        (graph(a=task({"sleep": -1})), "tasks.a.steps[0].sleep", "must not be negative"),
        (graph(a=task(1)), "tasks.a.steps[0]", "a step must be an object"),
        ({"tasks": {"a": OK}, "limit": 0}, "limit", "must be at least 1"),
        ({"steps": [], "limit": 2}, "limit", "no 'tasks'"),
        ({"steps": [], "keep_workspace": "yes"}, "keep_workspace", "expected true or false"),
    ],
)
def test_structure_errors_name_the_path(job: Any, path: str, words: str) -> None:
    err = invalid(job)
    assert err.path == path
    assert words in err.problem


def test_a_cycle_is_named_in_run_order() -> None:
    err = invalid(graph(a=task(needs=["b"]), b=task(needs=["a"])))
    assert str(err) == "tasks: cycle a -> b -> a"
    err = invalid(graph(x=OK, a=task(needs=["c"]), b=task(needs=["a"]), c=task(needs=["b"])))
    assert str(err) == "tasks: cycle a -> b -> c -> a"  # b needs a, c needs b, a needs c


def test_find_cycle_is_iterative_and_exact() -> None:
    chain = {f"t{i}": (f"t{i + 1}",) for i in range(5000)} | {"t5000": ()}
    assert find_cycle(chain) is None  # 5000 deep: no recursion limit
    chain["t5000"] = ("t0",)
    cycle = find_cycle(chain)
    assert cycle is not None
    assert (len(cycle), cycle[0], cycle[-1]) == (5002, "t0", "t0")


@given(
    st.dictionaries(
        st.sampled_from("abcdefgh"),
        st.lists(st.sampled_from("abcdefgh"), unique=True, max_size=4),
        min_size=1,
    )
)
def test_find_cycle_agrees_with_kahn(raw: dict[str, list[str]]) -> None:
    needs = {name: tuple(n for n in deps if n in raw) for name, deps in raw.items()}
    remaining = dict(needs)
    while True:  # Kahn: repeatedly drop tasks whose needs are all gone
        ready = [name for name, deps in remaining.items() if not set(deps) & set(remaining)]
        if not ready:
            break
        for name in ready:
            del remaining[name]
    cycle = find_cycle(needs)
    assert (cycle is None) == (not remaining)
    if cycle is not None:
        assert cycle[0] == cycle[-1]
        for before, after in itertools.pairwise(cycle):
            assert before in needs[after]  # run order: after needs before


def test_too_many_tasks() -> None:
    tasks = {f"t{i}": OK for i in range(MAX_TASKS + 1)}
    assert invalid({"tasks": tasks}).problem == f"more than {MAX_TASKS} tasks"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("${tasks.b.output}", "task 'b' is not upstream of 'c'"),
        ("${tasks.zz.output}", "unknown task 'zz'"),
        ("${tasks.c.output}", "a task cannot refer to its own output"),
        ("${tasks.a}", "bad reference ${tasks.a}: expected ${tasks.NAME.output}"),
        ("x ${tasks.a.outputs} y", "bad reference ${tasks.a.outputs}"),
        ("${tasks.a.output.}", "bad reference"),
        ("${job.nope}", "unknown job field 'nope' in ${job.nope}"),
    ],
)
def test_reference_errors_at_submit(text: str, words: str) -> None:
    job = graph(a=OK, b=OK, c=task({"log": text}, needs=["a"]))
    err = invalid(job)
    assert err.path == "tasks.c.steps[0].log"
    assert words in err.problem


def test_upstream_is_transitive() -> None:
    job = graph(
        a=OK, b=task({"value": 1}, needs="a"), c=task({"value": "${tasks.a.output}"}, needs=["b"])
    )
    validate_job(job)


def test_task_references_outside_tasks_are_refused() -> None:
    err = invalid({"steps": [{"log": "${tasks.a.output}"}]})
    assert err.path == "steps[0].log"
    assert "only the steps of a task can refer to task outputs" in err.problem
    assert invalid({"tasks": {"a": OK}, "name": "${tasks.a.output}"}).path == "name"


@pytest.mark.parametrize(
    ("step", "path", "words"),
    [
        ({"run": ["x"], "env": "${tasks.a.output}"}, "tasks.b.steps[0].env", "an object"),
        ({"use": "t", "with": "${tasks.a.output}"}, "tasks.b.steps[0].with", "an object"),
        ({"use": "${tasks.a.output}"}, "tasks.b.steps[0].use", "unknown template"),
        ({"sleep": 1, "retry": "${tasks.a.output}"}, "tasks.b.steps[0].retry", "an object"),
        ("${tasks.a.output}", "tasks.b.steps[0]", "a step must be an object"),
    ],
)
def test_a_reference_supplies_data_never_structure(step: Any, path: str, words: str) -> None:
    err = invalid(graph(a=OK, b=task(step, needs=["a"])), templates={"t": OK})
    assert err.path == path
    assert words in err.problem


def test_typed_fields_take_a_whole_reference_as_a_placeholder() -> None:
    job = graph(
        a=OK,
        b=task({"sleep": "${tasks.a.output}"}, {"value": 1}, needs=["a"]),
        c=task({"sleep": 1}, needs=["a"]),
    )
    body = validate_job(job).body
    assert isinstance(body, Graph)
    a, b, c = body.tasks
    assert a.later is None  # no reference: nothing to do at run time
    assert c.later is None
    assert b.later is not None
    placeholder = "${tasks.a.output}"  # a str where a float goes: this spec is never run
    assert b.body.steps[0] == Sleep(path="tasks.b.steps[0]", seconds=placeholder)  # type: ignore[arg-type]
    assert (b.needs, b.when, b.path) == (("a",), "success", "tasks.b")


def test_a_steps_job_referring_to_the_job_is_deferred() -> None:
    spec = validate_job({"steps": [{"log": "${job.id}"}]})
    assert isinstance(spec.body, Deferred)
    assert isinstance(spec.body.body, Seq)
    assert isinstance(validate_job({"steps": [{"log": "$${job.id}"}]}).body, Seq)  # escaped


def test_define_checks_graph_templates() -> None:
    ex = Executor(Config(), MemoryOutbox())
    ex.define(
        "g",
        graph(a=task({"sleep": "${params.d}"}), b=task({"value": "${tasks.a.output}"}, needs="a")),
    )
    with pytest.raises(InvalidJob, match=r"tasks: cycle a -> b -> a"):
        ex.define("bad", graph(a=task(needs="b"), b=task(needs="a")))
    with pytest.raises(InvalidJob, match="not upstream"):
        ex.define("bad", graph(a=OK, b=task({"value": "${tasks.a.output}"})))


def test_run_policy_sees_the_steps_of_tasks() -> None:
    ex = Executor(Config(allow_run="echo"), MemoryOutbox())
    with pytest.raises(InvalidJob) as info:
        ex.validate(graph(a=task({"run": ["rm", "-rf", "x"]})), None, None)
    assert info.value.path == "tasks.a.steps[0].run"
    job = graph(a=OK, b=task({"run": ["${tasks.a.output}"]}, needs="a"))  # program from data
    with pytest.raises(InvalidJob, match="not allowed"):
        ex.validate(job, None, None)


# -- running: order, concurrency, outcomes --------------------------------------------------------


async def test_diamond_runs_branches_concurrently(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        a=task({"sleep": 1}, {"value": 1}),
        b=task({"sleep": 2}, {"value": "${tasks.a.output}"}, needs=["a"]),
        c=task({"sleep": 3}, {"value": "c${tasks.a.output}"}, needs=["a"]),
        d=task({"value": {"b": "${tasks.b.output}", "c": "${tasks.c.output}"}}, needs=["b", "c"]),
    )
    finished, events = await run_job(job)
    assert finished["state"] == "succeeded"
    assert finished["output"] == {"a": 1, "b": 1, "c": "c1", "d": {"b": 1, "c": "c1"}}
    assert finished["elapsed"] == pytest.approx(1 + 3)  # b and c overlapped
    order = [(e["task"], e["status"]) for e in events]
    assert order[:2] == [("a", "started"), ("a", "succeeded")]
    assert set(order[2:4]) == {("b", "started"), ("c", "started")}  # woken together
    assert order[4:] == [
        ("b", "succeeded"),
        ("c", "succeeded"),
        ("d", "started"),
        ("d", "succeeded"),
    ]
    assert set(events[0]) == {"event", "ts", "job", "task", "status"}


@pytest.mark.parametrize(("limit", "elapsed"), [(None, 1), (2, 2), (1, 4)])
async def test_limit_caps_tasks_running_at_once(
    autojump_clock: trio.abc.Clock, limit: int | None, elapsed: float
) -> None:
    job: dict[str, Any] = graph(**{name: task({"sleep": 1}) for name in "abcd"})
    if limit is not None:
        job["limit"] = limit
    finished, _ = await run_job(job)
    assert finished["elapsed"] == pytest.approx(elapsed)


async def test_a_waiting_task_holds_no_slot(autojump_clock: trio.abc.Clock) -> None:
    # b is listed first and waits for a; with limit 1 it must not keep a from running.
    job = {"limit": 1, "tasks": {"b": task({"sleep": 1}, needs="a"), "a": task({"sleep": 1})}}
    with trio.fail_after(60):
        finished, _ = await run_job(job)
    assert finished["elapsed"] == pytest.approx(2)


async def test_a_graph_job_occupies_one_worker(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(workers=1) as (ex, out):
        start = trio.current_time()
        first = await ex.submit(graph(a=task({"sleep": 1}), b=task({"sleep": 1})))
        second = await ex.submit({"sleep": 1})
        await out.finished(first.id)
        one = trio.current_time() - start
        await out.finished(second.id)
        two = trio.current_time() - start
    assert one == pytest.approx(1)  # its two tasks ran side by side
    assert two == pytest.approx(2)  # then the second job had the worker


async def test_skips_propagate_and_independent_tasks_go_on(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        a=task({"sleep": 1}, {"fail": "boom", "name": "explode"}),
        b=task({"value": 1}, needs="a"),
        c=task({"value": 1}, needs="b"),
        d=task({"value": 1}, needs=["c", "x"]),
        x=task({"sleep": 2}, {"value": "x"}),
    )
    finished, events = await run_job(job)
    assert finished["state"] == "failed"
    assert finished["error"] == {
        "type": "fail",
        "message": "boom",
        "step": "tasks.a.steps[1]",
        "name": "explode",
        "task": "a",
    }
    assert finished["elapsed"] == pytest.approx(2)  # x was not cancelled by a's failure
    assert statuses(events) == {
        "a": ["started", "failed"],
        "b": ["skipped"],
        "c": ["skipped"],
        "d": ["skipped"],
        "x": ["started", "succeeded"],
    }
    failed = next(e for e in events if e["status"] == "failed")
    assert failed["error"]["step"] == "tasks.a.steps[1]"


async def test_failure_and_always_after_a_failure(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        a=task({"fail": "boom"}),
        handle=task({"value": "handled"}, needs="a", when="failure"),
        after=task({"value": "after"}, needs="handle"),
        cleanup=task(
            {"log": "cleaning"}, {"value": "${tasks.a.output}"}, needs=["a", "after"], when="always"
        ),
        ok=task({"value": 1}, needs="a"),
    )
    finished, events = await run_job(job)
    assert finished["state"] == "failed"  # a failure handled is still a failure of the job
    assert finished["error"]["task"] == "a"
    assert statuses(events) == {
        "a": ["started", "failed"],
        "handle": ["started", "succeeded"],
        "ok": ["skipped"],
        "after": ["started", "succeeded"],
        "cleanup": ["started", "succeeded"],
    }


async def test_failure_tasks_skip_when_nothing_failed(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        a=task({"value": 1}),
        handle=task({"value": 2}, needs="a", when="failure"),
        after=task({"value": 3}, needs="handle", when="failure"),
    )
    finished, events = await run_job(job)
    assert finished["state"] == "succeeded"
    assert finished["output"] == {"a": 1, "handle": None, "after": None}  # skipped: null
    assert statuses(events)["handle"] == ["skipped"]
    assert statuses(events)["after"] == ["skipped"]  # handle was skipped, not failed


async def test_always_cleanup_runs_after_a_cancel(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        work=task({"sleep": 100}),
        waiting=task({"value": 1}, needs="work"),
        cleanup=task({"sleep": 2}, {"log": "cleaned ${job.id}"}, needs="work", when="always"),
    )
    async with running_executor() as (ex, out):
        record = await ex.submit(job)
        await trio.sleep(5)
        ex.cancel(record.id)
        finished = await out.finished(record.id)
    assert finished["state"] == "cancelled"
    assert finished["elapsed"] == pytest.approx(5 + 2)  # the clean-up ran to its end
    assert finished["error"]["step"] == "tasks.work.steps[0]"  # what the cancel interrupted
    assert statuses(task_events(out, record.id)) == {
        "work": ["started", "cancelled"],
        "waiting": ["skipped"],
        "cleanup": ["started", "succeeded"],
    }
    logs = [e for e in out.events if e["event"] == "log"]
    assert logs[0]["message"] == f"cleaned {record.id}"
    assert out.events.index(logs[0]) < out.events.index(finished)


async def test_always_cleanup_runs_after_a_job_timeout(autojump_clock: trio.abc.Clock) -> None:
    job = {
        "timeout": 5,
        **graph(work=task({"sleep": 100}), cleanup=task({"sleep": 1}, needs="work", when="always")),
    }
    finished, events = await run_job(job)
    assert finished["state"] == "timed_out"
    assert finished["elapsed"] == pytest.approx(6)
    assert statuses(events)["cleanup"] == ["started", "succeeded"]


async def test_cleanup_after_a_cancel_has_a_grace(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        work=task({"sleep": 100}), cleanup=task({"sleep": 1000}, needs="work", when="always")
    )
    async with running_executor() as (ex, out):
        record = await ex.submit(job)
        await trio.sleep(1)
        ex.cancel(record.id)
        finished = await out.finished(record.id)
    assert finished["state"] == "cancelled"
    assert finished["elapsed"] == pytest.approx(1 + CLEANUP_GRACE)
    assert statuses(task_events(out, record.id))["cleanup"] == ["started", "cancelled"]


async def test_a_hard_stop_ends_cleanups_at_once(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        work=task({"sleep": 100}), cleanup=task({"sleep": 1000}, needs="work", when="always")
    )
    async with running_executor() as (ex, out):
        record = await ex.submit(job)
        await trio.sleep(1)
        ex.shutdown("cancel")
        await trio.sleep(2)
        ex.kill()  # the second SIGINT
        finished = await out.finished(record.id)
    assert finished["elapsed"] == pytest.approx(3)


async def test_a_template_graph_is_a_section(autojump_clock: trio.abc.Clock) -> None:
    etl = {
        "params": {"n": 1},
        "tasks": {
            "x": task({"sleep": "${params.n}"}, {"value": "${params.n}"}),
            "y": task({"value": "${tasks.x.output}-y ${job.id}"}, needs="x"),
        },
    }
    async with running_executor() as (ex, out):
        ex.define("etl", etl)
        plain = await ex.submit(template="etl", params={"n": 2})
        inside = await ex.submit({"steps": [{"value": 0}, {"use": "etl", "with": {"n": 3}}]})
        nested = await ex.submit(
            graph(
                a=task({"value": 4}),
                b=task({"use": "etl", "with": {"n": "${tasks.a.output}"}}, needs="a"),
            )
        )
        results = [await out.finished(job.id) for job in (plain, inside, nested)]
    assert results[0]["output"] == {"x": 2, "y": f"2-y {plain.id}"}
    assert results[1]["output"] == {"x": 3, "y": f"3-y {inside.id}"}
    assert results[2]["output"] == {"a": 4, "b": {"x": 4, "y": f"4-y {nested.id}"}}
    inner = task_events(out, inside.id)
    assert {e.get("graph") for e in inner} == {"steps[1].use"}
    outer = [e for e in task_events(out, nested.id) if "graph" not in e]
    assert {e["task"] for e in outer} == {"a", "b"}


async def test_templates_are_snapshotted_at_submit(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        ex.define("t", {"steps": [{"value": "old ${params.v}"}]})
        job = graph(
            a=task({"sleep": 1}, {"value": "v"}),
            b=task({"use": "t", "with": {"v": "${tasks.a.output}"}}, needs="a"),
        )
        record = await ex.submit(job)
        ex.define("t", {"steps": [{"value": "new ${params.v}"}]})
        finished = await out.finished(record.id)
    assert finished["output"]["b"] == "old v"


# -- data flow ------------------------------------------------------------------------------------


async def test_references_give_whole_values_and_text(autojump_clock: trio.abc.Clock) -> None:
    data = {"n": 2, "s": "x", "l": [10, 20], "o": {"k": None}}
    job = graph(
        a=task({"value": data}),
        whole=task({"value": "${tasks.a.output}"}, needs="a"),
        text=task(
            {"value": "n=${tasks.a.output.n} l=${tasks.a.output.l} s=${tasks.a.output.s}"},
            needs="a",
        ),
        deep=task({"value": ["${tasks.a.output.l[1]}", "${tasks.a.output.o.k}"]}, needs="a"),
        typed=task(
            {"sleep": "${tasks.a.output.n}", "timeout": "${tasks.a.output.l[0]}"},
            {"value": "$${tasks.a.output}"},
            needs="a",
        ),
    )
    finished, _ = await run_job(job)
    assert finished["state"] == "succeeded", finished
    out = finished["output"]
    assert out["whole"] == data
    assert out["text"] == "n=2 l=[10,20] s=x"  # non-strings inside text are JSON
    assert out["deep"] == [20, None]
    assert out["typed"] == "${tasks.a.output}"  # $${ is a literal ${
    assert finished["elapsed"] == pytest.approx(2)  # typed slept n = 2 seconds


async def test_outputs_are_data_never_substituted_again(autojump_clock: trio.abc.Clock) -> None:
    job = {
        "params": {"secret": "S"},
        **graph(
            a=task({"value": "$${params.secret} $${job.id} $${tasks.a.output}"}),
            b=task({"log": "${tasks.a.output}"}, {"value": ["${tasks.a.output}"]}, needs="a"),
        ),
    }
    finished, _ = await run_job(job)
    text = "${params.secret} ${job.id} ${tasks.a.output}"
    assert finished["output"] == {"a": text, "b": [text]}


async def test_output_of_a_task_that_did_not_succeed_is_null(
    autojump_clock: trio.abc.Clock,
) -> None:
    job = graph(
        a=task({"fail": "x"}), c=task({"value": ["${tasks.a.output}"]}, needs="a", when="always")
    )
    async with running_executor() as (ex, out):
        record = await ex.submit(job)
        await out.finished(record.id)
    done = [e for e in task_events(out, record.id) if e["task"] == "c"]
    assert done[-1]["status"] == "succeeded"


@pytest.mark.parametrize(
    ("step", "words"),
    [
        ({"value": "${tasks.a.output.missing}"}, "no key 'missing' in the output of 'a'"),
        ({"value": "${tasks.a.output.l[5]}"}, "index 5 is out of range (list of 2)"),
        ({"value": "${tasks.a.output.n.x}"}, ".x needs an object, got a number"),
        ({"value": "${tasks.a.output.n[0]}"}, "[0] needs a list, got a number"),
        ({"sleep": "${tasks.a.output.l}"}, "tasks.b.steps[1].sleep: expected a number, got list"),
        ({"sleep": "${tasks.a.output.neg}"}, "must not be negative"),
    ],
)
async def test_a_bad_reference_fails_its_task_at_run_time(
    autojump_clock: trio.abc.Clock, step: Any, words: str
) -> None:
    job = graph(
        a=task({"value": {"n": 1, "l": [1, 2], "neg": -1}}), b=task({"value": 0}, step, needs="a")
    )
    finished, _ = await run_job(job)
    assert finished["state"] == "failed"
    error = finished["error"]
    assert (error["type"], error["step"], error["task"]) == ("invalid_reference", "tasks.b", "b")
    assert words in error["message"]


async def test_job_id_in_a_steps_job(autojump_clock: trio.abc.Clock) -> None:
    finished, _ = await run_job({"steps": [{"value": {"id": "${job.id}", "t": "j=${job.id}"}}]})
    assert finished["output"] == {"id": finished["job"], "t": f"j={finished['job']}"}


async def test_job_refs_inside_a_steps_template(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        ex.define("who", {"steps": [{"value": "I am ${job.id}"}]})
        record = await ex.submit(graph(a=task({"use": "who"})))
        finished = await out.finished(record.id)
    assert finished["output"] == {"a": f"I am {record.id}"}


# -- the workspace (real processes: real clock) ---------------------------------------------------


async def test_run_steps_share_the_workspace_and_it_is_removed() -> None:
    job = graph(
        write=task({"run": "pwd; echo hello > data.txt"}),
        read=task({"run": ["cat", "data.txt"]}, {"value": "${job.workspace}"}, needs="write"),
        explicit=task({"run": "pwd", "cwd": "/"}),
    )
    finished, _ = await run_job(job)
    assert finished["state"] == "succeeded", finished
    out = finished["output"]
    workspace = out["read"]
    assert out["write"]["stdout"] == workspace + "\n"
    assert os.path.basename(workspace).startswith("stepline-")
    parent = os.path.dirname(workspace)  # the executor's own, removed when it closes
    assert os.path.basename(parent).startswith("stepline-server-")
    assert os.path.dirname(parent) == tempfile.gettempdir()
    assert out["explicit"]["stdout"] == "/\n"  # an explicit cwd wins
    assert not os.path.exists(workspace)  # removed before `finished`


async def test_data_flows_from_a_run_step(autojump_clock: trio.abc.Clock) -> None:
    job = graph(
        a=task({"value": {"exit": 0, "stdout": "hello\n"}}),
        b=task({"value": "got ${tasks.a.output.stdout}"}, needs="a"),
    )
    finished, _ = await run_job(job)
    assert finished["output"]["b"] == "got hello\n"


async def test_real_run_output_flows_into_argv() -> None:
    job = graph(
        a=task({"run": ["printf", "%s", "a b"]}),
        b=task({"run": ["printf", "[%s]", "${tasks.a.output.stdout}"]}, needs="a"),
    )
    finished, _ = await run_job(job)
    assert finished["output"]["b"]["stdout"] == "[a b]"  # one argument, not split


async def test_workspace_is_removed_after_a_cancel() -> None:
    job = {"steps": [{"log": "${job.workspace}"}, {"run": "touch f; mkdir -p d/e; sleep 30"}]}
    async with running_executor() as (ex, out):
        record = await ex.submit(job)
        log = await out.wait_for(lambda e: e["event"] == "log")
        await trio.sleep(0.3)
        assert os.path.isdir(log["message"])
        ex.cancel(record.id)
        finished = await out.finished(record.id)
    assert finished["state"] == "cancelled"
    assert not os.path.exists(log["message"])


async def test_keep_workspace() -> None:
    job = {
        "keep_workspace": True,
        "steps": [{"run": "echo kept > f"}, {"value": "${job.workspace}"}],
    }
    async with running_executor() as (ex, out):
        record = await ex.submit(job)
        finished = await out.finished(record.id)
    path = finished["output"]
    try:
        assert Path(path, "f").read_text() == "kept\n"
        announced = [e for e in out.events if e["event"] == "workspace"]
        assert announced == [
            {"event": "workspace", "ts": announced[0]["ts"], "job": record.id, "path": path}
        ]
    finally:
        shutil.rmtree(path)


async def test_workspace_removal_survives_read_only_dirs() -> None:
    job = {
        "steps": [
            {"run": "mkdir -p ro/sub && touch ro/sub/f && chmod 500 ro/sub ro"},
            {"value": "${job.workspace}"},
        ]
    }
    finished, _ = await run_job(job)
    assert not os.path.exists(finished["output"])


# -- the workspace pool: empty directories are reused, anything else is removed -------------------

PWD = {"steps": [{"run": "pwd"}]}


async def run_in_turn(jobs: list[Any], **config: Any) -> tuple[list[str], list[Event]]:
    """Run ``jobs`` one after another on one executor; each one's workspace (its last ``pwd``)."""
    paths: list[str] = []
    async with running_executor(workers=1, **config) as (ex, out):
        for job in jobs:
            finished = await out.finished((await ex.submit(job)).id)
            assert finished["state"] == "succeeded", finished
            paths.append(finished["output"]["stdout"].strip())
    return paths, out.events


async def test_an_empty_workspace_is_reused_and_removed_at_shutdown() -> None:
    paths, _ = await run_in_turn([PWD, PWD, PWD])
    assert paths[0] == paths[1] == paths[2]
    assert not os.path.exists(paths[0])  # the pool is emptied when the executor closes


async def test_a_workspace_with_files_left_is_removed_not_reused() -> None:
    litter = {"steps": [{"run": "touch left-behind"}, {"run": "pwd"}]}
    paths, _ = await run_in_turn([litter, PWD])
    assert paths[0] != paths[1]
    assert not os.path.exists(paths[0])


@pytest.mark.parametrize(
    "change",
    ["touch left-behind", "mkdir sub", "chmod 755 .", "ln -s /etc link"],
    ids=["file", "dir", "mode", "symlink"],
)
async def test_a_reused_workspace_is_checked_again_after_a_change(change: str) -> None:
    # The first job leaves its directory fit (its inotify watch then spares later checks,
    # engine/_dir_watch.py); the second changes that same directory: it is not reused.
    paths, _ = await run_in_turn([PWD, {"steps": [{"run": f"{change} && pwd"}]}, PWD, PWD])
    assert paths[0] == paths[1]
    assert paths[2] != paths[1]
    assert not os.path.exists(paths[1])
    assert paths[3] == paths[2]  # the new one, fit, is reused


async def test_a_background_process_dies_with_its_step_before_the_workspace_is_reused() -> None:
    # the shell exits at once; its `sleep` is stopped when the step ends, so the directory is free
    lingering = {"steps": [{"run": "sleep 30 >/dev/null 2>&1 & echo $!; pwd"}]}
    async with running_executor(workers=1) as (ex, out):
        first = await out.finished((await ex.submit(lingering)).id)
        sleeper = int(first["output"]["stdout"].split()[0])
        assert state(sleeper) in (None, "Z"), "the step's background process outlived it"
        second = await out.finished((await ex.submit(PWD)).id)
    assert second["state"] == "succeeded"


async def test_a_workspace_whose_mode_changed_is_not_reused() -> None:
    opened = {"steps": [{"run": "chmod 755 . && pwd"}]}
    paths, _ = await run_in_turn([opened, PWD])
    assert paths[0] != paths[1]
    assert not os.path.exists(paths[0])


async def test_a_kept_workspace_is_never_pooled() -> None:
    kept = {"keep_workspace": True, "steps": [{"run": "pwd"}]}
    paths, _ = await run_in_turn([PWD, kept, PWD])
    try:
        assert paths[1] not in (paths[0], paths[2])  # not taken from the pool, not given back
        assert paths[0] == paths[2]
        assert os.path.isdir(paths[1])
    finally:
        os.rmdir(paths[1])


async def test_no_workspace_without_a_need(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    real = tempfile.mkdtemp

    def counting(*args: Any, **kwargs: Any) -> str:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("stepline.engine._workspace.tempfile.mkdtemp", counting)
    await run_job({"value": 1})
    await run_job(graph(a=task({"sleep": 1}), b=task({"value": "${job.id}"}, needs="a")))
    assert made == []
    await run_job({"steps": [{"value": "${job.workspace}"}, {"value": "${job.workspace}"}]})
    assert len(made) == 2  # created once, on first use (with the executor's parent first)
    assert not os.path.exists(made[1])
