"""``--allow-run``: which programs jobs may start, and what children can reach of stepline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import trio
from attrs import frozen

from stepline import Config, InvalidJob
from stepline.spec._model import Run, Step, Value
from stepline.spec._policy import _run_steps, check_run_policy, parse_allow_run
from stepline.spec._validate import validate_job

from ..conftest import running_executor
from ..driver import ENV, SERVE, run_cli


@pytest.mark.parametrize(
    ("text", "allowed"),
    [
        ("all", None),
        (None, None),
        ("none", frozenset()),
        ("echo", {"echo"}),
        ("echo,/bin/sh,./x", {"echo", "/bin/sh", "./x"}),
        (["true", "false"], {"true", "false"}),
    ],
)
def test_parse_allow_run(text: Any, allowed: Any) -> None:
    assert parse_allow_run(text) == allowed
    assert Config(allow_run=text).allow_run == allowed


@pytest.mark.parametrize("text", ["a,,b", ",", ""])
def test_empty_entries_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        parse_allow_run(text)


async def refused(job: Any, allow: str, **submit: Any) -> str:
    async with running_executor(allow_run=allow) as (ex, _):
        with pytest.raises(InvalidJob) as info:
            await ex.submit(job, **submit)
    return info.value.message


async def test_a_program_not_allowed_is_refused_with_its_name_and_path() -> None:
    job = {"steps": [{"value": 1}, {"par": [{"log": "x"}, {"try": {"run": ["rm", "-rf", "/x"]}}]}]}
    message = await refused(job, "echo")
    assert message.startswith("steps[1].par[1].try.run: program 'rm' is not allowed")


async def test_a_shell_line_is_the_program_bin_sh() -> None:
    assert "program '/bin/sh'" in await refused({"run": "echo hi"}, "echo")
    assert "program '/bin/sh'" in await refused({"run": "echo hi"}, "sh")  # exact match only


async def test_none_leaves_only_the_built_in_steps(autojump_clock: trio.abc.Clock) -> None:
    assert "no program may be run" in await refused({"run": ["true"]}, "none")
    async with running_executor(allow_run="none") as (ex, out):
        job = await ex.submit({"steps": [{"sleep": 1}, {"log": "x"}, {"value": 2}]})
        assert (await out.finished(job.id))["output"] == 2


async def test_a_name_matches_argv0_exactly_never_a_path_that_ends_like_it() -> None:
    assert "program '/tmp/evil/echo'" in await refused({"run": ["/tmp/evil/echo"]}, "echo")
    assert "program 'echo '" in await refused({"run": ["echo "]}, "echo")


@pytest.mark.parametrize("name", ["PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH"])
async def test_variables_that_choose_the_program_or_its_code_are_refused(name: str) -> None:
    """With ``echo`` allowed, ``PATH=/tmp/evil`` would run ``/tmp/evil/echo``: refused."""
    job = {"run": ["echo", "hi"], "env": {name: "/tmp/evil"}}
    assert (await refused(job, "echo")).startswith(f"steps[0].env: '{name}' may not be set")
    spec = validate_job(job)
    check_run_policy(spec, None)  # with every program allowed there is nothing to protect


async def test_parameters_cannot_smuggle_a_program_in() -> None:
    template = {"params": {"p": "echo"}, "steps": [{"run": ["${params.p}", "hi"]}]}
    async with running_executor(allow_run="echo") as (ex, _):
        ex.define("t", template)
        with pytest.raises(InvalidJob, match=r"^steps\[0\]\.run: program 'rm'"):
            await ex.submit(template="t", params={"p": "rm"})
        with pytest.raises(InvalidJob, match=r"^steps\[0\]\.use\.steps\[0\]\.run: program 'rm'"):
            await ex.submit({"steps": [{"use": "t", "with": {"p": "rm"}}]})
        with pytest.raises(InvalidJob, match="program 'rm'"):
            await ex.submit({"params": {"c": ["rm"]}, "steps": [{"run": "${params.c}"}]})


async def test_define_checks_what_it_can_and_leaves_parameters_to_submit() -> None:
    async with running_executor(allow_run="echo") as (ex, _):
        with pytest.raises(InvalidJob, match=r"^steps\[0\]\.run: program 'rm'"):
            ex.define("bad", {"steps": [{"run": ["rm"]}]})
        with pytest.raises(InvalidJob, match="program 'rm'"):
            ex.define("default", {"params": {"p": "rm"}, "steps": [{"run": ["${params.p}"]}]})
        ex.define("open", {"steps": [{"run": ["${params.p}"]}, {"run": "${params.line}"}]})
        ex.define("uses", {"steps": [{"use": "open", "with": {"p": "echo", "line": ["echo"]}}]})
        assert "bad" not in ex.templates


async def test_run_callbacks_are_run_steps_too() -> None:
    job = {"steps": [{"value": 1}], "on_finish": [{"notify": "x"}, {"run": ["rm", "x"]}]}
    assert (await refused(job, "echo")).startswith("on_finish[1].run: program 'rm'")


async def test_a_program_known_only_at_run_time_is_checked_before_it_starts() -> None:
    """Regression: submit sees ``{"run": "${tasks.a.output}"}`` as a shell line (``/bin/sh``);
    the task output made it ``["id"]`` at run time, and ``id`` ran although not allowed."""
    job = {
        "tasks": {
            "a": {"steps": [{"value": ["id"]}]},
            "b": {"needs": ["a"], "steps": [{"run": "${tasks.a.output}"}]},
        }
    }
    async with running_executor(allow_run="echo,/bin/sh") as (ex, out):
        finished = await out.finished((await ex.submit(job)).id)
    assert finished["state"] == "failed"
    error = finished["error"]
    assert (error["type"], error["step"]) == ("startup_failure", "tasks.b.steps[0]")
    assert "program 'id' is not allowed" in error["message"]


@frozen
class _FutureKind:
    """Stands for a step kind added later (DAG tasks, say) that this module never heard of."""

    path: str
    tasks: Mapping[str, tuple[Step, ...]]


def test_the_walker_finds_run_steps_inside_kinds_it_does_not_know() -> None:
    hidden = Run(path="tasks.b[1]", argv=("rm",))
    future = _FutureKind(
        path="",
        tasks={"a": (Value(path="x", value=[1]),), "b": (Value(path="y", value=None), hidden)},
    )
    assert list(_run_steps(future)) == [hidden]


def test_the_cli_flag() -> None:
    events, rc, _ = run_cli(
        [
            {"op": "submit", "id": 1, "job": {"run": "echo hi"}},
            {"op": "submit", "id": 2, "job": {"run": ["echo", "hi"]}},
        ],
        "--allow-run",
        "echo",
    )
    assert rc == 0
    error = next(e for e in events if e.get("id") == 1)
    assert (error["event"], error["code"]) == ("error", "invalid_job")
    assert error["message"].startswith("steps[0].run: program '/bin/sh' is not allowed")
    finished = next(e for e in events if e["event"] == "finished")
    assert finished["output"]["stdout"] == "hi\n"
    scheduled, _, _ = run_cli(
        [{"op": "schedule", "id": 3, "every": 60, "job": {"run": ["id"]}}], "--allow-run", "none"
    )
    refused = next(e for e in scheduled if e.get("id") == 3)
    assert refused["code"] == "invalid_job"  # at schedule time, not when it fires
    bad = subprocess.run(
        [*SERVE, "--allow-run", "a,,b"],
        capture_output=True,
        env=ENV,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert bad.returncode == 2
    assert b"--allow-run" in bad.stderr


LIST_FDS = """
import os
for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
    try:
        print(fd, os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        pass
"""


def test_children_never_inherit_stepline_stdin_or_stdout() -> None:
    """A child's fds: /dev/null as stdin, its own pipes for output, nothing of stepline's."""
    with subprocess.Popen([*SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV) as sl:
        assert sl.stdin is not None
        assert sl.stdout is not None
        ours = {f"pipe:[{os.fstat(f.fileno()).st_ino}]" for f in (sl.stdin, sl.stdout)}
        job = {"op": "submit", "job": {"run": [sys.executable, "-c", LIST_FDS]}}
        out, _ = sl.communicate(input=(json.dumps(job) + "\n").encode(), timeout=30)
    finished = next(line for line in out.decode().splitlines() if '"finished"' in line)
    listing = json.loads(finished)["output"]["stdout"]
    fds = dict(line.split(" ", 1) for line in listing.splitlines())
    assert fds["0"] == "/dev/null"
    assert fds["1"].startswith("pipe:")
    assert fds["2"].startswith("pipe:")
    assert not ours & set(fds.values()), (ours, fds)
    assert set(fds) <= {"0", "1", "2", "3"}, fds  # 3: the directory listdir itself opened
