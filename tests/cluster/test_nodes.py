"""Several real nodes sharing one PostgreSQL: where jobs run, whose stdout their events reach."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import pytest
import trio

from tests.cluster.nodes import live_nodes, serve_node, sql, worker_node
from tests.driver import Event

pytestmark = pytest.mark.e2e

SURVIVOR_LEASE = 6.0
"""The lease of a node a test needs alive to the end: long enough that a loaded machine (no
renewal answered within three quarters of it) does not make it stop its jobs mid-test."""


def _job(i: int, sleep: float = 0.02) -> dict[str, Any]:
    return {"steps": [{"log": f"job {i}"}, {"sleep": sleep}, {"value": i}]}


def _exactly_once(events: list[Event], jobs: set[str]) -> None:
    """Each job: one accepted, one finished (last), and nothing of its after the finished."""
    for job in jobs:
        mine = [e["event"] for e in events if e.get("job") == job and e["event"] != "cancelling"]
        assert mine[0] == "accepted", (job, mine)
        assert mine[-1] == "finished", (job, mine)
        assert mine.count("accepted") == 1
        assert mine.count("finished") == 1, (job, mine)


async def _finish_all(driver: Any, jobs: set[str]) -> None:
    done: set[str] = set()
    while done != jobs:
        ev = await driver.wait_for("finished")
        done.add(ev["job"])


async def test_jobs_submitted_on_one_node_run_on_others_and_report_to_it(cluster_url):
    async with (
        worker_node(cluster_url, "--workers", "4"),
        serve_node(cluster_url, "--workers", "1") as a,
    ):
        me = a.events[0]["node"]
        await live_nodes(cluster_url, 2)
        await a.send(*({"op": "submit", "id": i, "job": _job(i)} for i in range(40)))
        with trio.fail_after(30):
            accepted = {(await a.wait_for("accepted", id=i))["job"] for i in range(40)}
            await _finish_all(a, accepted)
            await a.close_stdin()
            rest = await a.rest()
        assert rest[-1]["event"] == "bye"
        events = a.events
        _exactly_once(events, accepted)
        where = Counter(e["node"] for e in events if e["event"] == "started")
        assert sum(where.values()) == 40
        assert set(where) - {me}, f"every job ran on the submitting node: {where}"
        logs = {e["job"] for e in events if e["event"] == "log"}
        assert logs == accepted  # the worker's log events reached the submitter too
        outputs = {e["job"]: e["output"] for e in events if e["event"] == "finished"}
        by_id = {e["id"]: e["job"] for e in events if e["event"] == "accepted"}
        assert all(outputs[by_id[i]] == i for i in range(40))
        # Every event of a job carries its submit's id, wherever the job ran (as in one process).
        submit_of = {job: i for i, job in by_id.items()}
        assert all(e["id"] == submit_of[e["job"]] for e in events if e.get("job") in submit_of)


async def test_status_stats_and_templates_span_the_cluster(cluster_url):
    async with serve_node(cluster_url) as a, serve_node(cluster_url) as b:
        template = {"params": {"x": 1}, "steps": [{"value": "${params.x}"}]}
        await a.send({"op": "define", "id": "d", "name": "t", "job": template})
        await a.wait_for("defined", id="d")
        await b.send({"op": "submit", "id": "s", "template": "t", "params": {"x": 7}})
        job = (await b.wait_for("accepted", id="s"))["job"]
        finished = await b.wait_for("finished", job=job)
        assert finished["output"] == 7
        await a.send({"op": "status", "id": "st", "job": job}, {"op": "stats", "id": "x"})
        status = await a.wait_for("status", id="st")
        assert status["jobs"][0]["state"] == "succeeded"
        assert status["jobs"][0]["output"] == 7
        stats = await a.wait_for("stats", id="x")
        assert stats["finished"]["succeeded"] == 1
        assert stats["nodes"] == 2
        await a.send(
            {"op": "status", "id": "u", "job": "j999"}, {"op": "cancel", "id": "c", "job": job}
        )
        assert (await a.wait_for("error", id="u"))["code"] == "unknown_job"
        assert (await a.wait_for("error", id="c"))["code"] == "already_finished"


async def test_cancel_from_another_node_stops_the_job_wherever_it_runs(cluster_url):
    async with serve_node(cluster_url, "--workers", "1") as a:
        async with worker_node(cluster_url, "--workers", "4"):
            me = a.events[0]["node"]
            await live_nodes(cluster_url, 2)
            await a.send(*({"op": "submit", "id": i, "job": {"sleep": 60}} for i in range(6)))
            jobs = [(await a.wait_for("accepted", id=i))["job"] for i in range(6)]
            with trio.fail_after(20):
                # Read from the start: the waits above consume what they pass, and a started
                # from the worker may come before a later job's accepted.
                seen = [e for e in a.events if e["event"] == "started" and e["node"] != me]
                elsewhere = seen[0] if seen else await a.wait_until(
                    lambda e: e["event"] == "started" and e["node"] != me
                )  # fmt: skip
                await a.send(*({"op": "cancel", "id": j, "job": j} for j in jobs))
                states: dict[str, str] = {}
                while len(states) < 6:
                    ev = await a.wait_until(lambda e: e["event"] in ("finished", "cancelling"))
                    if ev["event"] == "finished":
                        states[ev["job"]] = ev["state"]
        _exactly_once(a.events, set(jobs))  # accepted first: a started never overtakes it
        assert elsewhere["job"] in states
        assert set(states.values()) == {"cancelled"}
        rows = sql(cluster_url, "SELECT count(*) FROM stepline_jobs WHERE state <> 'cancelled'")
        assert rows == [(0,)]


async def test_a_killed_node_s_jobs_are_rescued_after_the_lease(cluster_url):
    lease = 2.0  # the victim's: how soon its jobs are rescued
    # The survivor's lease is longer: under a loaded machine a 2 s lease can lapse for the
    # survivor too (no renewal answered within 1.5 s), and then it stops its own jobs.
    async with (
        serve_node(cluster_url, "--workers", "1", "--lease", str(SURVIVOR_LEASE)) as a,
        worker_node(cluster_url, "--workers", "4", "--lease", str(lease)) as b,
    ):
        await live_nodes(cluster_url, 2)
        me = a.events[0]["node"]
        await a.send(*({"op": "submit", "id": i, "job": _job(i, sleep=1.5)} for i in range(8)))
        jobs = {(await a.wait_for("accepted", id=i))["job"] for i in range(8)}
        with trio.fail_after(20):
            victim = await a.wait_until(lambda e: e["event"] == "started" and e["node"] != me)
        b.send_signal(signal.SIGKILL)
        killed_at = trio.current_time()
        with trio.fail_after(30):
            recovered = await a.wait_for("recovered", job=victim["job"])
            rescued_after = trio.current_time() - killed_at
            await _finish_all(a, jobs - _finished(a.events))
    events = a.events
    _exactly_once(events, jobs)
    assert recovered["action"] == "rerun"
    assert recovered["id"] == _submit_of(events, victim["job"])  # the rescuer tags it too
    assert recovered["node"] == victim["node"]
    assert rescued_after <= lease + 1.5, rescued_after
    assert all(e["state"] == "succeeded" for e in events if e["event"] == "finished")
    # A job that had started on the dead node started once more, after its `recovered`.
    mine = [e["event"] for e in events if e.get("job") == victim["job"]]
    assert mine.index("recovered") < len(mine) - 1 - mine[::-1].index("started")


def _submit_of(events: list[Event], job: str) -> Any:
    return next(e["id"] for e in events if e["event"] == "accepted" and e["job"] == job)


def _finished(events: list[Event]) -> set[str]:
    return {e["job"] for e in events if e["event"] == "finished"}


async def test_a_dead_listen_connection_is_replaced_and_the_poll_covers_the_gap(cluster_url):
    async with serve_node(cluster_url, "--lease", str(SURVIVOR_LEASE), "--poll", "0.3") as a:
        me = a.events[0]["node"]
        await live_nodes(cluster_url, 1)
        name = f"stepline-listen-{me}"
        with trio.fail_after(10):
            while not (rows := _backends(cluster_url, name)):
                await trio.sleep(0.05)
            sql(cluster_url, "SELECT pg_terminate_backend(%s)", rows[0])
            await a.send({"op": "submit", "id": 1, "job": {"value": 1}})
            job = (await a.wait_for("accepted", id=1))["job"]
            await a.wait_for("finished", job=job)
            while not (again := _backends(cluster_url, name)) or again == rows:
                await trio.sleep(0.05)


def _backends(url: str, name: str) -> list[int]:
    rows = sql(url, "SELECT pid FROM pg_stat_activity WHERE application_name = %s", name)
    return [row[0] for row in rows]


async def test_a_job_cancelled_while_queued_in_the_table_finishes_with_its_submit_s_id(
    cluster_url,
):
    async with serve_node(cluster_url, "--workers", "1") as a:
        # One worker holds two jobs (one running, one waiting): the third stays in the table.
        await a.send(*({"op": "submit", "id": f"s{i}", "job": {"sleep": 60}} for i in range(3)))
        jobs = [(await a.wait_for("accepted", id=f"s{i}"))["job"] for i in range(3)]
        with trio.fail_after(20):
            while sql(
                cluster_url, "SELECT count(*) FROM stepline_jobs WHERE state = 'running'"
            ) != [(2,)]:
                await trio.sleep(0.05)
            (queued,) = sql(cluster_url, "SELECT id FROM stepline_jobs WHERE state = 'queued'")
            job = f"j{queued[0]}"
            await a.send({"op": "cancel", "id": "c", "job": job})
            finished = await a.wait_for("finished", job=job)
    assert finished["state"] == "cancelled"
    assert finished["id"] == f"s{jobs.index(job)}"
