"""A short silent step ends on its spawner thread (``runners/_early.py``); anything else does not.

The step-level tests run with the C start (``_briefc.c``'s pool, which waits in the same call)
and with the Python one (the ``start`` fixture); the tests of the Python wait itself call it
directly, and ``test_briefc.py`` and ``test_pool.py`` test the C start's own.

What must hold: a step that writes nothing and exits at once is reported exactly as one captured
on the loop (exit status, empty streams, its sink told both streams ended); a step that writes
is captured on the loop from its first byte; a cancel cuts the thread's wait short, so a stop is
not held up by it; steps the loop must attend to right after their start (stdin to feed, limits)
are never waited for. The timeouts below only turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio

from stepline.runners import _base, _early, _local, _pool, _spawn
from stepline.runners._base import Launch, StreamName
from stepline.runners._local import LocalRunner
from stepline.runners._threads import Interrupt
from stepline.spec._limits import Limits

HANG = 10.0  # seconds before a wait that should have ended counts as a hang


class Sink:
    """An :class:`~stepline.runners._base.OutputSink` that records what it is told."""

    congested = False

    def __init__(self) -> None:
        self.told: list[tuple[str, StreamName, bytes]] = []

    def write(self, stream: StreamName, data: bytes) -> None:
        self.told.append(("write", stream, data))

    def eof(self, stream: StreamName) -> None:
        self.told.append(("eof", stream, b""))

    async def wait_writable(self) -> None:  # pragma: no cover - never congested
        raise AssertionError


@pytest.fixture
def endings(monkeypatch: pytest.MonkeyPatch, start: str) -> list[bool]:
    """What every early wait answered, in order, whichever start (``start``) made it: with the
    C start, the pool's (``runners/_pool.py``), and a wait the Python way is a failure (the
    pool handed over)."""
    answers: list[bool] = []
    real_wait, real_pool = _early.ended_soon, _pool.run_on_pool

    def ended_soon(child: Any, interrupt: Interrupt, wait: float | None = None) -> bool:
        assert start == "Python start", "the C start fell back to the Python wait"
        answer = real_wait(child, interrupt, wait)
        answers.append(answer)
        return answer

    async def run_on_pool(*args: Any) -> tuple[_spawn.Child, bool] | None:
        started: tuple[_spawn.Child, bool] | None = await real_pool(*args)
        if started is not None:
            answers.append(started[1])
        return started

    monkeypatch.setattr(_local, "ended_soon", ended_soon)
    monkeypatch.setattr(_local, "run_on_pool", run_on_pool)
    return answers


@pytest.mark.usefixtures("long_wait")
async def test_a_silent_step_that_exits_at_once_ends_on_the_thread(endings: list[bool]) -> None:
    sink = Sink()
    result = await _base.run_process(LocalRunner(), Launch(["sh", "-c", "exit 3"], output=sink))
    assert endings == [True]
    assert (result.returncode, result.stdout, result.stderr, result.truncated) == (3, "", "", False)
    assert sorted(sink.told) == [("eof", "stderr", b""), ("eof", "stdout", b"")]
    assert result.pid > 0
    assert not os.path.exists(f"/proc/{result.pid}")  # reaped, not a zombie


async def _silent_step(
    monkeypatch: pytest.MonkeyPatch, script: str, *, early: bool
) -> tuple[_base.ProcessResult, list[tuple[str, StreamName, bytes]]]:
    """Run ``sh -c script`` ended on the thread (``early``: a wait long enough for any machine)
    or captured on the loop (the wait refused); its result and what its sink was told."""
    answers: list[bool] = []

    def ended_soon(child: Any, interrupt: Interrupt, wait: float | None = None) -> bool:
        answers.append(early and _early.ended_soon(child, interrupt, HANG))
        return answers[-1]

    async def run_on_pool(*args: Any) -> tuple[_spawn.Child, bool] | None:
        started: tuple[_spawn.Child, bool] | None = None  # refused: the Python way
        if early:
            started = await _pool.run_on_pool(*args)
        if started is not None:
            answers.append(started[1])
        return started

    monkeypatch.setattr(_local, "ended_soon", ended_soon)
    monkeypatch.setattr(_local, "run_on_pool", run_on_pool)
    sink = Sink()
    result = await _base.run_process(LocalRunner(), Launch(["sh", "-c", script], output=sink))
    assert answers == [early]
    return result, sorted(sink.told)


@pytest.mark.parametrize("script", ["exit 0", "exit 3", "kill -TERM $$"])
async def test_a_silent_end_gives_what_a_capture_of_the_same_step_gives(
    monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    """The same silent steps through both ways: the same result, the same sink calls, and
    either way the step's process group is gone when the result comes."""
    on_thread = await _silent_step(monkeypatch, script, early=True)
    on_loop = await _silent_step(monkeypatch, script, early=False)
    assert on_thread == on_loop
    for result, _told in (on_thread, on_loop):
        assert result.group_gone
        with pytest.raises(ProcessLookupError):
            os.killpg(result.pid, 0)


@pytest.mark.usefixtures("long_wait")
async def test_a_step_that_writes_is_captured_on_the_loop(endings: list[bool]) -> None:
    sink = Sink()
    script = "echo out; echo err >&2"
    result = await _base.run_process(LocalRunner(), Launch(["sh", "-c", script], output=sink))
    assert endings == [False]
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert ("write", "stdout", b"out\n") in sink.told
    assert ("write", "stderr", b"err\n") in sink.told
    assert {told[1] for told in sink.told if told[0] == "eof"} == {"stdout", "stderr"}


async def test_a_grandchild_holding_the_pipes_is_left_to_the_loop(endings: list[bool]) -> None:
    """The wait (``WAIT``, a few ms) ends before the grandchild lets go of the pipes; the loop
    then waits for it, as ever (``subprocess.run`` would too)."""
    result = await _base.run_process(LocalRunner(), Launch(["sh", "-c", "sleep 0.3 & exit 0"]))
    assert (result.returncode, result.stdout) == (0, "")
    assert endings == [False]


@pytest.mark.parametrize(
    "launch",
    [Launch(["true"], stdin="text"), Launch(["true"], limits=Limits(cpu=10))],
    ids=["stdin", "limits"],
)
async def test_steps_the_loop_attends_to_are_not_waited_for(
    endings: list[bool], launch: Launch
) -> None:
    result = await _base.run_process(LocalRunner(), launch)
    assert result.returncode == 0
    assert endings == []


@pytest.mark.usefixtures("long_wait")
async def test_a_cancel_cuts_the_wait_short(endings: list[bool]) -> None:
    """The wait would last HANG seconds; the cancel ends it, and the step is stopped."""
    pids: list[int] = []
    real_spawned = _local.LocalProcess.spawned

    def spawned(self: _local.LocalProcess, child: _spawn.Child, ended: bool) -> None:
        pids.append(child.pid)
        real_spawned(self, child, ended)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_local.LocalProcess, "spawned", spawned)
        with trio.fail_after(HANG / 2), trio.move_on_after(0.2) as scope:
            await _base.run_process(LocalRunner(), Launch(["sleep", "60"], grace=0))
    assert scope.cancelled_caught
    assert endings == [False]
    assert not os.path.exists(f"/proc/{pids[0]}")


@contextmanager
def running(argv: list[str]) -> Iterator[_spawn.Child]:
    """A child of ``argv`` with piped output, killed and reaped at the end of the block."""
    child = _spawn.spawn(argv, None, None, piped_stdin=False)
    try:
        yield child
    finally:
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        child.close()


def waiting(child: _spawn.Child, interrupt: Interrupt) -> tuple[threading.Thread, list[bool]]:
    """An early wait for ``child`` on a thread of its own, returned once the wait has armed
    ``interrupt`` (so a request now lands during the wait), with the list its answer goes to."""
    answers: list[bool] = []
    waiter = threading.Thread(
        target=lambda: answers.append(_early.ended_soon(child, interrupt, wait=HANG * 10))
    )
    waiter.start()
    while interrupt._fd < 0 and waiter.is_alive():  # noqa: SLF001 (armed: the wait began)
        threading.Event().wait(0.001)
    return waiter, answers


def test_an_interrupt_before_the_wait_means_no_wait() -> None:
    with running(["sleep", "60"]) as child:
        interrupt = Interrupt()
        interrupt.request()
        assert not _early.ended_soon(child, interrupt, wait=HANG * 10)


def test_an_interrupt_during_the_wait_ends_it() -> None:
    with running(["sleep", "60"]) as child:
        interrupt = Interrupt()
        waiter, answers = waiting(child, interrupt)
        interrupt.request()
        waiter.join(HANG)
        assert answers == [False]


def test_a_child_still_running_when_the_wait_ends_is_not_ended() -> None:
    with running(["sleep", "60"]) as child:
        assert not _early.ended_soon(child, Interrupt(), wait=0.01)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no pidfd"])
def test_a_child_that_closed_its_pipes_is_waited_for_until_it_exits(
    monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    """Both pipes hang up a while before the child exits: its exit is waited for (on its pidfd,
    or where there is none by a look once a millisecond), and it ended silently."""
    if not pidfd:
        monkeypatch.setattr(_spawn.Child, "pidfd", lambda _self: None)
    script = "exec >&- 2>&-; sleep 0.2"
    child = _spawn.spawn(["sh", "-c", script], None, None, piped_stdin=False)
    try:
        assert _early.ended_soon(child, Interrupt(), wait=HANG)
        assert os.waitpid(child.pid, os.WNOHANG)[0] == child.pid  # exited, and left to us to reap
    finally:
        child.close()


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no pidfd"])
def test_an_interrupt_ends_the_wait_for_a_child_that_closed_its_pipes(
    monkeypatch: pytest.MonkeyPatch, pidfd: bool
) -> None:
    if not pidfd:
        monkeypatch.setattr(_spawn.Child, "pidfd", lambda _self: None)
    with running(["sh", "-c", "exec >&- 2>&-; sleep 60"]) as child:
        interrupt = Interrupt()
        waiter, answers = waiting(child, interrupt)
        while os.path.exists(f"/proc/{child.pid}/fd/1"):  # so the wait is past the pipes
            threading.Event().wait(0.001)
        interrupt.request()
        waiter.join(HANG)
        assert answers == [False]
