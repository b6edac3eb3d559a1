"""Alerts across real nodes: opened where the job ran, told to its submitter, acked anywhere."""

from __future__ import annotations

import pytest
import trio

from tests.cluster.nodes import live_nodes, serve_node, sql, worker_node

pytestmark = pytest.mark.e2e


async def test_an_alert_opened_on_a_worker_reaches_the_submitter_and_is_acked_on_another_node(
    cluster_url,
):
    repeat = ("--alert-repeat", "1")
    async with serve_node(cluster_url, "--workers", "1", *repeat) as a:
        await a.send(*({"op": "submit", "id": f"b{i}", "job": {"sleep": 60}} for i in (1, 2)))
        with trio.fail_after(20):  # the serve node holds all it can: the next job goes elsewhere
            while sql(
                cluster_url, "SELECT count(*) FROM stepline_jobs WHERE state = 'running'"
            ) != [(2,)]:
                await trio.sleep(0.05)
        async with worker_node(cluster_url, *repeat), serve_node(cluster_url, *repeat) as c:
            await live_nodes(cluster_url, 3)
            me = a.events[0]["node"]
            job = {"steps": [{"fail": "disk full"}],
                   "on_finish": [{"notify": "done"}, {"alert": "backup failed"}]}  # fmt: skip
            await a.send({"op": "submit", "id": 1, "job": job})
            jid = (await a.wait_for("accepted", id=1))["job"]
            with trio.fail_after(20):
                started = await a.wait_for("started", job=jid)
                first = await a.wait_for("alert", job=jid)
                again = await a.wait_for("alert", job=jid)
            assert started["node"] != me
            await c.send({"op": "ack", "id": "k", "alert": first["alert"]})
            acked = await c.wait_for("acked", id="k")
            await a.send(
                {"op": "ack", "id": "k2", "alert": first["alert"]},
                {"op": "ack", "id": "k3", "alert": "a999999"},
                {"op": "status", "id": "st"},
            )
            twice = await a.wait_for("error", id="k2")
            unknown = await a.wait_for("error", id="k3")
            status = await a.wait_for("status", id="st")
            await trio.sleep(1.5)  # an acked alert is announced no more
            await a.send(
                {"op": "cancel", "id": "x1", "job": "j1"}, {"op": "cancel", "id": "x2", "job": "j2"}
            )
    assert first["repeat"] == 0
    assert first["state"] == "failed"
    assert first["text"] == "backup failed"
    assert again["alert"] == first["alert"]
    assert again["repeat"] >= 1
    assert acked["job"] == jid
    assert twice["code"] == "already_acked"
    assert unknown["code"] == "unknown_alert"
    assert status["alerts"] == []
    repeats = [e["repeat"] for e in a.events if e["event"] == "alert"]
    assert repeats == list(range(len(repeats))), repeats  # each repeat once, in order
    kinds = [e["event"] for e in a.events if e.get("job") == jid]
    assert "notification" in kinds  # a callback's event after the end, from the worker
    assert kinds.count("finished") == 1
    assert kinds.index("finished") < kinds.index("alert")  # callbacks after the finished


async def test_an_alert_is_acked_through_the_http_front_of_a_node(cluster_url):
    httpx = pytest.importorskip("httpx", reason="the http extra is not installed")
    pytest.importorskip("starlette", reason="the http extra is not installed")
    async with serve_node(cluster_url, "--http", "0", "--alert-repeat", "60") as a:
        url = a.events[0]["http"]
        job = {"steps": [{"fail": "disk full"}], "on_finish": [{"alert": "backup failed"}]}
        await a.send({"op": "submit", "id": 1, "job": job})
        with trio.fail_after(20):
            alert = await a.wait_for("alert")
        async with httpx.AsyncClient(base_url=url) as client:
            acked = await client.post(f"/alerts/{alert['alert']}/ack")
            twice = await client.post(f"/alerts/{alert['alert']}/ack")
            unknown = await client.post("/alerts/a999999/ack")
            listed = await client.get("/alerts")
    assert acked.status_code == 200, acked.text
    assert acked.json() == {"alert": alert["alert"], "job": alert["job"]}
    assert (twice.status_code, twice.json()["code"]) == (409, "already_acked")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_alert")
    assert sql(cluster_url, "SELECT acked FROM stepline_alerts") == [(True,)]
    assert listed.status_code == 200
