"""`on_finish` callbacks and alerts, in-process.

Alert repeats run on trio's autojump clock (hours in milliseconds). Webhooks talk to a real HTTP
server on 127.0.0.1, so those tests use the real clock with short backoffs instead: the autojump
clock would jump while a request waits on the server thread and fire every timeout at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from stepline import Config, Executor, InvalidJob
from stepline.server._dispatch import dispatch
from stepline.spec._callbacks import Notify, Webhook
from stepline.spec._validate import validate_job, validate_template
from stepline.store import Store
from stepline.triggers._attach import Triggers
from stepline.wire._commands import Ack, Stats, Status

from ..conftest import MemoryOutbox, running_executor
from ..http_server import Answer, HttpServer, statuses

Event = dict[str, Any]
FAST_RETRY = {"attempts": 3, "backoff": 0.01, "factor": 1}


@pytest.fixture
def server() -> Iterator[HttpServer]:
    with HttpServer() as srv:
        yield srv


def named(out: MemoryOutbox, name: str, **fields: Any) -> list[Event]:
    return [
        e
        for e in out.events
        if e["event"] == name and all(e.get(k) == v for k, v in fields.items())
    ]


async def callback_event(out: MemoryOutbox, job: str, index: int) -> Event:
    with trio.fail_after(5):
        return await out.wait_for(
            lambda e: e["event"] == "callback" and e["job"] == job and e["callback"] == index
        )


# -- notify, when --------------------------------------------------------------------------------


async def test_notify_is_written_once_right_after_finished(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {
                "steps": [{"value": 42}],
                "name": "answer",
                "on_finish": [{"notify": "done: ${params.who}"}],
                "params": {"who": "me"},
            }
        )
        await out.finished(job.id)
    kinds = out.of(job.id)
    assert kinds == ["accepted", "started", "finished", "notification", "callback"]
    (note,) = named(out, "notification")
    assert note["text"] == "done: me"
    assert (note["job"], note["state"], note["output"], note["name"]) == (
        job.id,
        "succeeded",
        42,
        "answer",
    )
    (cb,) = named(out, "callback")
    assert cb == {
        "event": "callback",
        "ts": cb["ts"],
        "job": job.id,
        "callback": 0,
        "kind": "notify",
        "ok": True,
    }


@pytest.mark.parametrize(
    ("step", "runs"),
    [
        ({"value": 1}, ["success", "always"]),
        ({"fail": "x"}, ["failure", "always"]),
        ({"sleep": 10, "timeout": 1}, ["failure", "always"]),
    ],
)
async def test_when_selects_by_final_state(
    autojump_clock: trio.abc.Clock, step: Event, runs: list[str]
) -> None:
    on_finish = [{"notify": when, "when": when} for when in ("success", "failure", "always")]
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [step], "on_finish": on_finish})
        await out.finished(job.id)
    assert [e["text"] for e in named(out, "notification")] == runs


async def test_timed_out_and_cancelled_jobs_count_as_failure(
    autojump_clock: trio.abc.Clock,
) -> None:
    cbs = [{"notify": "bad", "when": "failure"}]
    async with running_executor(workers=1) as (ex, out):
        slow = await ex.submit({"steps": [{"sleep": 100}], "timeout": 1, "on_finish": cbs})
        queued = await ex.submit({"steps": [{"sleep": 1}], "on_finish": cbs})
        ex.cancel(queued.id)  # cancelled while queued: finished at once, callbacks too
        await out.finished(slow.id)
    states = {e["job"]: e["state"] for e in named(out, "notification")}
    assert states == {slow.id: "timed_out", queued.id: "cancelled"}
    assert named(out, "notification", job=slow.id)[0]["error"]["type"] == "timeout"


# -- alerts ------------------------------------------------------------------------------------


async def test_alert_repeats_until_acked(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(alert_repeat=60) as (ex, out):
        job = await ex.submit(
            {
                "steps": [{"fail": "disk full"}],
                "on_finish": [{"alert": "backup failed", "when": "failure"}],
            }
        )
        await out.finished(job.id)
        (first,) = named(out, "alert")
        assert first["alert"] == "a1"
        assert (first["job"], first["state"], first["text"], first["repeat"]) == (
            job.id,
            "failed",
            "backup failed",
            0,
        )
        assert first["error"]["message"] == "disk full"
        assert named(out, "callback")[0]["alert"] == "a1"
        await trio.sleep(150)  # two repeats: at 60 and 120
        assert [e["repeat"] for e in named(out, "alert")] == [0, 1, 2]
        assert {e["alert"] for e in named(out, "alert")} == {"a1"}
        await dispatch(ex, Status(), "st")
        (status,) = named(out, "status")
        assert [a["alert"] for a in status["alerts"]] == ["a1"]
        assert status["alerts"][0]["repeats"] == 2
        await dispatch(ex, Ack("a1"), 7)
        assert named(out, "acked") == [
            {
                "event": "acked",
                "ts": named(out, "acked")[0]["ts"],
                "id": 7,
                "alert": "a1",
                "job": job.id,
            }
        ]
        await trio.sleep(600)
        assert len(named(out, "alert")) == 3  # no repeat after the ack
        await dispatch(ex, Status(), "st2")
        assert named(out, "status", id="st2")[0]["alerts"] == []


async def test_ack_errors(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [{"value": 1}], "on_finish": [{"alert": "x"}]})
        await out.finished(job.id)
        await dispatch(ex, Ack("a1"), 1)
        await dispatch(ex, Ack("a1"), 2)
        await dispatch(ex, Ack("a9"), 3)
        await dispatch(ex, Ack("nonsense"), 4)
    errors = {e["id"]: e["code"] for e in named(out, "error")}
    assert errors == {2: "already_acked", 3: "unknown_alert", 4: "unknown_alert"}


async def test_several_alerts_repeat_on_their_own_schedule(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(alert_repeat=10) as (ex, out):
        a = await ex.submit({"steps": [{"value": 1}], "on_finish": [{"alert": "a"}]})
        await out.finished(a.id)
        await trio.sleep(4)
        b = await ex.submit({"steps": [{"value": 2}], "on_finish": [{"alert": "b"}]})
        await out.finished(b.id)
        await trio.sleep(17.5)  # a1 opened at 0, a2 at 4: repeats at 10, 14, 20
        times = [(e["alert"], e["repeat"]) for e in named(out, "alert")]
        assert times == [("a1", 0), ("a2", 0), ("a1", 1), ("a2", 1), ("a1", 2)]
        Triggers.of(ex).alerts.ack("a1")
        Triggers.of(ex).alerts.ack("a2")


async def test_alert_repeat_zero_announces_once(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor(alert_repeat=0, heartbeat=0) as (ex, out):
        job = await ex.submit({"steps": [{"value": 1}], "on_finish": [{"alert": "x"}]})
        await out.finished(job.id)
        await trio.sleep(10_000)
    assert len(named(out, "alert")) == 1


# -- webhooks -----------------------------------------------------------------------------------


async def test_webhook_posts_the_outcome_merged_with_payload(server: HttpServer) -> None:
    url = server.script("/hook", Answer(200, {}))
    hook = {
        "webhook": url,
        "headers": {"Authorization": "Bearer ${params.token}"},
        "payload": {"channel": "#ops", "state": "overridden?"},
    }
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {
                "steps": [{"value": {"rows": 3}}],
                "params": {"token": "s3"},
                "on_finish": [{"notify": "n"}, hook],
            }
        )
        cb = await callback_event(out, job.id, 1)
    assert cb == {
        "event": "callback",
        "ts": cb["ts"],
        "job": job.id,
        "callback": 1,
        "kind": "webhook",
        "ok": True,
        "attempts": 1,
        "status": 200,
    }
    (request,) = server.received("/hook")
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer s3"
    assert request.headers["content-type"] == "application/json"
    body = request.json()
    assert body["job"] == job.id
    assert body["output"] == {"rows": 3}
    assert body["channel"] == "#ops"
    assert body["state"] == "overridden?"  # payload wins: the user asked for it


async def test_webhook_retries_5xx_then_succeeds(server: HttpServer) -> None:
    url = server.script("/hook", *statuses(503, 500, 200))
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"fail": "x"}], "on_finish": [{"webhook": url, "retry": FAST_RETRY}]}
        )
        cb = await callback_event(out, job.id, 0)
    assert (cb["ok"], cb["attempts"], cb["status"]) == (True, 3, 200)
    assert server.received("/hook")[0].json()["error"]["message"] == "x"


async def test_webhook_gives_up_after_its_attempts(server: HttpServer) -> None:
    url = server.script("/hook", *statuses(502))
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"webhook": url, "retry": FAST_RETRY}]}
        )
        cb = await callback_event(out, job.id, 0)
        await dispatch(ex, Status(job.id), 1)
    assert (cb["ok"], cb["attempts"], cb["status"], cb["error"]) == (False, 3, 502, "HTTP 502")
    assert named(out, "status")[0]["jobs"][0]["state"] == "succeeded"  # never changed by it


async def test_webhook_does_not_retry_4xx(server: HttpServer) -> None:
    url = server.script("/hook", *statuses(404, 200))
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"webhook": url, "retry": FAST_RETRY}]}
        )
        cb = await callback_event(out, job.id, 0)
    assert (cb["ok"], cb["attempts"], cb["status"]) == (False, 1, 404)


async def test_webhook_connection_error_is_retried_and_reported() -> None:
    with HttpServer() as dead:
        url = dead.url("/hook")
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"webhook": url, "retry": FAST_RETRY}]}
        )
        cb = await callback_event(out, job.id, 0)
    assert (cb["ok"], cb["attempts"], cb["status"]) == (False, 3, None)
    assert "ConnectError" in cb["error"]


async def test_slow_webhook_delays_nothing_else(server: HttpServer) -> None:
    slow = server.script("/slow", Answer(200, {}, delay=30))
    hook = {"webhook": slow, "timeout": 0.5, "retry": {"attempts": 1}}
    async with running_executor(workers=1) as (ex, out):
        first = await ex.submit({"steps": [{"value": 1}], "on_finish": [hook]})
        second = await ex.submit({"steps": [{"value": 2}]})
        cb = await callback_event(out, first.id, 0)
    # the one worker ran the second job while the webhook of the first still waited
    assert out.events.index(await out.finished(second.id)) < out.events.index(cb)
    assert (cb["ok"], cb["attempts"]) == (False, 1)
    assert cb["error"] == "no response within 0.5s"


async def test_callback_concurrency_is_bounded(server: HttpServer) -> None:
    url = server.script("/hook", Answer(200, {}, delay=0.2))
    async with running_executor(callback_limit=2) as (ex, out):
        jobs = [
            await ex.submit({"steps": [{"value": i}], "on_finish": [{"webhook": url}]})
            for i in range(4)
        ]
        for job in jobs:
            assert (await callback_event(out, job.id, 0))["ok"]
    assert server.max_active == 2


async def test_webhook_content_type_can_be_overridden(server: HttpServer) -> None:
    url = server.script("/hook", Answer(200, {}))
    hook = {"webhook": url, "method": "PUT", "headers": {"Content-Type": "application/x+json"}}
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [{"value": 1}], "on_finish": [hook]})
        await callback_event(out, job.id, 0)
    (request,) = server.received("/hook")
    assert (request.method, request.headers["content-type"]) == ("PUT", "application/x+json")


async def test_too_many_pending_callbacks_fail_at_once(
    server: HttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stepline.triggers._callbacks.MAX_PENDING", 1)
    url = server.script("/hook", Answer(200, {}, delay=0.2))
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"webhook": url}, {"webhook": url}]}
        )
        second = await callback_event(out, job.id, 1)
        await dispatch(ex, Stats(), "stats")
        first = await callback_event(out, job.id, 0)
    assert (second["ok"], second["attempts"]) == (False, 0)
    assert "already pending" in second["error"]
    assert first["ok"] is True
    (stats,) = named(out, "stats")
    assert (stats["callbacks_pending"], stats["alerts"], stats["schedules"]) == (1, [], 0)


async def test_status_of_one_job_lists_no_alerts(autojump_clock: trio.abc.Clock) -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [{"value": 1}], "on_finish": [{"alert": "x"}]})
        await out.finished(job.id)
        await dispatch(ex, Status(job.id), 1)
        await dispatch(ex, Stats(), 2)
        Triggers.of(ex).alerts.ack("a1")
    assert "alerts" not in named(out, "status")[0]
    assert [a["alert"] for a in named(out, "stats")[0]["alerts"]] == ["a1"]


# -- run callbacks ------------------------------------------------------------------------------


async def test_run_callback_reads_the_finished_event_on_stdin() -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [{"value": [1, 2]}], "on_finish": [{"run": ["cat"]}]})
        cb = await callback_event(out, job.id, 0)
        finished = await out.finished(job.id)
    assert (cb["ok"], cb["kind"], cb["exit"], cb["attempts"]) == (True, "run", 0, 1)
    assert json.loads(cb["stdout"]) == finished


async def test_failing_run_callback_never_changes_the_job() -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"run": "echo oops >&2; exit 3"}]}
        )
        cb = await callback_event(out, job.id, 0)
    assert (cb["ok"], cb["exit"], cb["stderr"]) == (False, 3, "oops\n")
    assert "status 3" in cb["error"]
    assert job.state.value == "succeeded"


async def test_run_callback_timeout_stops_it() -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"run": ["sleep", "30"], "timeout": 0.2}]}
        )
        cb = await callback_event(out, job.id, 0)
    assert (cb["ok"], cb["error"]) == (False, "timed out after 0.2s")


async def test_run_callback_that_cannot_start() -> None:
    async with running_executor() as (ex, out):
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"run": ["/no/such/program"]}]}
        )
        cb = await callback_event(out, job.id, 0)
    assert cb["ok"] is False
    assert "/no/such/program" in cb["error"]


# -- shutdown -----------------------------------------------------------------------------------


async def test_drain_waits_for_pending_callbacks(server: HttpServer) -> None:
    url = server.script("/hook", Answer(200, {}, delay=0.2))
    async with running_executor() as (ex, out):
        job = await ex.submit({"steps": [{"value": 1}], "on_finish": [{"webhook": url}]})
        await out.finished(job.id)
    # the block's exit drained: the executor closed only after the webhook's answer
    assert named(out, "callback")[0]["ok"] is True


async def test_drain_timeout_cancels_what_is_left(server: HttpServer) -> None:
    url = server.script("/hook", Answer(200, {}, delay=30))
    start = trio.current_time()
    async with running_executor(callback_drain=0.2) as (ex, out):
        job = await ex.submit({"steps": [{"value": 1}], "on_finish": [{"webhook": url}]})
        await out.finished(job.id)
    assert trio.current_time() - start < 2
    (cb,) = named(out, "callback")
    assert (cb["ok"], cb["error"]) == (False, "cancelled by shutdown")


async def test_cancel_shutdown_cancels_callbacks_at_once(server: HttpServer) -> None:
    url = server.script("/hook", Answer(200, {}, delay=30))
    out = MemoryOutbox()
    ex = Executor(Config(callback_drain=60), out)
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        job = await ex.submit(
            {"steps": [{"value": 1}], "on_finish": [{"webhook": url}, {"run": ["sleep", "30"]}]}
        )
        await out.finished(job.id)
        while len(server.received("/hook")) < 1:
            await trio.sleep(0.01)
        with trio.fail_after(3):
            ex.shutdown("cancel")
            await ex.closed.wait()
    callbacks = named(out, "callback")
    assert {(c["callback"], c["ok"], c.get("error")) for c in callbacks} == {
        (0, False, "cancelled by shutdown"),
        (1, False, "cancelled by shutdown"),
    }


async def test_callbacks_of_jobs_cancelled_by_shutdown_do_not_start(
    autojump_clock: trio.abc.Clock,
) -> None:
    out = MemoryOutbox()
    ex = Executor(Config(), out)
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(ex.run)
        job = await ex.submit(
            {"steps": [{"sleep": 100}], "on_finish": [{"notify": "n"}, {"run": ["true"]}]}
        )
        await out.wait_for(lambda e: e["event"] == "started")
        ex.shutdown("cancel")
    assert named(out, "notification")[0]["state"] == "cancelled"
    (_, run_cb) = named(out, "callback")
    assert (run_cb["ok"], run_cb["attempts"], run_cb["error"]) == (
        False,
        0,
        "cancelled by shutdown",
    )
    assert job.state.value == "cancelled"


async def test_with_durable_state_callbacks_follow_the_held_finished(tmp_path: Path) -> None:
    # --state holds `finished` back until the outcome is committed: callbacks wait for it too
    store = await Store.open(tmp_path / "state.db", keep=10)
    out = MemoryOutbox()
    ex = Executor(Config(heartbeat=0), out)
    store.attach(ex)
    Triggers.attach(ex)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await nursery.start(ex.run)
        job = await ex.submit(
            {
                "steps": [{"value": 1}],
                "on_finish": [{"notify": "n"}, {"alert": "a"}, {"run": ["cat"]}],
            }
        )
        run_cb = await callback_event(out, job.id, 2)
        Triggers.of(ex).alerts.ack("a1")
        ex.shutdown("drain")
        await ex.closed.wait()
        await store.aclose()
    kinds = out.of(job.id)
    assert kinds[:4] == ["accepted", "started", "finished", "notification"], kinds
    assert json.loads(run_cb["stdout"])["state"] == "succeeded"


# -- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_finish", "path", "words"),
    [
        ("x", "on_finish", "expected a list of callbacks"),
        ([5], "on_finish[0]", "must be an object"),
        ([{}], "on_finish[0]", "none given"),
        ([{"notify": "a", "alert": "b"}], "on_finish[0]", "more than one"),
        ([{"notify": 1}], "on_finish[0].notify", "expected a string"),
        ([{"notify": "a", "when": "sometimes"}], "on_finish[0].when", "one of success"),
        ([{"notify": "a", "headers": {}}], "on_finish[0]", "unknown key 'headers'"),
        ([{"webhook": "mailto:x"}], "on_finish[0].webhook", "http:// or https://"),
        ([{"webhook": "http://h", "method": "GET"}], "on_finish[0].method", "one of POST"),
        ([{"webhook": "http://h", "payload": []}], "on_finish[0].payload", "expected an object"),
        ([{"webhook": "http://h", "timeout": 0}], "on_finish[0].timeout", "greater than 0"),
        (
            [{"webhook": "http://h", "retry": {"attempts": 0}}],
            "on_finish[0].retry.attempts",
            "at least 1",
        ),
        ([{"webhook": "http://h", "headers": {"a": 2}}], "on_finish[0].headers.a", "string"),
        ([{"run": []}], "on_finish[0].run", "expected a list of strings"),
        ([{"run": ["x"], "stdin": "y"}], "on_finish[0]", "unknown key 'stdin'"),
        ([{"notify": "${params.nope}"}], "on_finish[0].notify", "unknown parameter"),
    ],
)
def test_validation_names_the_path(on_finish: Any, path: str, words: str) -> None:
    with pytest.raises(InvalidJob) as info:
        validate_job({"steps": [], "on_finish": on_finish})
    assert info.value.path == path
    assert words in info.value.problem


def test_callbacks_from_parameters_and_templates() -> None:
    template = {
        "params": {"url": "http://h"},
        "steps": [],
        "on_finish": [{"webhook": "${params.url}/x", "when": "${params.when}"}],
    }
    validate_template(template, {})  # define time: `when` may still be a placeholder
    spec = validate_job(template, params={"url": "https://o", "when": "failure"})
    (hook,) = spec.on_finish
    assert isinstance(hook, Webhook)
    assert (hook.url, hook.when) == ("https://o/x", "failure")
    spec = validate_job(
        {"steps": [], "on_finish": "${params.cbs}"},
        params={"cbs": [{"notify": "${params.not_substituted}"}]},
    )
    (note,) = spec.on_finish
    assert isinstance(note, Notify)
    assert note.text == "${params.not_substituted}"


def test_webhook_defaults() -> None:
    (hook,) = validate_job({"steps": [], "on_finish": [{"webhook": "http://h"}]}).on_finish
    assert isinstance(hook, Webhook)
    assert (hook.method, hook.timeout, hook.retry.attempts) == ("POST", 10.0, 3)
    assert math.isclose(hook.retry.delay_before(3), 2.0)
