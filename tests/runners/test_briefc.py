"""The C start of a brief step (``runners/_briefc.c``): its child and its wait.

What must hold: the child it starts is set up exactly as the Python start sets it up (fds 0-2
only, a new session, signals at their defaults and none blocked, the environment, the cwd, the
arguments byte for byte); its wait answers as the Python wait does (a silent end, output, the
time up, a cancel, pipes closed before the exit); a start that fails leaves nothing behind and
is told with its errno, and a step's start that fails is made again by the Python start, which
says why. The pool's own mechanics: ``test_pool.py``. Timeouts only turn a hang into a failure.
"""

from __future__ import annotations

import ast
import contextlib
import os
import pathlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

from stepline.runners import _base, _early, _local, _pool, _spawn
from stepline.runners._base import Launch, ProcessStartError
from stepline.runners._local import LocalRunner

from .pool_tools import HANG, briefc, collect, new_pool, submit, until_running

pytestmark = pytest.mark.usefixtures("brief_c")


@contextmanager
def started(
    argv: list[str], *, cwd: str | None = None, wait_ms: int = int(HANG * 1000)
) -> Iterator[tuple[Any, int, int, int, int]]:
    """``argv`` started by a pool of one C thread: the pool and the outcome (pid, stdout and
    stderr fds, outcome, errno); the child, if any, is killed and reaped at the end."""
    pool = new_pool(1)
    submit(pool, 1, argv, wait_ms=wait_ms, cwd=cwd)
    try:
        [(_, pid, out, err, result, error, _)] = collect(pool, 1)
        try:
            yield pool, pid, out, err, result
        finally:
            for fd in (out, err):
                if fd >= 0:
                    os.close(fd)
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):  # the test reaped it
                    os.waitpid(pid, 0)
        del error
    finally:
        pool.close()


def test_a_silent_child_ends_in_the_call_and_is_left_to_reap() -> None:
    with started(["sh", "-c", "exit 7"]) as (_, pid, out, err, result):
        assert (out, err, result) == (-1, -1, briefc().ENDED)  # closed: nothing to read
        reaped, status = os.waitpid(pid, os.WNOHANG)  # exited, not reaped
        assert reaped == pid
        assert os.waitstatus_to_exitcode(status) == 7


def test_output_ends_the_wait_and_is_left_to_read() -> None:
    with started(["sh", "-c", "echo out; echo err >&2; sleep 60"]) as (_, _, out, _, result):
        assert result == briefc().RUNNING
        assert os.read(out, 100) == b"out\n"


def test_a_child_running_when_the_time_is_up_is_not_ended() -> None:
    with started(["sleep", "60"], wait_ms=10) as (_, pid, _, _, result):
        assert result == briefc().RUNNING
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)


@pytest.mark.parametrize("script", ["sleep 60.5151", "exec >&- 2>&-; sleep 60.5252"])
def test_a_cancel_during_the_wait_ends_it(script: str) -> None:
    """On the pipes, and once they are closed, on the child's pidfd."""
    pool = new_pool(1)
    try:
        argv = ["sh", "-c", script]
        submit(pool, 1, argv)
        until_running(script.rpartition(" ")[2])
        pool.interrupt(1)
        [(_, pid, out, err, result, _, _)] = collect(pool, 1)
        assert result == briefc().WOKEN
        assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # running: the caller stops it
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(out)
        os.close(err)
    finally:
        pool.close()


def test_a_child_that_closed_its_pipes_is_waited_for_until_it_exits() -> None:
    with started(["sh", "-c", "exec >&- 2>&-; sleep 0.2"]) as (_, _, _, _, result):
        assert result == briefc().ENDED


@pytest.mark.parametrize(
    ("argv", "cwd", "errno", "at_chdir"),
    [(["/no/such/program"], None, 2, 0), (["true"], "/no/such/dir", 2, 1)],
    ids=["missing program", "missing cwd"],
)
def test_a_failed_start_is_told_with_its_errno(
    argv: list[str], cwd: str | None, errno: int, at_chdir: int
) -> None:
    pool = new_pool(1)
    try:
        pool.submit(1, argv, (argv[0].encode(),), None, cwd, _spawn.devnull(), 1000)
        [(_, pid, _, _, result, error, where)] = collect(pool, 1)
        assert (pid, result, error, where) == (-1, -1, errno, at_chdir)
    finally:
        pool.close()


def test_an_embedded_nul_is_refused_at_submit() -> None:
    pool = new_pool(1)
    try:
        with pytest.raises(ValueError, match="null"):
            pool.submit(1, ["true", "x\0y"], (b"/bin/true",), None, None, _spawn.devnull(), 10)
    finally:
        pool.close()


@pytest.mark.parametrize(
    ("argv", "cwd", "message"),
    [
        (["no-such-program-here"], None, "no such program: 'no-such-program-here'"),
        (["true"], "/no/such/dir", "cwd does not exist: '/no/such/dir'"),
        (["{tmp}/plain"], None, "not executable: '{tmp}/plain' (permission denied)"),
    ],
)
async def test_failed_starts_are_told_as_ever(
    argv: list[str], cwd: str | None, message: str, tmp_path: pathlib.Path
) -> None:
    await trio.Path(tmp_path / "plain").write_text("#!/bin/sh\n")  # no x bit: root can't exec it
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    message = message.format(tmp=tmp_path)
    with pytest.raises(ProcessStartError, match=f"^{re.escape(message)}$"):
        await _base.run_process(LocalRunner(), Launch(argv, cwd=cwd))


async def test_a_program_that_moved_is_found_again(tmp_path: pathlib.Path) -> None:
    """The remembered path fails (the program is gone from it): the pool's start fails, the
    path is forgotten, and the Python start finds the program where it is now."""
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        await trio.Path(directory).mkdir()
    program = first / "stepline-moved"
    await trio.Path(program).write_text("#!/bin/sh\nexit 0\n")
    await trio.Path(program).chmod(0o755)
    launch = Launch(["stepline-moved"], env={"PATH": f"{first}:{second}"})
    assert (await _base.run_process(LocalRunner(), launch)).returncode == 0
    await trio.Path(program).rename(second / "stepline-moved")
    assert (await _base.run_process(LocalRunner(), launch)).returncode == 0


PROBE = (
    "ls /proc/self/fd | sort -n | tr '\\n' ' '; echo; "
    "cut -d' ' -f5,6 /proc/$$/stat; echo $$; "
    "grep -E '^Sig(Blk|Ign)' /proc/self/status; "
    'pwd; echo "$STEPLINE_PROBE"; printf \'%s|\' "$@"'
)


async def _probe(start: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """What the probe script says of itself, started the ``start`` way."""
    with monkeypatch.context() as patch:
        if start == "Python start":
            patch.setattr(_spawn, "BRIEF_IN_C", False)
        else:  # the C start ends its own wait: a Python wait means it handed over

            def ended_soon(*_: object) -> bool:
                raise AssertionError("the C start handed over to the Python one")

            patch.setattr("stepline.runners._local.ended_soon", ended_soon)
        launch = Launch(
            ["sh", "-c", PROBE, "probe", "é ü", "two words", ""],
            env={"STEPLINE_PROBE": "välue"},
            cwd="/tmp",
        )
        result = await _base.run_process(LocalRunner(), launch)
    assert result.returncode == 0, result.stderr
    fds, ids, pid, *rest = result.stdout.split("\n")
    pgid, sid = ids.split()
    assert sid == pgid == pid  # a new session, its leader the child
    return "\n".join([fds, *rest])


async def test_the_child_is_set_up_as_the_python_start_sets_it_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    by_c = await _probe("C start", monkeypatch)
    by_python = await _probe("Python start", monkeypatch)
    assert by_c == by_python
    assert by_c.startswith("0 1 2 3 \n")  # ls's own directory fd is 3
    assert "SigBlk:\t0000000000000000" in by_c
    assert "SigIgn:\t0000000000000000" in by_c  # SIGPIPE and SIGXFSZ back at their defaults
    assert by_c.endswith("/tmp\nvälue\né ü|two words||")


def test_a_parent_without_fds_0_to_2_gives_its_child_the_right_ones() -> None:
    """Started with fds 0-2 closed, the pipes and /dev/null may land on 0-2 themselves: the
    child must still get each where it belongs."""
    code = (
        "import os, select, sys\n"
        "report = int(sys.argv[1])\n"
        "from stepline.runners import _briefc, _forkexec, _spawn\n"
        "_forkexec.vfork_holds(); _spawn.devnull()  # the probe and /dev/null, done now\n"
        "argv = ['sh', '-c', 'echo out; cat; echo err >&2']\n"
        "paths = _spawn.brief_start(argv, None, None)[0]\n"
        "pool = _briefc.Pool(1)\n"
        "while not pool.thread_ids(): select.select([], [], [], 0.01)  # its pipes made\n"
        "for fd in (0, 1, 2): os.close(fd)  # so the pipes of the start land there\n"
        "pool.submit(1, argv, paths, None, None, _spawn.devnull(), 10_000)\n"
        "select.select([pool.fileno()], [], [], 10)\n"
        "[(_, pid, out_fd, err_fd, result, _, _)] = pool.collect()\n"
        "os.waitpid(pid, 0)\n"
        "out = os.read(out_fd, 100); err = os.read(err_fd, 100)\n"
        "os.write(report, repr((result, out, err, out_fd, err_fd)).encode())\n"
    )
    read_end, write_end = os.pipe()
    done = subprocess.run(
        [sys.executable, "-c", code, str(write_end)],
        pass_fds=(write_end,),
        stderr=subprocess.PIPE,
        timeout=HANG,
        check=False,
    )
    os.close(write_end)
    with os.fdopen(read_end) as told:
        said = told.read()
    assert done.returncode == 0, done.stderr
    result, out, err, out_fd, err_fd = ast.literal_eval(said)
    assert (result, out, err) == (briefc().RUNNING, b"out\n", b"err\n")
    assert min(out_fd, err_fd) < 3  # the case this test is for: a pipe did land on 0-2


async def test_a_brief_step_through_run_process_uses_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_process`` of a silent step: ended by the pool of C threads (the Python wait is
    not asked)."""
    calls: list[str] = []
    real = _pool.run_on_pool

    async def run_on_pool(*args: Any) -> tuple[_spawn.Child, bool] | None:
        started = await real(*args)
        calls.append(f"pool: {started is not None and started[1]}")
        return started

    def elsewhere(*_: object) -> bool:
        calls.append("elsewhere")
        return False

    monkeypatch.setattr(_local, "run_on_pool", run_on_pool)
    monkeypatch.setattr(_local, "ended_soon", elsewhere)
    monkeypatch.setattr(_early, "WAIT", HANG)
    with trio.fail_after(HANG):
        result = await _base.run_process(LocalRunner(), Launch(["true"]))
    assert result.returncode == 0
    assert calls == ["pool: True"]
