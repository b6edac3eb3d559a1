"""The local runner forks and execs on a spawner thread: a slow start holds nothing else up.

The slow exec is stood for by a ``spawn`` that waits on a ``threading.Event``: on the event loop
(as the runner once spawned) it would hold the loop, so the loop could never set that event and
the wait would run out; on a spawner thread the loop goes on and sets it. The timeouts below only
turn a hang into a failure; nothing is timed.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
import trio

from stepline.runners import _base, _local, _spawn
from stepline.runners._base import Launch, ProcessResult
from stepline.runners._local import LocalRunner, ProcessGroups

HANG = 10.0  # seconds before a wait that should have been released counts as a hang


def patch_spawn(monkeypatch: pytest.MonkeyPatch, before: Any) -> list[int]:
    """The start on a spawner thread (``spawn``) calls ``before()`` first; returns the pids it
    starts. The pool of C threads is kept out: a slow start cannot be stood for in its C, and
    its threads hold no GIL to hold the loop up with (``test_pool.py``)."""
    real_spawn = _spawn.spawn
    pids: list[int] = []

    def spawn(*args: Any, **kwargs: Any) -> Any:
        before()
        child = real_spawn(*args, **kwargs)
        pids.append(child.pid)
        return child

    async def run_on_pool(*_: object) -> None:
        return None

    monkeypatch.setattr(_local, "spawn", spawn)
    monkeypatch.setattr(_local, "run_on_pool", run_on_pool)
    return pids


async def test_the_loop_runs_while_a_process_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_ran = threading.Event()

    def slow_exec() -> None:
        assert loop_ran.wait(HANG), "the event loop was held while the process started"

    patch_spawn(monkeypatch, slow_exec)
    results: list[ProcessResult] = []

    async def job() -> None:
        results.append(await _base.run_process(LocalRunner(), Launch(["true"])))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job)
        for _ in range(5):
            await trio.lowlevel.checkpoint()  # other tasks run while the spawn waits
        loop_ran.set()
    assert [r.returncode for r in results] == [0]


async def test_a_cancel_while_a_process_starts_stops_it(monkeypatch: pytest.MonkeyPatch) -> None:
    spawning, release = threading.Event(), threading.Event()

    def slow_exec() -> None:
        spawning.set()
        assert release.wait(HANG)

    pids = patch_spawn(monkeypatch, slow_exec)
    groups = ProcessGroups()
    cancelled = False

    async def job() -> None:
        nonlocal cancelled
        try:
            await _base.run_process(LocalRunner(groups), Launch(["sleep", "60"], grace=0))
        except trio.Cancelled:
            cancelled = True
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(job)
        assert await trio.to_thread.run_sync(spawning.wait, HANG)
        nursery.cancel_scope.cancel()  # the spawn is under way: it is waited for, not abandoned
        release.set()
    assert cancelled
    assert len(pids) == 1  # the child was started, then stopped and reaped
    assert not os.path.exists(f"/proc/{pids[0]}")
    assert len(groups) == 0


async def test_a_failed_start_is_a_process_start_error() -> None:
    with pytest.raises(_base.ProcessStartError, match="no such program"):
        await _base.run_process(LocalRunner(), Launch(["no-such-program-stepline-test"]))


def test_a_forked_child_starts_its_own_spawner_threads() -> None:
    """A fork copies no threads: a child of a process whose spawners had started must start its
    own, or its first ``run`` step would wait for ever on a queue nobody reads."""
    from stepline.runners._threads import run_on_spawner

    assert trio.run(run_on_spawner, lambda: os.getpid()) == os.getpid()  # threads started
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports by its exit status only
        status = 1
        try:
            signal.alarm(int(HANG))  # a hang ends the child by SIGALRM: the parent sees it
            status = 0 if trio.run(run_on_spawner, lambda: os.getpid()) == os.getpid() else 3
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


async def test_results_that_come_back_together_each_reach_their_own_caller() -> None:
    """Results are handed back to the event loop in batches: a result put while a hand-over
    is on its way rides along with it, and every caller still gets its own."""
    from stepline.runners._threads import SPAWNERS, run_on_spawner

    release = threading.Event()
    started = threading.Semaphore(0)

    def held(i: int) -> int:
        started.release()
        assert release.wait(HANG), "the calls were never released"
        return i * i

    got: dict[int, int] = {}

    async def call(i: int) -> None:
        got[i] = await run_on_spawner(lambda: held(i))

    async with trio.open_nursery() as nursery:
        for i in range(SPAWNERS):
            nursery.start_soon(call, i)
        for _ in range(SPAWNERS):  # every spawner holds one call: their results come at once
            await trio.to_thread.run_sync(started.acquire)
        release.set()
    assert got == {i: i * i for i in range(SPAWNERS)}


def test_two_trio_runs_at_once_each_get_their_own_results() -> None:
    """The spawners are shared by the process; each trio run's results go back to that run."""
    from stepline.runners._threads import run_on_spawner

    results: dict[str, list[int]] = {}

    def run(name: str) -> None:
        async def main() -> list[int]:
            return [await run_on_spawner(lambda i=i: i) for i in range(20)]  # type: ignore[misc]

        results[name] = trio.run(main)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG)
    assert results == {"a": list(range(20)), "b": list(range(20))}
