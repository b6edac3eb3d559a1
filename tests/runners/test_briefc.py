"""The C start of a brief step (``runners/_briefc.c`` through ``_early.start_brief``).

What must hold: the child it starts is set up exactly as the Python start sets it up (fds 0-2
only, a new session, signals at their defaults and none blocked, the environment, the cwd, the
arguments byte for byte); its wait answers as the Python wait does (a silent end, output, the
time up, a cancel, pipes closed before the exit); a start that fails leaves nothing behind and
hands over to the Python start, which says why. Timeouts only turn a hang into a failure.
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
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

from stepline.runners import _base, _early, _local, _pool, _spawn
from stepline.runners._base import Launch, ProcessStartError
from stepline.runners._local import LocalRunner
from stepline.runners._threads import Interrupt

from .conftest import require_brief_c

HANG = 10.0

pytestmark = pytest.mark.usefixtures("built")


@pytest.fixture
def built() -> None:
    require_brief_c()


@contextmanager
def started(
    argv: list[str], interrupt: Interrupt | None = None, **launch: str | dict[str, str]
) -> Iterator[tuple[_spawn.Child, bool]]:
    """``start_brief`` of ``argv`` (with ``env`` and ``cwd`` from ``launch``); the child is
    killed and reaped at the end of the block."""
    env = launch.get("env")
    cwd = launch.get("cwd")
    assert env is None or isinstance(env, dict)
    assert cwd is None or isinstance(cwd, str)
    result = _early.start_brief(argv, env, cwd, interrupt or Interrupt())
    assert result is not None, "the C start handed over to the Python one"
    child, ended = result
    try:
        yield child, ended
    finally:
        if not ended:
            os.kill(child.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # the test reaped it
            os.waitpid(child.pid, 0)
        child.close()


@pytest.fixture
def long_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_early, "WAIT", HANG)


@pytest.mark.usefixtures("long_wait")
def test_a_silent_child_ends_in_the_call_and_is_left_to_reap() -> None:
    with started(["sh", "-c", "exit 7"]) as (child, ended):
        assert ended
        assert (child.stdout.fd, child.stderr.fd) == (-1, -1)  # closed: nothing to read
        pid, status = os.waitpid(child.pid, os.WNOHANG)  # exited, not reaped
        assert pid == child.pid
        assert os.waitstatus_to_exitcode(status) == 7


@pytest.mark.usefixtures("long_wait")
def test_output_ends_the_wait_and_is_left_to_read() -> None:
    with started(["sh", "-c", "echo out; echo err >&2; sleep 60"]) as (child, ended):
        assert not ended
        os.set_blocking(child.stdout.fd, True)
        assert os.read(child.stdout.fd, 100) == b"out\n"


def test_a_child_running_when_the_time_is_up_is_not_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_early, "WAIT", 0.01)
    with started(["sleep", "60"]) as (child, ended):
        assert not ended
        assert child.poll() is None


@pytest.mark.usefixtures("long_wait")
@pytest.mark.parametrize("script", ["sleep 60", "exec >&- 2>&-; sleep 60"])
def test_an_interrupt_during_the_wait_ends_it(script: str) -> None:
    """On the pipes, and once they are closed, on the child's pidfd."""
    interrupt = Interrupt()
    answers: list[tuple[_spawn.Child, bool] | None] = []
    argv = ["sh", "-c", script]
    waiter = threading.Thread(
        target=lambda: answers.append(_early.start_brief(argv, None, None, interrupt))
    )
    waiter.start()
    while interrupt._fd < 0 and waiter.is_alive():  # noqa: SLF001 (armed: the call began)
        threading.Event().wait(0.001)
    threading.Event().wait(0.1)  # the second script is then past its pipes (either way: woken)
    interrupt.request()
    waiter.join(HANG)
    [answer] = answers
    assert answer is not None
    child, ended = answer
    try:
        assert not ended
        assert child.poll() is None
    finally:
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        child.close()


def test_an_interrupt_before_the_call_means_no_start() -> None:
    interrupt = Interrupt()
    interrupt.request()
    assert _early.start_brief(["sleep", "60"], None, None, interrupt) is None


@pytest.mark.usefixtures("long_wait")
def test_a_child_that_closed_its_pipes_is_waited_for_until_it_exits() -> None:
    with started(["sh", "-c", "exec >&- 2>&-; sleep 0.2"]) as (_, ended):
        assert ended


@pytest.mark.parametrize(
    ("argv", "cwd"),
    [(["no-such-program-here"], None), (["true"], "/no/such/dir"), (["true", "x\0y"], None)],
    ids=["missing program", "missing cwd", "NUL"],
)
def test_a_failed_start_hands_over_to_the_python_start(argv: list[str], cwd: str | None) -> None:
    assert _early.start_brief(argv, None, cwd, Interrupt()) is None


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


def test_a_program_that_moved_is_found_again(tmp_path: os.PathLike[str]) -> None:
    """The remembered path fails (the program is gone from it): the call hands over, the
    remembered path is forgotten, and the next start finds the program where it is now."""
    first, second = os.path.join(tmp_path, "a"), os.path.join(tmp_path, "b")
    for directory in (first, second):
        os.mkdir(directory)
    program = os.path.join(first, "stepline-moved")
    with open(program, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(program, 0o755)
    env = {"PATH": f"{first}:{second}"}
    with started(["stepline-moved"], env=env):
        pass
    os.rename(program, os.path.join(second, "stepline-moved"))
    assert _early.start_brief(["stepline-moved"], env, None, Interrupt()) is None
    with started(["stepline-moved"], env=env):
        pass


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
        "import os, sys\n"
        "report = int(sys.argv[1])\n"
        "from stepline.runners import _early, _forkexec, _spawn\n"
        "from stepline.runners._threads import Interrupt\n"
        "interrupt = Interrupt(); interrupt.arm(); interrupt.disarm()  # its pipe, made now\n"
        "_forkexec.vfork_holds(); _spawn.devnull()  # the probe and /dev/null, done now\n"
        "for fd in (0, 1, 2): os.close(fd)  # so the pipes of the start land there\n"
        "argv = ['sh', '-c', 'echo out; cat; echo err >&2']\n"
        "child, ended = _early.start_brief(argv, None, None, interrupt)\n"
        "os.waitpid(child.pid, 0)\n"
        "out = os.read(child.stdout.fd, 100); err = os.read(child.stderr.fd, 100)\n"
        "os.write(report, repr((ended, out, err, child.stdout.fd, child.stderr.fd)).encode())\n"
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
    ended, out, err, out_fd, err_fd = ast.literal_eval(said)
    assert (ended, out, err) == (False, b"out\n", b"err\n")
    assert min(out_fd, err_fd) < 3  # the case this test is for: a pipe did land on 0-2


async def test_a_brief_step_through_run_process_uses_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run_process`` of a silent step: ended by the pool of C threads (neither a spawner
    thread nor the Python wait is asked)."""
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
    monkeypatch.setattr(_local, "start_brief", elsewhere)
    monkeypatch.setattr(_local, "ended_soon", elsewhere)
    monkeypatch.setattr(_early, "WAIT", HANG)
    with trio.fail_after(HANG):
        result = await _base.run_process(LocalRunner(), Launch(["true"]))
    assert result.returncode == 0
    assert calls == ["pool: True"]
