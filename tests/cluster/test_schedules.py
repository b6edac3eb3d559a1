"""Schedules across real nodes: one schedule, several nodes, each slot fired exactly once."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio

from tests.cluster.conftest import with_user
from tests.cluster.nodes import live_nodes, serve_node, sql, worker_node

pytestmark = pytest.mark.e2e


async def _firings(url: str, count: int) -> None:
    """Wait until ``count`` slots have been fired."""
    while sql(url, "SELECT count(*) FROM stepline_firings")[0][0] < count:
        await trio.sleep(0.1)


async def test_one_schedule_on_three_nodes_fires_once_per_slot_through_a_kill_and_a_pause(
    cluster_url,
):
    lease = ("--lease", "2")
    async with (
        serve_node(cluster_url, "--lease", "6") as a,
        worker_node(cluster_url, *lease) as b,
        worker_node(cluster_url, *lease) as c,
    ):
        await live_nodes(cluster_url, 3)
        workers = {_node_of(cluster_url, p.pid): p for p in (b, c)}
        job = {"steps": [{"value": 1}]}
        await a.send({"op": "schedule", "id": "s", "every": 1, "overlap": "allow", "job": job})
        sid = (await a.wait_for("scheduled", id="s"))["schedule"]
        with trio.fail_after(60):
            await _firings(cluster_url, 2)
            a.signal(signal.SIGSTOP)  # the owner paused (within its lease): the others fire
            await trio.sleep(2.5)
            a.signal(signal.SIGCONT)
            fired_by = [r[0] for r in sql(cluster_url, _BY_NODE) if r[0] in workers]
            victim = fired_by[0]  # a node that fires, killed mid-way
            workers.pop(victim).send_signal(signal.SIGKILL)
            await _firings(cluster_url, _count(cluster_url) + 3)
            ((stale, paused),) = workers.items()
            paused.send_signal(signal.SIGSTOP)  # paused past its lease, then back: stale
            (paused_at,) = sql(cluster_url, "SELECT now()")[0]
            await trio.sleep(3)
            paused.send_signal(signal.SIGCONT)
            await _firings(cluster_url, _count(cluster_url) + 3)
            rows = sql(cluster_url, "SELECT slot, node, job, fired FROM stepline_firings")
            await a.send({"op": "unschedule", "id": "u", "schedule": sid})
            await a.wait_for("unscheduled", id="u")
            (fired,) = sql(cluster_url, "SELECT count(*) FROM stepline_jobs")[0]
            await _finished(a, fired)
    # Every slot from the first to the last fired once (the primary key forbids twice), with no
    # gap through the pause, the kill and the stale node; the stale node fired nothing more.
    slots = sorted(row[0] for row in rows)
    assert slots == list(range(slots[0], slots[0] + 1000 * len(slots), 1000)), slots
    assert not [r for r in rows if r[1] == stale and r[3] > paused_at], (stale, rows)
    accepted = [e for e in a.events if e["event"] == "accepted"]
    assert all(e["schedule"] == sid for e in accepted)
    assert len(accepted) == fired >= len(rows) >= 8
    assert {f"j{r[2]}" for r in rows} <= {e["job"] for e in accepted}
    for ev in accepted:
        mine = [e for e in a.events if e.get("job") == ev["job"]]
        _check_lifecycle(mine, {victim, stale})


def _check_lifecycle(events: list[dict[str, Any]], lost: set[int]) -> None:
    """Each fired job is accepted, started and finished once, unless a node that lost its lease
    (the killed one, the stale one) held it: then the rescue says ``recovered``, naming that
    node, and the job starts once more (a claimed job may not have started yet)."""
    names = [e["event"] for e in events]
    if "recovered" not in names:
        assert names == ["accepted", "started", "finished"], names
        return
    (recovered,) = [e for e in events if e["event"] == "recovered"]
    assert recovered["node"] in lost, recovered
    assert recovered["action"] == "rerun", recovered
    cut = names.index("recovered")
    assert names[:cut] in (["accepted"], ["accepted", "started"]), names
    assert names[cut + 1 :] == ["started", "finished"], names


_BY_NODE = "SELECT node FROM stepline_firings ORDER BY slot DESC"


def _count(url: str) -> int:
    return int(sql(url, "SELECT count(*) FROM stepline_firings")[0][0])


async def _finished(driver, count: int) -> None:
    while sum(e["event"] == "finished" for e in driver.events) < count:
        await driver.wait_for("finished")


def _node_of(url: str, pid: int) -> int:
    return int(sql(url, "SELECT id FROM stepline_nodes WHERE pid = %s", pid)[0][0])


async def test_schedules_are_listed_and_ended_from_any_node_and_end_with_their_owner(
    cluster_url,
):
    job = {"steps": [{"value": 1}]}
    async with serve_node(cluster_url) as b:
        async with serve_node(cluster_url) as a:
            owner = a.events[0]["node"]
            await a.send({"op": "schedule", "id": 1, "every": 3600, "job": job})
            first = (await a.wait_for("scheduled", id=1))["schedule"]
            await b.send({"op": "status", "id": "st"}, {"op": "stats", "id": "sx"})
            listed = (await b.wait_for("status", id="st"))["schedules"]
            counted = (await b.wait_for("stats", id="sx"))["schedules"]
            await b.send(
                {"op": "unschedule", "id": "u", "schedule": first},
                {"op": "unschedule", "id": "u2", "schedule": first},
                {"op": "schedule", "id": "bad", "every": 0.001, "job": job},
            )
            await b.wait_for("unscheduled", id="u")
            again = await b.wait_for("error", id="u2")
            bad = await b.wait_for("error", id="bad")
            await a.send({"op": "status", "id": "st2"})
            after = (await a.wait_for("status", id="st2"))["schedules"]
            slow = {"steps": [{"sleep": 1.5}]}  # longer than the period: always one running
            await a.send({"op": "schedule", "id": 2, "job": slow, "every": 1, "overlap": "allow"})
            second = (await a.wait_for("scheduled", id=2))["schedule"]
            with trio.fail_after(30):
                await a.wait_for("accepted")
                await a.wait_for("accepted")
                await a.close_stdin()  # the owner shuts down: its schedules end for every node
                rest = await a.rest()
            assert rest[-1]["event"] == "bye"
            fired = [e["job"] for e in a.events if e["event"] == "accepted"]
            ended = [e["job"] for e in a.events if e["event"] == "finished"]
            assert sorted(fired) == sorted(ended)  # every firing waited for, none after
        await b.send({"op": "status", "id": "st3"})
        left = (await b.wait_for("status", id="st3"))["schedules"]
    assert [(s["schedule"], s["node"], s["every"]) for s in listed] == [(first, owner, 3600)]
    assert counted == 1
    assert again["code"] == "unknown_schedule"
    assert bad["code"] == "bad_command"
    assert after == []
    assert second != first
    assert left == []


_NOW = "SELECT extract(epoch FROM clock_timestamp())::float8"
_SLOTS_FIRED = "SELECT slot, extract(epoch FROM fired)::float8 FROM stepline_firings ORDER BY slot"


async def test_a_slot_missed_while_the_database_was_away_fires_once_late(cluster_url, tmp_path):
    cut_user = f"away_{tmp_path.name[-8:].replace('-', '_')}".lower()
    try:
        sql(cluster_url, f'CREATE ROLE "{cut_user}" LOGIN IN ROLE CURRENT_USER')
    except Exception as exc:  # an outside server may refuse CREATE ROLE
        pytest.skip(f"cannot create a role to cut off: {exc}")
    async with serve_node(with_user(cluster_url, cut_user)) as a:
        job = {"steps": [{"value": 1}]}
        await a.send({"op": "schedule", "id": "s", "every": 1, "overlap": "allow", "job": job})
        sid = (await a.wait_for("scheduled", id="s"))["schedule"]
        with trio.fail_after(60):
            await _firings(cluster_url, 2)
            sql(cluster_url, f'ALTER ROLE "{cut_user}" NOLOGIN')
            sql(
                cluster_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                cut_user,
            )
            (cut_at,) = sql(cluster_url, _NOW)[0]  # from here the node can fire nothing
            await trio.sleep(3.5)  # three slots or more pass; the lease (10 s) holds
            (back_at,) = sql(cluster_url, _NOW)[0]
            sql(cluster_url, f'ALTER ROLE "{cut_user}" LOGIN')
            await _firings(cluster_url, _count(cluster_url) + 2)
            rows = sql(cluster_url, _SLOTS_FIRED)
            await a.send({"op": "unschedule", "id": "u", "schedule": sid})
            # Its command connection was closed by the server while idle: a new one answers.
            reply = await a.wait_until(lambda e: e.get("id") == "u")
    assert reply["event"] == "unscheduled", reply
    # Of the three or more slots due while the database was away, one fired, once it was back.
    missed = [(slot, fired) for slot, fired in rows if cut_at < slot / 1000 < back_at]
    assert len(missed) == 1, (cut_at, back_at, rows)
    assert missed[0][1] > back_at, (cut_at, back_at, rows)
