"""``GET /events``: every protocol event as Server-Sent Events, with ids to resume from."""

from __future__ import annotations

import pytest

from .sse_client import EventStream, Message
from .test_rest import http_server

pytestmark = pytest.mark.e2e


async def test_events_stream_live_and_match_stdout() -> None:
    async with http_server() as (driver, client):
        async with EventStream(str(client.base_url)) as stream:
            assert stream.status == 200
            assert stream.content_type.startswith("text/event-stream")
            await client.post("/jobs", json={"job": {"steps": [{"log": "x"}]}})
            messages = await stream.read(4)
        kinds = [ev["event"] for _, ev in messages]
        assert kinds == ["accepted", "started", "log", "finished"]
        ids = [event_id for event_id, _ in messages]
        assert ids == list(range(ids[0], ids[0] + 4))
        await driver.wait_for("finished")
        stdout = [ev for ev in driver.events if ev.get("job") == "j1"]
        assert [ev for _, ev in messages] == stdout  # the very events stdout got


async def test_run_jobs_stream_with_their_ids() -> None:
    """Plain ``run`` jobs, finished in the spawners' hand-over by the run lane, reach
    ``/events`` as stdout has them, each event with the next id."""
    async with http_server() as (driver, client):
        for n in range(2):  # the first two make workspaces for the pool: the next take the lane
            await client.post("/jobs", json={"job": {"run": ["true"]}})
            await driver.wait_for("finished", job=f"j{n + 1}")
        async with EventStream(str(client.base_url)) as stream:
            for _ in range(3):
                await client.post("/jobs", json={"job": {"run": ["true"]}})
            # The stream starts where the front's feed is, which may be just behind stdout
            # (j2's `finished`, say): the events of the jobs before these are skipped.
            messages: list[Message] = []
            while len(messages) < 9:
                messages += [m for m in await stream.read(1) if m[1].get("job") not in ("j1", "j2")]
        ids = [event_id for event_id, _ in messages]
        assert ids == list(range(ids[0], ids[0] + 9))
        await driver.wait_for("finished", job="j5")
        while len([ev for ev in driver.events if ev["event"] == "finished"]) < 5:
            await driver.next_event()
        stdout = [ev for ev in driver.events if ev.get("job") in ("j3", "j4", "j5")]
        assert [ev for _, ev in messages] == stdout  # the very events stdout got
        assert [ev["state"] for _, ev in messages if ev["event"] == "finished"] == ["succeeded"] * 3


async def test_a_client_resumes_with_last_event_id_and_misses_nothing() -> None:
    async with http_server() as (driver, client):
        for n in range(3):
            await client.post("/jobs", json={"job": {"value": n}})
        await driver.wait_for("finished", job="j3")
        async with EventStream(str(client.base_url), {"after": "0"}) as stream:
            first = await stream.read(4)  # ready, then j1's accepted, started, finished
        assert first[0][1]["event"] == "ready"
        headers = {"Last-Event-ID": str(first[-1][0])}
        async with EventStream(str(client.base_url), headers=headers) as stream:
            await client.post("/jobs", json={"job": {"value": "later"}})
            rest = await stream.read(6 + 3)  # j2's and j3's three each, then j4's
        ids = [event_id for event_id, _ in first + rest]
        assert ids == list(range(1, len(ids) + 1))  # no gap, no repeat
        assert (rest[-1][1]["event"], rest[-1][1]["job"]) == ("finished", "j4")


async def test_events_of_one_job() -> None:
    async with http_server() as (driver, client):
        await client.post("/jobs", json={"job": {"value": 1}})
        await client.post("/jobs", json={"job": {"value": 2}})
        await driver.wait_for("finished", job="j2")
        async with EventStream(str(client.base_url), {"job": "j2", "after": "0"}) as stream:
            messages = await stream.read(3)
        assert [(ev["event"], ev["job"]) for _, ev in messages] == [
            ("accepted", "j2"),
            ("started", "j2"),
            ("finished", "j2"),
        ]


async def test_a_bad_event_id_is_refused() -> None:
    async with http_server() as (_, client):
        response = await client.get("/events", headers={"Last-Event-ID": "x"})
        assert (response.status_code, response.json()["code"]) == (400, "bad_command")


async def test_streams_end_when_the_executor_stops() -> None:
    async with http_server() as (driver, client):
        async with EventStream(str(client.base_url)) as stream:
            await driver.close_stdin()
            with pytest.raises(EOFError):
                await stream.read(1)
        assert (await driver.rest())[-1]["event"] == "bye"
