"""The run lane's brief starts on threads of C (``runners/_pool.py``, ``_briefc.Pool``).

What must hold: a request's outcome reaches its ``done`` on the event loop as the spawner
threads' hand-over gives it (the child, whether it ended silently); a cancel before the start
means no start, a cancel during the wait ends it, and either way a started child is handed over;
a start the pool cannot make is made the Python way, which tells why; the pool's threads end
with its run. Timeouts only turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import os
import select
import signal
from typing import Any

import outcome
import pytest
import trio

from stepline.runners import _local, _pool
from stepline.runners._base import Launch, ProcessStartError
from stepline.runners._local import LocalProcess, LocalRunner

from .pool_tools import HANG, briefc, collect, new_pool, submit, until_running

pytestmark = pytest.mark.usefixtures("brief_c")


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_a_cancel_before_the_start_means_none_and_during_the_wait_ends_it() -> None:
    """One thread, busy waiting for the first request's child: the second waits in the queue,
    where a cancel means it is never started; the first one's cancel ends its wait."""
    pool = new_pool(1)
    try:
        submit(pool, 1, ["sleep", "60.4747"])
        submit(pool, 2, ["true"])
        until_running("60.4747")  # the thread is busy with the first: the second is queued
        pool.interrupt(2)
        pool.interrupt(1)
        got = sorted(collect(pool, 2))
        (first, pid, out, err, result, _, _), second = got
        assert (first, result) == (1, briefc().WOKEN)
        assert (second[0], second[4]) == (2, briefc().SKIPPED)
        os.close(out)
        os.close(err)
        _kill(pid)
    finally:
        pool.close()


def test_outcomes_tell_a_silent_end_output_and_a_failed_start(tmp_path: Any) -> None:
    pool = new_pool(2)
    try:
        submit(pool, 1, ["sh", "-c", "exit 4"])
        submit(pool, 2, ["sh", "-c", "echo hi"])
        submit(pool, 3, ["true"], cwd=str(tmp_path / "gone"))
        by_token = {item[0]: item for item in collect(pool, 3)}
        _, pid, out, err, result, _, _ = by_token[1]
        assert (out, err, result) == (-1, -1, briefc().ENDED)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 4  # left to us to reap
        _, pid, out, err, result, _, _ = by_token[2]
        assert result == briefc().RUNNING
        os.waitpid(pid, 0)
        assert os.read(out, 10) == b"hi\n"
        os.close(out)
        os.close(err)
        _, pid, out, err, result, error, where = by_token[3]
        assert (pid, result, error, where) == (-1, briefc().FAILED, 2, 1)  # ENOENT, at the chdir
    finally:
        pool.close()


def test_closing_ends_the_threads() -> None:
    pool = new_pool(3)
    for _ in range(int(HANG * 100)):  # each thread records its id once it runs
        if len(tids := pool.thread_ids()) == 3:
            break
        select.select([], [], [], 0.01)
    assert len(tids) == 3
    for tid in tids:
        with open(f"/proc/self/task/{tid}/comm") as f:
            assert f.read() == "stepline pool\n"
    pool.close()
    for _ in range(int(HANG * 100)):
        if not any(os.path.exists(f"/proc/self/task/{tid}") for tid in tids):
            break
        select.select([], [], [], 0.01)
    assert not any(os.path.exists(f"/proc/self/task/{tid}") for tid in tids)


def test_a_forked_child_drops_its_copy_without_the_lock() -> None:
    """A fork copies no threads, and one of them may hold the lock: the child's copy must be
    dropped without taking it."""
    pool = new_pool(1)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            pool.close()
            del pool
        finally:
            os._exit(0)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    pool.close()


async def _spawn_soon(launch: Launch) -> tuple[LocalProcess, outcome.Outcome[Any]]:
    """A run-lane start of ``launch``: the process and what its ``done`` got."""
    process = LocalRunner().start(launch)
    got: list[outcome.Outcome[Any]] = []
    arrived = trio.Event()

    def done(result: outcome.Outcome[Any]) -> None:
        got.append(result)
        arrived.set()

    with trio.fail_after(HANG):
        process.spawn_soon(done)
        await arrived.wait()
    return process, got[0]


@pytest.mark.usefixtures("long_wait")
async def test_the_run_lane_start_goes_through_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_here(*_: object) -> None:
        raise AssertionError("a spawner thread started it")

    monkeypatch.setattr(_local, "call_on_spawner", not_here)
    process, result = await _spawn_soon(Launch(["sh", "-c", "exit 3"]))
    child, ended = result.unwrap()
    assert ended
    process.spawned(child, ended)
    with trio.fail_after(HANG):
        result_of_step = await process.wait()  # the silent end's way (end_now's, awaited)
    assert result_of_step.returncode == 3
    process.close()
    assert _pool._POOL.get() is not None  # noqa: SLF001 (this run's pool, made by that start)


async def test_a_failed_start_is_told_by_the_python_start() -> None:
    _, result = await _spawn_soon(Launch(["true"], cwd="/no/such/dir"))
    with pytest.raises(ProcessStartError, match="cwd does not exist"):
        result.unwrap()


@pytest.mark.usefixtures("long_wait")
async def test_a_cancel_during_the_wait_hands_the_child_over() -> None:
    process = LocalRunner().start(Launch(["sleep", "60"], grace=0))
    got: list[outcome.Outcome[Any]] = []
    arrived = trio.Event()

    def done(result: outcome.Outcome[Any]) -> None:
        got.append(result)
        arrived.set()

    process.spawn_soon(done)
    process.interrupt()  # queued (then started the Python way) or waiting: handed over either way
    with trio.fail_after(HANG):
        await arrived.wait()
    child, ended = got[0].unwrap()
    assert not ended
    process.spawned(child, ended)
    with trio.CancelScope(shield=True):
        await process.stop(0)
    process.close()
    assert not os.path.exists(f"/proc/{child.pid}")
