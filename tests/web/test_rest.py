"""Every REST endpoint against a real ``stepline serve --http`` process, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from ..driver import Driver, lifecycle_ok, serve

pytestmark = pytest.mark.e2e


@asynccontextmanager
async def http_server(*args: str) -> AsyncIterator[tuple[Driver, httpx.AsyncClient]]:
    async with serve("--http", "0", "--heartbeat", "0", *args) as driver:
        url = driver.events[0]["http"]
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            yield driver, client


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert isinstance(body["message"], str)
    return body


async def test_a_job_submitted_over_http_runs_and_its_events_go_to_stdout() -> None:
    async with http_server() as (driver, client):
        steps = [{"run": ["sh", "-c", "echo one; echo two"]}, {"value": 42}]
        response = await client.post("/jobs", json={"job": {"steps": steps}, "name": "answer"})
        assert response.status_code == 202
        job = response.json()["job"]
        finished = await driver.wait_for("finished", job=job)
        assert finished["output"] == 42
        record = (await client.get(f"/jobs/{job}")).json()
        assert (record["state"], record["name"], record["output"]) == ("succeeded", "answer", 42)
        logs = (await client.get(f"/jobs/{job}/logs")).json()
        assert [(line["n"], line["line"]) for line in logs["lines"]] == [(1, "one"), (2, "two")]
        assert (logs["next"], logs["done"], logs["trimmed"]) == (2, True, 0)
        later = (await client.get(f"/jobs/{job}/logs", params={"after": 1})).json()
        assert [line["line"] for line in later["lines"]] == ["two"]
        await driver.close_stdin()
        events = [*driver.events, *await driver.rest()]
    lifecycle_ok(events)
    assert events[-1]["event"] == "bye"


async def test_stdin_keeps_working_beside_http() -> None:
    async with http_server() as (driver, client):
        await driver.send({"op": "submit", "id": 1, "job": {"value": "from stdin"}})
        accepted = await driver.wait_for("accepted", id=1)
        await driver.wait_for("finished", job=accepted["job"])
        record = (await client.get(f"/jobs/{accepted['job']}")).json()
        assert record["output"] == "from stdin"


async def test_jobs_are_listed_most_recent_first_and_filtered() -> None:
    async with http_server() as (driver, client):
        await client.post("/jobs", json={"job": {"value": 1}, "name": "a"})
        await client.post("/jobs", json={"job": {"fail": "no"}, "name": "b"})
        await client.post("/jobs", json={"job": {"value": 3}, "name": "a"})
        await driver.wait_for("finished", job="j3")
        listed = (await client.get("/jobs")).json()["jobs"]
        assert [r["job"] for r in listed] == ["j3", "j2", "j1"]
        by_name = (await client.get("/jobs", params={"name": "a", "limit": 1})).json()["jobs"]
        assert [r["job"] for r in by_name] == ["j3"]
        failed = (await client.get("/jobs", params={"state": "failed"})).json()["jobs"]
        assert [r["job"] for r in failed] == ["j2"]
        either = await client.get("/jobs", params=[("state", "failed"), ("state", "succeeded")])
        assert [r["job"] for r in either.json()["jobs"]] == ["j3", "j2", "j1"]
        created = (await client.get("/jobs/j2")).json()["created"]
        since = (await client.get("/jobs", params={"since": created})).json()["jobs"]
        assert [r["job"] for r in since] == ["j3", "j2"]
        problem(await client.get("/jobs", params={"since": "soon"}), 400, "bad_command")
        problem(await client.get("/jobs", params={"since": "nan"}), 400, "bad_command")
        problem(await client.get("/jobs", params={"state": "done"}), 400, "bad_command")
        problem(await client.get("/jobs", params={"limit": "x"}), 400, "bad_command")


async def test_jobs_are_listed_a_page_at_a_time() -> None:
    async with http_server() as (driver, client):
        for i in range(5):
            name = "odd" if i % 2 else "even"
            await client.post("/jobs", json={"job": {"value": i}, "name": name})
        await driver.wait_for("finished", job="j5")
        pages = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"before": cursor} if cursor else {})}
            answer = (await client.get("/jobs", params=params)).json()
            pages.append([record["job"] for record in answer["jobs"]])
            if (cursor := answer["next"]) is None:
                break
            assert cursor == answer["jobs"][-1]["job"]
        assert pages == [["j5", "j4"], ["j3", "j2"], ["j1"]]
        evens = (await client.get("/jobs", params={"name": "even", "before": "j5"})).json()
        assert ([r["job"] for r in evens["jobs"]], evens["next"]) == (["j3", "j1"], None)
        problem(await client.get("/jobs", params={"before": "j99"}), 404, "unknown_job")


async def test_refusals_carry_the_protocols_codes_and_fitting_statuses() -> None:
    async with http_server() as (_, client):
        problem(await client.post("/jobs", content=b"{nope"), 400, "bad_json")
        problem(await client.post("/jobs", json=[1]), 400, "bad_command")
        problem(
            await client.post("/jobs", json={"job": {"value": 1}, "op": "x"}), 400, "bad_command"
        )
        problem(await client.post("/jobs", json={"jbo": {}}), 400, "bad_command")
        body = problem(
            await client.post("/jobs", json={"job": {"steps": [{"sleep": -1}]}}),
            422,
            "invalid_job",
        )
        assert "steps[0]" in body["message"]
        problem(await client.post("/jobs", json={"template": "nope"}), 404, "unknown_template")
        problem(await client.get("/jobs/j99"), 404, "unknown_job")
        problem(await client.post("/jobs/j99/cancel"), 404, "unknown_job")
        problem(await client.get("/jobs/j99/logs"), 404, "unknown_job")
        problem(await client.get("/nowhere"), 404, "not_found")
        problem(await client.delete("/jobs"), 405, "method_not_allowed")
        problem(await client.post("/alerts/a1/ack"), 404, "unknown_alert")
        problem(await client.delete("/schedules/s1"), 404, "unknown_schedule")


async def test_a_body_longer_than_max_line_is_refused() -> None:
    async with http_server("--max-line", "100") as (_, client):
        big = {"job": {"value": "x" * 200}}
        problem(await client.post("/jobs", json=big), 413, "line_too_long")


async def test_cancel_a_running_job_and_then_again() -> None:
    async with http_server() as (driver, client):
        job = (await client.post("/jobs", json={"job": {"sleep": 30}})).json()["job"]
        await driver.wait_for("started", job=job)
        response = await client.post(f"/jobs/{job}/cancel")
        assert response.status_code == 202
        assert response.json() == {"job": job, "state": "running"}
        finished = await driver.wait_for("finished", job=job)
        assert finished["state"] == "cancelled"
        problem(await client.post(f"/jobs/{job}/cancel"), 409, "already_finished")


async def test_templates_schedules_stats_and_health() -> None:
    async with http_server() as (driver, client):
        template = {"params": {"who": "world"}, "steps": [{"value": "hello ${params.who}"}]}
        assert (await client.put("/templates/greet", json=template)).json() == {"template": "greet"}
        response = await client.post("/jobs", json={"template": "greet", "params": {"who": "you"}})
        finished = await driver.wait_for("finished", job=response.json()["job"])
        assert finished["output"] == "hello you"
        problem(await client.put("/templates/bad", json={"steps": 1}), 422, "invalid_job")

        scheduled = await client.post("/schedules", json={"every": 3600, "template": "greet"})
        assert scheduled.status_code == 201
        schedule = scheduled.json()["schedule"]
        assert isinstance(scheduled.json()["next"], float)
        listed = (await client.get("/schedules")).json()["schedules"]
        assert [s["schedule"] for s in listed] == [schedule]
        assert (await client.delete(f"/schedules/{schedule}")).json() == {"schedule": schedule}
        problem(await client.post("/schedules", json={"every": 1}), 400, "bad_command")

        stats = (await client.get("/stats")).json()
        assert stats["finished"]["succeeded"] >= 1
        assert stats["workers"] == 4
        health = await client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"ok": True, "state": "running"})


async def test_an_alert_is_acked_over_http() -> None:
    async with http_server() as (driver, client):
        job = {"steps": [{"fail": "disk full"}], "on_finish": [{"alert": "backup failed"}]}
        await client.post("/jobs", json={"job": job})
        alert = await driver.wait_for("alert")
        open_alerts = (await client.get("/alerts")).json()["alerts"]
        assert [a["alert"] for a in open_alerts] == [alert["alert"]]
        acked = await client.post(f"/alerts/{alert['alert']}/ack")
        assert acked.json() == {"alert": alert["alert"], "job": alert["job"]}
        on_stdout = await driver.wait_for("acked", alert=alert["alert"])
        assert on_stdout["job"] == alert["job"]
        assert "id" not in on_stdout
        problem(await client.post(f"/alerts/{alert['alert']}/ack"), 409, "already_acked")
        assert (await client.get("/alerts")).json()["alerts"] == []


async def test_while_draining_submits_are_refused_and_health_says_so() -> None:
    async with http_server() as (driver, client):
        job = (await client.post("/jobs", json={"job": {"sleep": 30}})).json()["job"]
        await driver.wait_for("started", job=job)
        await driver.send({"op": "shutdown", "mode": "drain"})
        await driver.wait_for("shutting_down")
        problem(await client.post("/jobs", json={"job": {"value": 1}}), 503, "shutting_down")
        health = await client.get("/healthz")
        assert (health.status_code, health.json()["state"]) == (503, "draining")
        await client.post(f"/jobs/{job}/cancel")
        rest = await driver.rest()
    assert rest[-1]["event"] == "bye"


async def test_the_graph_of_a_task_job() -> None:
    async with http_server() as (driver, client):
        tasks = {
            "build": {"steps": [{"value": 1}]},
            "test": {"needs": ["build"], "steps": [{"value": 2}]},
        }
        job = (await client.post("/jobs", json={"job": {"tasks": tasks}})).json()["job"]
        graph = (await client.get(f"/jobs/{job}/graph")).json()
        assert graph["kind"] == "tasks"
        assert [(n["name"], n["needs"]) for n in graph["nodes"]] == [
            ("build", []),
            ("test", ["build"]),
        ]
        await driver.wait_for("finished", job=job)
