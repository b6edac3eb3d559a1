"""``stepline serve --state``: accepted jobs survive a crash.

The end-to-end tests SIGKILL a real ``stepline serve`` and start it again on the same file, as an
operator would; the in-process tests check the store's batching directly.
"""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import pytest
import trio

from stepline import Config, Executor, StoreFailed
from stepline.store import MemoryBackend, Store

from ..conftest import MemoryOutbox
from ..driver import Driver, Event, lifecycle_ok, run_cli, serve

SLEEP = 2.5  # seconds the "long" subprocess jobs run: long enough to kill them mid-run
RECORDED = 0.5  # ample time for a `running` record to be committed (it takes milliseconds)


def by_event(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


def fresh(before: list[Event], after: list[Event]) -> list[Event]:
    """``after`` without the copies of logged events ``before`` had already written: an event
    written just before a crash may be written again after it, with the same ``seq``."""
    seen = {e["seq"] for e in before if "seq" in e}
    return [e for e in after if e.get("seq") not in seen]


def submit(job: Any, **fields: Any) -> dict[str, Any]:
    return {"op": "submit", "job": job, **fields}


async def kill_and_collect(driver: Driver) -> list[Event]:
    """SIGKILL the server and return every event it wrote (the pipe keeps what was written)."""
    driver.signal(signal.SIGKILL)
    await driver.rest()
    assert driver.proc.returncode in (None, -signal.SIGKILL)
    return driver.events


async def wait_count(driver: Driver, name: str, count: int) -> None:
    """Read events until ``count`` events named ``name`` were seen in this run, in all."""
    while len(by_event(driver.events, name)) < count:
        await driver.next_event()


async def drain(driver: Driver) -> list[Event]:
    """Close stdin (EOF: drain) and return every event of the run, through `bye`."""
    await driver.close_stdin()
    await driver.rest()
    assert driver.events[-1]["event"] == "bye", driver.events[-3:]
    return driver.events


def rows(state: Path, query: str) -> list[tuple[Any, ...]]:
    """Query the state file (closing at once: an open connection holds it "in use")."""
    with closing(sqlite3.connect(state)) as conn:
        return conn.execute(query).fetchall()


# -- the crash test ----------------------------------------------------------------------------


async def test_sigkill_mid_run_then_restart_finishes_every_job_exactly_once(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    quick = [submit({"value": i}) for i in range(8)]  # finished before the kill
    long = [submit({"run": ["sleep", str(SLEEP)]}) for _ in range(4)]  # running at the kill
    rest = [submit({"steps": [{"sleep": 0.01}, {"value": i}]}) for i in range(28)]  # queued
    async with serve(
        "--state", str(state), "--workers", "4", "--queue", "64", "--heartbeat", "0", deadline=60
    ) as first:
        await first.send(*quick)
        await wait_count(first, "finished", len(quick))
        await first.send(*long, *rest)
        await wait_count(first, "accepted", 40)
        # the 4 subprocess jobs are running, on every worker: nothing is about to finish
        await wait_count(first, "started", len(quick) + len(long))
        await trio.sleep(RECORDED)  # with `rerun`, steps do not wait for the `running` record
        run1 = await kill_and_collect(first)

    accepted1 = [e["job"] for e in by_event(run1, "accepted")]
    assert len(accepted1) == 40
    finished1 = Counter(e["job"] for e in by_event(run1, "finished"))
    assert len(finished1) >= len(quick)
    unfinished = [job for job in accepted1 if job not in finished1]
    assert len(unfinished) >= 20  # the kill really came in the middle

    async with serve(
        "--state", str(state), "--workers", "4", "--heartbeat", "0", deadline=60
    ) as second:
        await second.send(submit({"value": "new"}, id="new"))
        run2 = fresh(run1, await drain(second))

    recovered = {e["job"]: e for e in by_event(run2, "recovered")}
    assert sorted(recovered) == sorted(unfinished)  # every unfinished job, and only those
    assert {e["action"] for e in recovered.values()} == {"requeued", "rerun"}
    for e in recovered.values():
        assert (e["state"], e["action"]) in {("queued", "requeued"), ("running", "rerun")}
    running = [job for job, e in recovered.items() if e["state"] == "running"]
    assert sorted(running) == sorted(accepted1[8:12])  # the subprocess jobs cut off mid-run
    # exactly one `finished` per accepted job, across the two runs
    finished = Counter(e["job"] for e in by_event(run1 + run2, "finished"))
    new = by_event(run2, "accepted")
    assert len(new) == 1
    assert new[0]["job"] not in accepted1  # ids never repeat across restarts
    assert finished == Counter([*accepted1, new[0]["job"]])
    assert all(e["state"] == "succeeded" for e in by_event(run2, "finished"))
    # each recovered job's own events: `recovered` first, then its lifecycle goes on
    for job in unfinished:
        mine = [e["event"] for e in run2 if e.get("job") == job]
        assert mine == ["recovered", "started", "finished"], (job, mine)
    assert run2.index(recovered[unfinished[0]]) < run2.index(new[0])  # before new commands


async def test_on_restart_fail_finishes_interrupted_jobs_at_once(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    marker = tmp_path / "began"
    fail = ("--state", state, "--on-restart", "fail", "--heartbeat", "0")
    async with serve(*fail, "--workers", "1") as first:
        await first.send(submit({"run": f"touch {marker}; sleep 30"}), submit({"value": 2}))
        await first.wait_for("accepted", job="j2")
        while not marker.exists():  # with `fail`, steps begin once `running` is on disk
            await trio.sleep(0.02)
        run1 = await kill_and_collect(first)

    async with serve(*fail) as second:
        events = fresh(run1, await drain(second))
    assert [(e["job"], e["state"], e["action"]) for e in by_event(events, "recovered")] == [
        ("j1", "running", "failed"),
        ("j2", "queued", "requeued"),
    ]
    fin = {e["job"]: e for e in by_event(events, "finished")}
    assert fin["j1"]["state"] == "failed"
    assert fin["j1"]["error"]["type"] == "interrupted"
    assert fin["j1"]["elapsed"] == 0
    assert fin["j2"]["output"] == 2
    assert not [e for e in events if e.get("job") == "j1" and e["event"] == "started"]


async def test_on_restart_rerun_runs_the_interrupted_job_again(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    marker = tmp_path / "runs"
    # the first run hangs (and is killed); the rerun sees the marker's first line and ends
    job = {"run": f"echo x >> {marker}; [ $(wc -l < {marker}) -ge 2 ] || sleep 30"}
    async with serve("--state", state, "--heartbeat", "0") as first:
        await first.send(submit(job))
        await first.wait_for("started", job="j1")
        while not marker.exists():
            await trio.sleep(0.02)
        await kill_and_collect(first)

    async with serve("--state", state, "--heartbeat", "0") as second:
        events = await drain(second)
    assert by_event(events, "recovered")[0]["action"] == "rerun"
    assert by_event(events, "finished")[0]["state"] == "succeeded"
    assert marker.read_text() == "x\nx\n"  # at least once: it ran in both runs


# -- what comes back ---------------------------------------------------------------------------


def test_templates_status_and_ids_survive_a_restart(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    tpl = {"params": {"x": 1}, "steps": [{"value": "${params.x}"}]}
    events, rc, stderr = run_cli(
        [
            {"op": "define", "name": "t", "job": tpl},
            {"op": "submit", "template": "t", "params": {"x": 7}, "name": "seven"},
            {"op": "submit", "job": {"fail": "boom"}},
        ],
        "--state",
        state,
    )
    assert rc == 0, stderr
    assert [e["job"] for e in by_event(events, "accepted")] == ["j1", "j2"]
    lifecycle_ok(events)

    events, rc, stderr = run_cli(
        [
            {"op": "status", "id": "s1", "job": "j1"},
            {"op": "status", "id": "s2", "job": "j2"},
            {"op": "submit", "template": "t"},
        ],
        "--state",
        state,
    )
    assert rc == 0, stderr
    s1, s2 = by_event(events, "status")
    assert s1["jobs"] == [
        {
            "job": "j1",
            "state": "succeeded",
            "name": "seven",
            "elapsed": s1["jobs"][0]["elapsed"],
            "created": None,  # times are not stored: a restored record does not know them
            "started": None,
            "ended": None,
            "output": 7,
        }
    ]
    assert s2["jobs"][0]["error"]["message"] == "boom"
    assert by_event(events, "accepted")[0]["job"] == "j3"  # the template, and the next id
    assert by_event(events, "finished")[0]["output"] == 1
    assert not by_event(events, "recovered")


async def test_a_recovered_job_keeps_the_template_it_was_accepted_with(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    marker = tmp_path / "began"
    fail = ("--state", state, "--on-restart", "fail", "--heartbeat", "0")
    async with serve(*fail, "--workers", "1") as first:
        await first.send(
            {"op": "define", "name": "t", "job": {"steps": [{"value": "old"}]}},
            submit({"run": f"touch {marker}; sleep 30"}),  # keeps j2 queued
            submit({"use": "t"}),
            {"op": "define", "name": "t", "job": {"steps": [{"value": "new"}]}, "id": "d2"},
        )
        await first.wait_for("defined", id="d2")
        while not marker.exists():  # j1's `running` is on disk: it will not run again
            await trio.sleep(0.02)
        await kill_and_collect(first)
    async with serve(*fail) as second:
        await second.send(submit({"use": "t"}))
        events = await drain(second)
    fin = {e["job"]: e for e in by_event(events, "finished")}
    assert fin["j2"]["output"] == "old"  # accepted before the redefinition
    assert fin["j3"]["output"] == "new"  # the redefinition itself survived too


def test_keep_bounds_finished_records_on_disk_and_in_memory(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    jobs = [submit({"value": i}) for i in range(10)]
    _, rc, stderr = run_cli(jobs, "--state", str(state), "--keep", "3", "--workers", "1")
    assert rc == 0, stderr
    assert rows(state, "SELECT count(*) FROM jobs") == [(3,)]

    events, rc, _ = run_cli([{"op": "status"}], "--state", str(state), "--keep", "3")
    assert sorted(r["job"] for r in by_event(events, "status")[0]["jobs"]) == ["j10", "j8", "j9"]

    events, rc, _ = run_cli([{"op": "status"}], "--state", str(state), "--keep", "1")
    assert [r["job"] for r in by_event(events, "status")[0]["jobs"]] == ["j10"]
    assert rows(state, "SELECT id FROM jobs") == [("j10",)]

    events, _, _ = run_cli([submit({"value": 0})], "--state", str(state), "--keep", "0")
    assert by_event(events, "accepted")[0]["job"] == "j11"  # the counter outlives the records
    assert rows(state, "SELECT count(*) FROM jobs") == [(0,)]


# -- the protocol is unchanged by --state --------------------------------------------------------


def replies(events: list[Event]) -> list[tuple[Any, ...]]:
    """The answers to commands, in order (job events interleave with them by timing)."""
    return [
        (e["event"], e.get("id"), e.get("code"), e.get("job"))
        for e in events
        if e["event"] in ("accepted", "error", "status", "pong", "defined")
    ]


@pytest.mark.parametrize("queue", ["2", "64"])
def test_replies_keep_command_order_with_state(tmp_path: Path, queue: str) -> None:
    commands: list[Any] = []
    for i in range(30):
        commands.append(submit({"value": i}, id=i))
        if i % 7 == 3:
            commands.append(submit({"sleep": "x"}, id=f"bad{i}"))
        if i % 11 == 5:
            commands.append(b"{not json\n")
        if i % 13 == 0:
            commands.append({"op": "ping", "id": f"p{i}"})
    commands.append({"op": "define", "id": "d", "name": "t", "job": {"steps": [{"value": 1}]}})
    commands.append({"op": "submit", "template": "t", "id": "t"})
    plain, rc1, _ = run_cli(commands, "--queue", queue)
    durable, rc2, _ = run_cli(commands, "--queue", queue, "--state", str(tmp_path / "state.db"))
    assert rc1 == rc2 == 0
    assert replies(durable) == replies(plain)
    lifecycle_ok(durable)


async def test_sigterm_with_state_cancels_and_leaves_nothing_to_recover(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    async with serve("--state", str(state), "--heartbeat", "0") as d:
        await d.send(*[submit({"run": ["sleep", "30"]}) for _ in range(6)])
        await wait_count(d, "started", 4)
        d.signal(signal.SIGTERM)
        await d.rest()
        events = d.events
    lifecycle_ok(events)
    assert {e["state"] for e in by_event(events, "finished")} == {"cancelled"}
    assert events[-1]["event"] == "bye"
    again, rc, _ = run_cli([], "--state", str(state))
    assert rc == 0
    assert not by_event(again, "recovered")


# -- in process: group commit ------------------------------------------------------------------


@asynccontextmanager
async def attached(store: Store, config: Config) -> AsyncIterator[tuple[Executor, MemoryOutbox]]:
    """An executor on ``config`` with ``store`` attached, both running; on leaving, drained,
    then the store closed (which, failing, gives up after a few attempts)."""
    outbox = MemoryOutbox()
    executor = Executor(config, outbox)
    store.attach(executor)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(executor.run)
        yield executor, outbox
        executor.shutdown("drain")
        await executor.closed.wait()
        await store.aclose()


async def test_concurrent_submits_share_commits(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db", keep=10)
    jobs = 200
    config = Config(workers=2, queue_size=500, heartbeat=0)
    async with attached(store, config) as (executor, outbox), trio.open_nursery() as submitters:
        for i in range(jobs):
            submitters.start_soon(executor.submit, {"value": i})
    assert len(by_event(outbox.events, "finished")) == jobs
    assert store.commits < jobs / 4  # the accepts rode together, and so did the updates
    assert rows(tmp_path / "state.db", "SELECT count(*) FROM jobs") == [(10,)]


@pytest.mark.parametrize("write_ahead_start", [False, True])
async def test_a_durable_job_that_completes_at_once_needs_no_worker(
    write_ahead_start: bool,
) -> None:
    """Once its record is committed, a job that completes at once runs where it was accepted
    (as without ``--state``); its ``running`` and outcome reach the file in one later commit,
    and its ``started`` and ``finished`` are written only after it. Not under ``--on-restart
    fail``, where steps wait for their start's commit (a worker does that)."""
    backend = MemoryBackend()
    store = await Store.open(backend, write_ahead_start=write_ahead_start)
    async with attached(store, Config(workers=1, heartbeat=0)) as (executor, outbox):
        job = await executor.submit({"value": 7})
        assert job.state.value == ("queued" if write_ahead_start else "succeeded")
        assert by_event(outbox.events, "finished") == []  # its outcome is not durable yet
        assert backend.jobs[job.id][2] == "queued"
        await outbox.finished(job.id)
        assert backend.jobs[job.id][2] == "succeeded"
    lifecycle_ok(outbox.events)


async def test_a_failing_store_refuses_submits_holds_outcomes_and_recovers(
    autojump_clock: trio.abc.Clock,
) -> None:
    backend = MemoryBackend()
    store = await Store.open(backend)
    async with attached(store, Config(workers=1, heartbeat=0)) as (executor, outbox):
        running = await executor.submit({"sleep": 0.2})
        await outbox.wait_for(lambda e: e["event"] == "started")
        backend.failing = OSError("disk full")
        with pytest.raises(StoreFailed, match="cannot be written"):
            await executor.submit({"value": 1})  # withdrawn from the failed batch: refused
        await trio.sleep(10)  # the job has finished, but its outcome is not on disk...
        assert running.state.value == "succeeded"
        assert by_event(outbox.events, "finished") == []  # ...so nothing says it is
        with pytest.raises(StoreFailed):
            await executor.submit({"value": 2})  # refused at once while the disk is full
        backend.failing = None  # space frees: the retried batch is committed, then written
        await outbox.finished(running.id)
        later = await executor.submit({"value": 3})  # and the store takes submits again
        await outbox.finished(later.id)
    assert [e["job"] for e in by_event(outbox.events, "accepted")] == [running.id, later.id]
    assert {job[2] for job in backend.jobs.values()} == {"succeeded"}  # j2 was never stored
    lifecycle_ok(outbox.events)


async def test_a_store_still_failing_at_close_writes_nothing_it_could_not_record(
    autojump_clock: trio.abc.Clock,
) -> None:
    backend = MemoryBackend()
    store = await Store.open(backend)
    async with attached(store, Config(workers=1, heartbeat=0)) as (executor, outbox):
        job = await executor.submit({"sleep": 0.2})
        await outbox.wait_for(lambda e: e["event"] == "started")
        backend.failing = OSError("disk full")
    assert by_event(outbox.events, "finished") == []  # not on disk: not said
    backend.failing = None
    again = await Store.open(backend)  # the next start recovers the job: one `finished` in all
    assert [(j.id, j.state) for j in again.snapshot.unfinished] == [(job.id, "running")]
