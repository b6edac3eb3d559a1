"""Plain ``run`` jobs through the run lane answer as the worker path does, and keep its bounds.

``stepline serve`` starts a plain ``run`` job on a spawner thread and, when its process ends
silently there, finishes it in the spawners' hand-over with no task of its own
(``engine/_run_lane.py``). These tests drive the real CLI over pipes: the same lines through the
lane and through the worker path (``STEPLINE_RUN_LANE=0``) give the same events per job, field
for field and in the same key order, and the same ``status`` and ``stats`` answers, times
aside; the ``--workers`` bound, in-order starts, cancel (the process group stopped), drain and
cancelling shutdowns hold for lane jobs. One in-process test shows the lane is taken at all:
jobs finish outside every worker task.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import pytest
import trio
import trio.testing

from stepline import Config
from stepline.engine._jobs import Job
from stepline.server._serve import Server

from ..driver import ENV, SERVE, Driver, Event, lifecycle_ok

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="process groups, /proc")

_TIMES: Final = frozenset({"ts", "elapsed", "created", "started", "ended"})
_OFF: Final = {**ENV, "STEPLINE_RUN_LANE": "0"}
_NO_C: Final = {**ENV, "STEPLINE_NO_C": "1"}  # the lane with the Python start (runners/_pool.py)
_PATHS: Final = [ENV, _NO_C, _OFF]
_PATH_IDS: Final = ["lane", "lane-python-start", "worker-path"]


@asynccontextmanager
async def _serve(*args: str, env: dict[str, str] = ENV) -> AsyncIterator[Driver]:
    proc = await trio.lowlevel.open_process(
        [*SERVE, "--heartbeat", "0", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    driver = Driver(proc)
    try:
        with trio.fail_after(60):
            assert (await driver.next_event())["event"] == "ready"
            yield driver
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


class InProcess:
    """A real :class:`Server` on memory streams, for tests that look inside the process."""

    def __init__(self, config: Config) -> None:
        self._stdin, stdin = trio.testing.memory_stream_one_way_pair()
        self._stdout, self._stdout_receive = trio.testing.memory_stream_one_way_pair()
        self.server = Server(config, stdin, self._stdout, handle_signals=False)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[trio.abc.SendStream]:
        """The server runs (its stdout drained) while the body feeds its stdin; the body
        closes stdin, and on leaving the server has ended with exit status 0."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._drain)
            nursery.start_soon(self._run)
            yield self._stdin

    async def _run(self) -> None:
        assert await self.server.run() == 0
        await self._stdout.aclose()

    async def _drain(self) -> None:
        while await self._stdout_receive.receive_some():
            pass


def _timeless(ev: Any) -> Any:
    """``ev`` with every time replaced, keeping the key order (a list of pairs)."""
    if isinstance(ev, dict):
        return [(k, None if k in _TIMES else _timeless(v)) for k, v in ev.items()]
    if isinstance(ev, list):
        return [_timeless(v) for v in ev]
    return ev


def _run(argv: list[str], **fields: Any) -> dict[str, Any]:
    return {"run": argv, **fields}


# Lane jobs (silent or not, failing, missing, streamed, in a cwd, with env) and jobs the lane
# leaves to the worker path (limits, stdin, a timeout, a sequence), mixed.
_JOBS: Final[list[dict[str, Any]]] = [
    {"job": _run(["true"])},
    {"job": _run(["sh", "-c", "echo out; echo err >&2"]), "id": 7},
    {"job": _run(["sh", "-c", "exit 3"]), "name": "three"},
    {"job": _run(["no-such-program-here"]), "id": "missing"},
    {"job": _run(["sh", "-c", "printf 'a\\nb'"], stream=True)},
    {"job": _run(["sh", "-c", "echo $X; pwd"], env={"X": "y"}, cwd="/")},
    {"job": _run(["sh", "-c", "kill -TERM $$"])},
    {"job": _run(["sleep", "0.05"])},
    {"job": _run(["false"]), "name": "f", "id": 15},
    {"job": _run(["sh", "-c", "echo in-a-file > f; ls"])},
    {"job": _run(["true"], limits={"files": 64})},
    {"job": _run(["cat"], stdin="fed\n")},
    {"job": {**_run(["true"]), "timeout": 30}},
    {"job": {"steps": [_run(["echo", "seq"])]}},
    {"job": _run(["sh", "-c", "echo $STEPLINE_TREE | grep -c ."], stream=False)},
]


async def _answers(env: dict[str, str]) -> tuple[dict[str, list[Any]], list[Any]]:
    """Each job's events (timeless), and the ``status`` and ``stats`` answers once all ended."""
    async with _serve("--workers", "3", env=env) as driver:
        for round_ in range(3):  # a first round before the workspace pool has directories
            await driver.send(*({"op": "submit", **job} for job in _JOBS))
            for _ in _JOBS:
                await driver.wait_for("finished")
            del round_
        # every job's log as `logs` pages it (a lane job's log is made at its first line)
        await driver.send(*({"op": "logs", "job": f"j{n}"} for n in range(1, 3 * len(_JOBS) + 1)))
        await driver.send({"op": "logs", "job": "j1", "after": 5})
        await driver.send({"op": "status"}, {"op": "stats", "id": "s"})
        await driver.close_stdin()
        events = [*driver.events, *(await driver.rest())]
    lifecycle_ok([e for e in events if e["event"] != "logs"])
    per_job: dict[str, list[Any]] = {}
    for ev in events:
        if "job" in ev and ev["event"] not in ("status", "logs"):
            per_job.setdefault(ev["job"], []).append(_timeless(ev))
    closing = [_timeless(e) for e in events if e["event"] in ("logs", "status", "stats")]
    return per_job, closing


async def test_the_lane_answers_as_the_worker_path() -> None:
    """With either start (C where built, and Python), the same answers as the worker path's."""
    lane, lane_closing = await _answers(ENV)
    python_start, python_start_closing = await _answers(_NO_C)
    general, general_closing = await _answers(_OFF)
    assert lane == python_start == general
    assert lane_closing == python_start_closing == general_closing
    assert len(lane) == 3 * len(_JOBS)


@pytest.mark.parametrize("env", _PATHS, ids=_PATH_IDS)
async def test_lane_jobs_keep_the_workers_bound_and_start_in_order(env: dict[str, str]) -> None:
    # lane jobs (a silent end on the thread, or a task) and worker-path jobs (limits), mixed:
    # a lane job's end starts the queue's next job in the hand-over, or hands it to a worker
    mix = [_run(["true"]), _run(["sleep", "0.05"]), _run(["true"], limits={"files": 64})]
    async with _serve("--workers", "2", "--queue", "4", env=env) as driver:
        for n in range(24):  # more than workers plus queue: some are refused
            await driver.send({"op": "submit", "job": mix[n % 3]})
        await driver.close_stdin()
        events = [*driver.events, *(await driver.rest())]
    lifecycle_ok(events)
    assert _most_running(events) <= 2
    accepted = [e["job"] for e in events if e["event"] == "accepted"]
    started = [e["job"] for e in events if e["event"] == "started"]
    assert sorted(started) == sorted(accepted)  # every accepted job ran
    # in queue order: only jobs handed to workers woken together may start in another order
    # (trio runs woken tasks in any order), so none is more than a worker's place off
    assert all(abs(started.index(job) - n) < 2 for n, job in enumerate(accepted))
    assert all(e["state"] == "succeeded" for e in events if e["event"] == "finished")


# A lane job that changes its workspace (pooled, found fit before, and then spared the read
# while its inotify watch reports nothing: engine/_dir_watch.py), in each way the fitness check
# looks for; and a check, as a shell line (validate_job's short way), of the directory a job gets.
_CHECK: Final = {"run": "ls -A | wc -l; stat -c %a ."}
_CHANGES: Final = ["touch f", "mkdir d", "chmod 755 .", "ln -s / l", "mkdir d; rmdir d"]


@pytest.mark.parametrize("env", [ENV, _OFF], ids=["lane", "worker-path"])
async def test_every_job_gets_an_empty_private_workspace(env: dict[str, str]) -> None:
    async with _serve("--workers", "2", env=env) as driver:
        for _ in range(3):  # the first jobs make the directories; the later ones reuse them
            for change in _CHANGES:
                await driver.send(*({"op": "submit", "job": _CHECK} for _ in range(2)))
                await driver.send({"op": "submit", "job": _run(["sh", "-c", change])})
                for _ in range(3):
                    await driver.wait_for("finished")
        await driver.close_stdin()
        events = [*driver.events, *(await driver.rest())]
    lifecycle_ok(events)
    finished = [e for e in events if e["event"] == "finished"]
    assert all(e["state"] == "succeeded" for e in finished)
    rounds = 3 * len(_CHANGES)  # the changes print nothing; every check, an empty 0700 dir
    assert sorted(e["output"]["stdout"] for e in finished) == [""] * rounds + ["0\n700\n"] * (
        2 * rounds
    )


def _most_running(events: list[Event]) -> int:
    running: set[str] = set()
    most = 0
    for ev in events:
        if ev["event"] == "started":
            running.add(ev["job"])
            most = max(most, len(running))
        elif ev["event"] == "finished":
            running.discard(ev["job"])
    return most


async def test_idle_workers_wait_while_lane_jobs_hold_every_slot() -> None:
    """Workers idle on an empty queue, two lane jobs started at their submit take both slots:
    the third job, handed to an idle worker by the queue, waits for a slot."""
    async with _serve("--workers", "2") as driver:
        await driver.send(*({"op": "submit", "job": _run(["true"])} for _ in range(2)))
        for _ in range(2):  # their workspaces go back to the pool: the next jobs take the lane
            await driver.wait_for("finished")
        await driver.send(*({"op": "submit", "job": _run(["sleep", "0.3"])} for _ in range(3)))
        await driver.close_stdin()
        events = [*driver.events, *(await driver.rest())]
    lifecycle_ok(events)
    assert _most_running(events) == 2
    assert all(e["state"] == "succeeded" for e in events if e["event"] == "finished")


def _alive(marker: str) -> list[int]:
    """Processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("env", _PATHS[:2], ids=_PATH_IDS[:2])
@pytest.mark.parametrize("when", ["at-once", "after-start"])
async def test_cancel_stops_a_running_lane_job(when: str, env: dict[str, str]) -> None:
    # a silent sleep: on its spawner's brief wait when cancelled at once, in a task after
    seconds = "30.4242" if when == "at-once" else "30.4343"
    seconds += "1" if env is _NO_C else ""  # its own, should the two ever overlap
    async with _serve("--workers", "2", env=env) as driver:
        await driver.send({"op": "submit", "job": _run(["sleep", seconds]), "id": "s"})
        started = await driver.wait_for("started")
        if when == "after-start":
            with trio.fail_after(30):
                while not _alive(seconds):
                    await trio.sleep(0.01)
        await driver.send({"op": "cancel", "job": started["job"]})
        finished = await driver.wait_for("finished")
        assert finished["state"] == "cancelled"
        assert finished["error"]["type"] == "cancelled"
        assert finished["id"] == "s"
        assert not _alive(seconds)  # the group was stopped before `finished`
        await driver.send({"op": "status", "job": started["job"]})
        status = await driver.wait_for("status")
        assert status["jobs"][0]["state"] == "cancelled"
        await driver.close_stdin()
        await driver.rest()


async def test_a_drain_waits_for_lane_jobs_and_a_cancelling_shutdown_stops_them() -> None:
    async with _serve("--workers", "2") as driver:
        await driver.send(*({"op": "submit", "job": _run(["sleep", "0.2"])} for _ in range(4)))
        await driver.close_stdin()  # EOF: drain
        events = [*driver.events, *(await driver.rest())]
    lifecycle_ok(events)
    finished = [e for e in events if e["event"] == "finished"]
    assert [e["state"] for e in finished] == ["succeeded"] * 4
    assert events[-1]["event"] == "bye"

    async with _serve("--workers", "2") as driver:
        await driver.send(*({"op": "submit", "job": _run(["sleep", "30.5151"])} for _ in range(3)))
        await driver.wait_for("started")
        await driver.wait_for("started")
        driver.signal(signal.SIGTERM)  # a cancelling shutdown
        events = [*driver.events, *(await driver.rest())]
        assert await driver.proc.wait() == 0
    lifecycle_ok(events)
    states = sorted(e["state"] for e in events if e["event"] == "finished")
    assert states == ["cancelled"] * 3
    assert not _alive("30.5151")


async def test_plain_run_jobs_finish_outside_every_worker_task() -> None:
    """The lane is taken: a silent job finishes in the spawners' hand-over, not in a worker
    (on the worker path every job finishes in a worker's task)."""
    served = InProcess(Config(workers=2, heartbeat=0))
    server = served.server
    finished_in: list[str] = []
    batch = trio.Event()

    def where(job: Job, finished: Event) -> None:
        finished_in.append(trio.lowlevel.current_task().name)
        if not len(finished_in) % 20:
            batch.set()

    server.executor.on_finish(where)

    async with served.running() as stdin_send:
        line = b'{"op":"submit","job":{"run":["true"]}}\n'
        with trio.fail_after(60):
            # under heavy load a `true` may outlast the spawner's wait: try until one did not
            while all("_worker" in name for name in finished_in) and len(finished_in) < 400:
                batch = trio.Event()
                await stdin_send.send_all(line * 20)
                await batch.wait()
        await stdin_send.aclose()
    assert any("_worker" not in name for name in finished_in), finished_in[:5]


async def test_an_ended_lane_job_leaves_no_cycle_for_the_collector() -> None:
    """With ``--keep 0`` a finished job's record (and its output) is freed at once: nothing of
    a lane job (its scope, process, launch and sink) may hold it in a reference cycle, which
    only a collection frees (``test_memory_bounds.py`` saw 577 MiB pile up that way)."""
    served = InProcess(Config(workers=2, heartbeat=0, keep=0))
    server = served.server
    lines = [
        b'{"op":"submit","job":{"run":["true"]}}\n',
        b'{"op":"submit","job":{"run":"echo x"}}\n',
    ]

    gc.collect()
    gc.disable()
    try:
        async with served.running() as stdin_send:
            with trio.fail_after(60):
                await stdin_send.send_all(b"".join(lines) * 20)
                await stdin_send.aclose()
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = [o for o in gc.garbage if isinstance(o, Job)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert server.executor.stats()["finished"]["succeeded"] == 40
    assert not cyclic, f"{len(cyclic)} job records were freed only by the collector"


async def test_a_bug_in_a_lane_start_fails_that_job_and_the_server_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stepline.runners import _local

    real_start = _local.LocalRunner.start
    starts: list[str] = []

    def broken_third(runner: _local.LocalRunner, launch: Any) -> _local.LocalProcess:
        starts.append(launch.argv[0])
        if len(starts) == 3:
            raise RuntimeError("boom")
        return real_start(runner, launch)

    monkeypatch.setattr(_local.LocalRunner, "start", broken_third)
    served = InProcess(Config(workers=2, heartbeat=0))
    server = served.server
    finished: dict[str, Event] = {}
    two = trio.Event()

    def note(job: Job, event: Event) -> None:
        finished[job.id] = event
        if len(finished) == 2:
            two.set()

    server.executor.on_finish(note)
    line = b'{"op":"submit","job":{"run":["true"]}}\n'

    with trio.fail_after(60):
        async with served.running() as stdin_send:
            await stdin_send.send_all(line * 2)  # the worker path: their directories pooled
            await two.wait()
            await stdin_send.send_all(line * 2)  # the lane: the first start fails
            await stdin_send.aclose()
    assert starts == ["true"] * 4
    assert finished["j3"]["state"] == "failed"
    assert finished["j3"]["error"]["type"] == "internal"
    assert [finished[j]["state"] for j in ("j1", "j2", "j4")] == ["succeeded"] * 3
