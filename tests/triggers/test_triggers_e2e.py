"""End-to-end: callbacks, alerts, schedules and the http step through the real `stepline serve`."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from ..driver import run_cli, serve
from ..http_server import Answer, HttpServer

pytestmark = pytest.mark.e2e


@contextmanager
def _show_events_on_failure(events: list[dict[str, Any]]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print("\n".join(map(json.dumps, events[-30:])))  # shown by pytest on failure
        raise


async def test_callbacks_alerts_and_schedules_over_pipes() -> None:
    with HttpServer() as srv:
        data = srv.script("/data", Answer(200, {"rows": 3}))
        hook = srv.script("/hook", Answer(204, text=""))
        job = {
            "name": "report",
            "steps": [{"http": {"url": data}}],
            "on_finish": [
                {"notify": "report ready"},
                {"alert": "look at the report", "when": "success"},
                {"webhook": hook, "payload": {"channel": "#ops"}},
                {"run": ["cat"]},
                {"notify": "never", "when": "failure"},
            ],
        }
        async with serve("--alert-repeat", "0.2", "--heartbeat", "0") as d:
            with trio.fail_after(20), _show_events_on_failure(d.events):
                await d.send({"op": "submit", "id": 1, "job": job})
                finished = await d.wait_for("finished")
                assert finished["output"]["body"] == {"rows": 3}
                # the webhook and the run callback report later, in either order
                seen: set[int] = set()
                while seen != {2, 3}:
                    ev = await d.wait_until(lambda e: e["event"] == "callback")
                    seen |= {ev["callback"]} & {2, 3}
                # Any repeat will do: under load the first may come while the callbacks are
                # awaited above (and be read past); the alert repeats until it is acked.
                repeat = await d.wait_until(lambda e: e["event"] == "alert" and e["repeat"] >= 1)
                await d.send(
                    {"op": "ack", "id": 2, "alert": repeat["alert"]},
                    {"op": "ack", "id": 3, "alert": repeat["alert"]},
                )
                await d.wait_for("acked", id=2, alert="a1")
                assert (await d.wait_for("error", id=3))["code"] == "already_acked"

                await d.send({"op": "schedule", "id": 4, "every": 0.05, "job": {"value": "tick"}})
                scheduled = await d.wait_for("scheduled", id=4)
                assert scheduled["schedule"] == "s1"
                await d.wait_until(lambda e: e["event"] == "accepted" and "schedule" in e)
                await d.send(
                    {"op": "unschedule", "id": 5, "schedule": "s1"}, {"op": "status", "id": 6}
                )
                await d.wait_for("unscheduled", id=5)
                status = await d.wait_for("status", id=6)
                assert (status["alerts"], status["schedules"]) == ([], [])
                await d.close_stdin()
                rest = await d.rest()
            assert rest[-1]["event"] == "bye"
            assert await d.proc.wait() == 0
        events = d.events
        callbacks = {e["callback"]: e for e in events if e["event"] == "callback"}
        assert sorted(callbacks) == [0, 1, 2, 3]
        assert all(cb["ok"] for cb in callbacks.values()), callbacks
        assert callbacks[2]["status"] == 204
        assert json.loads(callbacks[3]["stdout"]) == finished
        note = next(e for e in events if e["event"] == "notification")
        assert (note["text"], note["name"]) == ("report ready", "report")
        body = srv.received("/hook")[0].json()
        assert (body["job"], body["state"], body["channel"]) == ("j1", "succeeded", "#ops")


def test_eof_drains_pending_webhooks_before_bye() -> None:
    with HttpServer() as srv:
        slow = srv.script("/slow", Answer(200, {}, delay=0.3))
        events, rc, stderr = run_cli(
            [
                {
                    "op": "submit",
                    "job": {"steps": [{"value": 1}], "on_finish": [{"webhook": slow}]},
                },
            ]
        )
    assert rc == 0, stderr
    kinds = [e["event"] for e in events]
    assert kinds == ["ready", "accepted", "started", "finished", "callback", "bye"]
    assert events[4]["ok"] is True


def test_schedules_stop_at_eof_and_refusals_are_errors() -> None:
    events, rc, _ = run_cli(
        [
            {"op": "schedule", "id": 1, "cron": "0 3 * * *", "tz": "UTC", "job": {"value": 1}},
            {"op": "schedule", "id": 2, "every": 5, "job": {"steps": [{"fail": 3}]}},
            {"op": "ack", "id": 3, "alert": "a1"},
            {"op": "unschedule", "id": 4, "schedule": "s9"},
            {"op": "stats", "id": 5},
        ],
        "--callback-drain",
        "1",
        "--alert-repeat",
        "0",
    )
    assert rc == 0
    by_id = {e.get("id"): e for e in events}
    assert by_id[1]["event"] == "scheduled"
    assert by_id[1]["next"] % 86400 == 3 * 3600  # 03:00 UTC
    assert (by_id[2]["code"], by_id[3]["code"], by_id[4]["code"]) == (
        "invalid_job",
        "unknown_alert",
        "unknown_schedule",
    )
    assert (by_id[5]["alerts"], by_id[5]["schedules"]) == ([], 1)
    assert events[-1]["event"] == "bye"


async def test_cancelled_callbacks_count_the_attempts_they_made(tmp_path: Path) -> None:
    """A webhook waiting to retry and a run callback still running are cancelled by SIGTERM:
    each reports the attempts it had made (one each), not 0."""
    started = tmp_path / "started"
    with HttpServer() as srv:
        hook = srv.script("/hook", Answer(503, {}))
        job = {
            "steps": [{"value": 1}],
            "on_finish": [
                {"webhook": hook, "retry": {"attempts": 5, "backoff": 60}},
                {"run": ["sh", "-c", f"echo up > {started}; exec sleep 60"], "grace": 1},
            ],
        }
        async with serve("--heartbeat", "0") as d:
            with trio.fail_after(20), _show_events_on_failure(d.events):
                await d.send({"op": "submit", "id": 1, "job": job})
                await d.wait_for("finished")
                while not (srv.received("/hook") and started.exists()):
                    await trio.sleep(0.02)
                d.signal(signal.SIGTERM)
                rest = await d.rest()
            assert await d.proc.wait() == 0
    callbacks = {e["callback"]: e for e in rest if e["event"] == "callback"}
    assert (callbacks[0]["ok"], callbacks[0]["error"]) == (False, "cancelled by shutdown")
    assert callbacks[0]["attempts"] == 1, callbacks[0]
    assert callbacks[0]["status"] == 503, callbacks[0]
    assert (callbacks[1]["ok"], callbacks[1]["error"]) == (False, "cancelled by shutdown")
    assert callbacks[1]["attempts"] == 1, callbacks[1]
