"""The graph forms at run time: matrix instances, ``if`` switches, ``parse``, inherited ``env``
and ``cwd`` (on a :class:`FakeRunner` and trio's mock clock, so timing is exact), and
``artifacts`` (real files in a real workspace, on the real clock)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from stepline import Config, Executor
from stepline.runners._base import Launch, ProcessResult
from stepline.runners._fake import FakeRunner

from ..conftest import MemoryOutbox, running_executor

Event = dict[str, Any]


@asynccontextmanager
async def fake_executor(
    handler: Any, **config: Any
) -> AsyncIterator[tuple[Executor, MemoryOutbox, FakeRunner]]:
    outbox = MemoryOutbox()
    runner = FakeRunner(handler)
    executor = Executor(Config(**config), outbox, runner=runner)
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        yield executor, outbox, runner
        executor.shutdown("drain")


def echo_argv(launch: Launch) -> ProcessResult:
    """Each "process" sleeps as long as its last argument says and prints its argv."""
    return ProcessResult(0, " ".join(launch.argv) + "\n", "", False)


async def sleepy(launch: Launch) -> ProcessResult:
    await trio.sleep(float(launch.argv[-1]))
    return echo_argv(launch)


async def run(job: Any, handler: Any = echo_argv, **config: Any) -> tuple[Event, list[Event], Any]:
    async with fake_executor(handler, **config) as (ex, out, runner):
        record = await ex.submit(job)
        finished = await out.finished(record.id)
    tasks = [e for e in out.events if e["event"] == "task"]
    return finished, tasks, runner


# -- matrix ---------------------------------------------------------------------------------------


async def test_matrix_instances_run_at_once_and_needs_waits_for_all(
    autojump_clock: trio.abc.Clock,
) -> None:
    job = {
        "cwd": "/",  # no workspace: its mkdir runs in a thread, and the mock clock would jump
        "tasks": {
            "test": {"matrix": {"d": [3, 1, 2]}, "steps": [{"run": ["t", "${matrix.d}"]}]},
            "merge": {"needs": "test", "steps": [{"value": "${tasks.test.output}"}]},
        },
    }
    start = trio.current_time()
    finished, tasks, _ = await run(job, sleepy)
    assert finished["state"] == "succeeded"
    assert finished["elapsed"] == 3  # in parallel: the slowest instance
    outputs = [{"exit": 0, "stdout": f"t {d}\n", "stderr": ""} for d in (3, 1, 2)]
    assert finished["output"] == {"test": outputs, "merge": outputs}  # matrix order
    assert trio.current_time() - start == 3
    started = [e for e in tasks if e["status"] == "started"]
    assert sorted(e["task"] for e in started[:3]) == ["test[1]", "test[2]", "test[3]"]
    assert {e["task"]: e["matrix"] for e in started[:3]}["test[3]"] == {"d": 3}
    done = [e["task"] for e in tasks if e["status"] == "succeeded"]
    assert done == ["test[1]", "test[2]", "test[3]", "merge"]


async def test_limit_bounds_matrix_instances(autojump_clock: trio.abc.Clock) -> None:
    job = {"limit": 2, "cwd": "/", "tasks": {"t": {"matrix": {"i": [1, 2, 3, 4, 5]},
                                       "steps": [{"run": ["x", "${matrix.i}", "1"]}]}}}  # fmt: skip
    finished, _, runner = await run(job, sleepy)
    assert finished["elapsed"] == 3  # five one-second instances, two at a time
    assert len(runner.launches) == 5


async def test_a_failed_instance_skips_dependants_and_fails_the_job(
    autojump_clock: trio.abc.Clock,
) -> None:
    def handler(launch: Launch) -> ProcessResult:
        return ProcessResult(1 if launch.argv[1] == "2" else 0, "", "boom", False)

    job = {
        "tasks": {
            "test": {"matrix": {"s": [1, 2, 3]}, "steps": [{"run": ["t", "${matrix.s}"]}]},
            "merge": {"needs": "test", "steps": [{"value": 1}]},
            "report": {
                "needs": "test",
                "if": "failure",
                "steps": [{"value": "${tasks.test.output}"}],
            },
        }
    }
    finished, tasks, _ = await run(job, handler)
    assert finished["state"] == "failed"
    assert finished["error"]["task"] == "test[2]"
    final = {e["task"]: e["status"] for e in tasks if e["status"] != "started"}
    assert final == {
        "test[1]": "succeeded",
        "test[2]": "failed",
        "test[3]": "succeeded",
        "merge": "skipped",
        "report": "succeeded",
    }


async def test_matrix_from_params_and_outputs_referenced_by_index(
    autojump_clock: trio.abc.Clock,
) -> None:
    job = {
        "params": {"shards": ["a", "b"]},
        "tasks": {
            "t": {"matrix": {"s": "${params.shards}"},
                  "steps": [{"run": ["x", "${matrix.s}"], "parse": "text"}]},
            "last": {"needs": "t", "steps": [{"value": "${tasks.t.output[1]}"}]},
        },
    }  # fmt: skip
    finished, _, _ = await run(job)
    assert finished["output"] == {"t": ["x a", "x b"], "last": "x b"}


# -- if switches ----------------------------------------------------------------------------------


async def test_a_switched_off_task_is_skipped_with_its_dependants(
    autojump_clock: trio.abc.Clock,
) -> None:
    job = {
        "params": {"lint": False},
        "tasks": {
            "lint": {"if": "${params.lint}", "steps": [{"run": ["ruff"]}]},
            "after": {"needs": "lint", "steps": [{"value": 1}]},
            "other": {"steps": [{"value": 2}]},
        },
    }
    finished, tasks, runner = await run(job)
    assert finished["state"] == "succeeded"
    assert finished["output"] == {"lint": None, "after": None, "other": 2}
    assert {e["task"]: e["status"] for e in tasks if e["task"] != "other"} == {
        "lint": "skipped",
        "after": "skipped",
    }
    assert runner.launches == []


# -- parse ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "stdout", "output"),
    [
        ("json", '{"a": [1, 2]}\n', {"a": [1, 2]}),
        ("text", "v1.2\n", "v1.2"),
        ("text", "two\n\n", "two\n"),
        ("lines", "a.py\nb.py\n", ["a.py", "b.py"]),
        ("lines", "", []),
        ("lines", "x", ["x"]),
    ],
)
async def test_parse_modes(
    autojump_clock: trio.abc.Clock, mode: str, stdout: str, output: Any
) -> None:
    finished, _, _ = await run(
        {"run": ["x"], "parse": mode}, lambda launch: ProcessResult(0, stdout, "", False)
    )
    assert finished["output"] == output


async def test_a_parse_failure_fails_the_step(autojump_clock: trio.abc.Clock) -> None:
    finished, _, _ = await run(
        {"run": ["x"], "parse": "json", "name": "plan"},
        lambda launch: ProcessResult(0, "not json\n", "", False),
    )
    error = finished["error"]
    assert (error["type"], error["step"], error["name"]) == ("invalid_output", "steps[0]", "plan")
    assert error["message"].startswith("stdout is not JSON")
    assert error["stdout"] == "not json\n"


async def test_a_failed_run_is_not_parsed(autojump_clock: trio.abc.Clock) -> None:
    finished, _, _ = await run(
        {"run": ["x"], "parse": "json"}, lambda launch: ProcessResult(2, "{}", "", False)
    )
    assert finished["error"]["type"] == "failure"


async def test_parsed_lines_splice_into_a_later_argv(autojump_clock: trio.abc.Clock) -> None:
    def handler(launch: Launch) -> ProcessResult:
        return ProcessResult(0, "a.py\nb c.py\n" if launch.argv[0] == "ls" else "", "", False)

    job = {
        "tasks": {
            "files": {"steps": [{"run": ["ls"], "parse": "lines"}]},
            "lint": {"needs": "files", "steps": [{"run": ["ruff", "${tasks.files.output}"]}]},
        }
    }
    finished, _, runner = await run(job, handler)
    assert finished["state"] == "succeeded"
    assert runner.launches[1].argv == ("ruff", "a.py", "b c.py")


# -- env and cwd ----------------------------------------------------------------------------------


async def test_env_and_cwd_reach_the_process(autojump_clock: trio.abc.Clock) -> None:
    job = {
        "env": {"A": "job"},
        "cwd": "/job",
        "tasks": {
            "t": {"env": {"B": "task"}, "steps": [{"run": ["x"]}]},
            "u": {"cwd": "/u", "steps": [{"run": ["y"], "env": {"A": "step"}}]},
        },
    }
    _, _, runner = await run(job)
    launches = {launch.argv[0]: launch for launch in runner.launches}
    assert (dict(launches["x"].env), launches["x"].cwd) == ({"A": "job", "B": "task"}, "/job")
    assert (dict(launches["y"].env), launches["y"].cwd) == ({"A": "step"}, "/u")


# -- artifacts (real processes, real files) -------------------------------------------------------


async def test_artifacts_are_copied_and_listed_also_on_failure(tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.write_text("do not copy")
    job = {
        "artifacts": ["*.xml", "reports/**/*.txt", "missing-*"],
        "steps": [
            {"run": "mkdir -p reports/a && printf '<x/>' > junit-1.xml"},
            {"run": "echo hi > reports/a/r.txt"},
            {"run": f"ln -s {outside} leak.xml && echo no > other.log"},
            {"fail": "tests failed"},
        ],
    }
    dest = tmp_path / "artifacts"
    async with running_executor(artifacts=str(dest)) as (ex, out):
        record = await ex.submit(job)
        finished = await out.finished(record.id)
    assert finished["state"] == "failed"
    assert finished["artifacts"] == [
        {"path": "junit-1.xml", "bytes": 4, "sha256": hashlib.sha256(b"<x/>").hexdigest()},
        {"path": "reports/a/r.txt", "bytes": 3, "sha256": hashlib.sha256(b"hi\n").hexdigest()},
    ]
    job_dir = dest / record.id
    assert (job_dir / "junit-1.xml").read_text() == "<x/>"
    assert (job_dir / "reports" / "a" / "r.txt").read_text() == "hi\n"
    assert sorted(p.name for p in job_dir.rglob("*")) == ["a", "junit-1.xml", "r.txt", "reports"]
    assert ex.table.records(record.id)[0]["artifacts"] == finished["artifacts"]


async def test_a_job_without_files_lists_no_artifacts(tmp_path: Path) -> None:
    async with running_executor(artifacts=str(tmp_path / "a")) as (ex, out):
        record = await ex.submit({"artifacts": ["*"], "steps": [{"value": 1}]})
        finished = await out.finished(record.id)
        plain = await ex.submit({"steps": [{"value": 1}]})
        other = await out.finished(plain.id)
    assert finished["artifacts"] == []
    assert "artifacts" not in other
    assert not (tmp_path / "a").exists()
