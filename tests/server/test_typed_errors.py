"""Odd but possible input is answered with a typed error, never ``internal``.

Each case reached stepline as an exception of no known type, through the real CLI: a retry
whose backoff overflows a float, a ``run`` child ended by a real-time signal (which
``signal.Signals`` does not list), a cron expression no date matches, a ``tz`` naming a
directory of the zone database or too long for a file name, a URL host with an empty label,
and a feature that is imported on first use failing to load because no file descriptor is left
(which stopped the whole server when it hit the command decoder).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from typing import Any

import pytest
import trio

from ..driver import Event, lifecycle_ok, run_cli, serve
from ..http_server import Answer, HttpServer

pytestmark = pytest.mark.e2e


def _no_internal(events: list[Event]) -> None:
    for ev in events:
        assert ev.get("code") != "internal", ev
        assert (ev.get("error") or {}).get("type") != "internal", ev


def _finished(events: list[Event]) -> Event:
    (finished,) = (e for e in events if e["event"] == "finished")
    return finished


def _error(events: list[Event], request_id: str) -> Event:
    (error,) = (e for e in events if e["event"] == "error" and e.get("id") == request_id)
    return error


# -- retry -------------------------------------------------------------------------------------


def test_many_attempts_without_backoff_run_every_try() -> None:
    """Try 1,026 waited 0 * 2.0 ** 1024, which overflows before the multiplication by 0."""
    job = {"fail": "no", "retry": {"attempts": 1100}}
    events, status, _ = run_cli([{"op": "submit", "job": job}], "--heartbeat", "0")
    assert status == 0
    _no_internal(events)
    finished = _finished(events)
    assert finished["error"] == {
        "type": "fail",
        "message": "no",
        "step": "steps[0]",
        "attempts": 1100,
    }
    assert sum(e["event"] == "retry" for e in events) == 1099
    lifecycle_ok(events)


@pytest.mark.parametrize(
    "retry",
    [
        {"attempts": 4, "backoff": 1, "factor": 1e200},
        {"attempts": 1100, "backoff": 0.001},
        {"attempts": 3, "backoff": 1e200, "factor": 1e200},
    ],
    ids=["factor-1e200", "attempts-1100", "inf-product"],
)
def test_a_backoff_that_overflows_is_refused_at_submit(retry: dict[str, Any]) -> None:
    commands = [
        {"op": "submit", "id": "step", "job": {"fail": "no", "retry": retry}},
        {"op": "submit", "id": "job", "job": {"steps": [{"fail": "no"}], "retry": retry}},
        {
            "op": "submit",
            "id": "hook",
            "job": {
                "steps": [{"value": 1}],
                "on_finish": [{"webhook": "http://127.0.0.1:9/", "retry": retry}],
            },
        },
    ]
    events, status, _ = run_cli(commands, "--heartbeat", "0")
    assert status == 0
    _no_internal(events)
    for request_id, where in (("step", "steps[0].retry"), ("job", "retry"), ("hook", "retry")):
        error = _error(events, request_id)
        assert error["code"] == "invalid_job", error
        assert where in error["message"], error
        assert "too large to represent" in error["message"], error
    assert not [e for e in events if e["event"] == "accepted"]


def test_a_huge_factor_is_fine_when_no_wait_overflows() -> None:
    retry = {"attempts": 3, "backoff": 0, "factor": 1e200}  # backoff 0: every wait is 0
    events, status, _ = run_cli([{"op": "submit", "job": {"fail": "no", "retry": retry}}])
    assert status == 0
    _no_internal(events)
    assert _finished(events)["error"]["attempts"] == 3


# -- signals -----------------------------------------------------------------------------------


def test_a_child_ended_by_a_real_time_signal_is_a_failure() -> None:
    signum = signal.SIGRTMIN + 2  # 36 with glibc: not a member of signal.Signals
    code = f"import os; os.kill(os.getpid(), {signum})"
    job = {"run": [sys.executable, "-c", code]}
    events, status, _ = run_cli([{"op": "submit", "job": job}], "--heartbeat", "0")
    assert status == 0
    _no_internal(events)
    error = _finished(events)["error"]
    assert error["type"] == "failure", error
    assert error["exit"] == -signum
    assert error["message"].endswith("was ended by SIGRTMIN+2"), error


# -- schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": "0 0 31 4,6,9,11 *"}, "never fires"),
        ({"cron": "0 0 * * *", "tz": "America"}, "unknown time zone"),
        ({"cron": "0 0 * * *", "tz": "a" * 300}, "unknown time zone"),
        ({"cron": "0 0 * * *", "tz": "Europe/" + "b" * 300}, "unknown time zone"),
    ],
    ids=["feb-30", "april-31", "tz-directory", "tz-300-chars", "tz-long-in-dir"],
)
def test_a_schedule_that_cannot_fire_is_a_bad_command(fields: dict[str, str], message: str) -> None:
    commands = [
        {"op": "schedule", "id": "bad", "job": {"value": 1}, **fields},
        {"op": "schedule", "id": "good", "job": {"value": 1}, "cron": "0 0 * * *", "tz": "UTC"},
    ]
    events, status, _ = run_cli(commands, "--heartbeat", "0")
    assert status == 0
    _no_internal(events)
    error = _error(events, "bad")
    assert error["code"] == "bad_command", error
    assert message in error["message"], error
    assert [e for e in events if e["event"] == "scheduled" and e.get("id") == "good"]


# -- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://a..b/", "bad host name 'a..b'"),
        ("http://.a/", "bad host name"),
        ("https://" + "x" * 64 + ".example/", "bad host name"),
        ("http://[::1/", "bad URL"),
        ("http:///path", "no host"),
    ],
    ids=["empty-label", "leading-dot", "label-64", "open-bracket", "no-host"],
)
def test_a_url_whose_host_cannot_be_resolved_is_refused(url: str, message: str) -> None:
    commands = [
        {"op": "submit", "id": "step", "job": {"http": {"url": url}}},
        {
            "op": "submit",
            "id": "hook",
            "job": {"steps": [{"value": 1}], "on_finish": [{"webhook": url}]},
        },
    ]
    events, status, _ = run_cli(commands, "--heartbeat", "0")
    assert status == 0
    _no_internal(events)
    step, hook = _error(events, "step"), _error(events, "hook")
    assert step["code"] == hook["code"] == "invalid_job"
    assert step["message"].startswith("steps[0].http.url: "), step
    assert message in step["message"], step
    assert message in hook["message"], hook


def test_a_host_only_the_http_client_refuses_fails_the_step_as_http_error() -> None:
    """``xn--a`` passes the resolver's codec but not the IDNA decoder httpx applies: that is
    found at run time only, and is the step's ``http_error``."""
    job = {"http": {"url": "http://xn--a.example/"}, "timeout": 10}
    events, status, _ = run_cli([{"op": "submit", "job": job}], "--heartbeat", "0")
    assert status == 0
    _no_internal(events)
    assert _finished(events)["error"]["type"] == "http_error"


# -- a feature that cannot be loaded -----------------------------------------------------------


def _limit_open_files(pid: int, soft: int) -> int:
    """Set the process's soft RLIMIT_NOFILE; returns the previous soft limit."""
    previous, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    return previous


async def test_a_feature_that_cannot_be_loaded_is_unavailable_and_loads_later() -> None:
    """No file descriptor left (EMFILE) while importing a feature on first use: the command,
    or the step, fails with ``unavailable``; the server goes on, and once descriptors are free
    again the same requests succeed."""
    with HttpServer() as server:
        url = server.script("/ok", Answer(200, {"ok": True}))
        async with serve("--heartbeat", "0") as d:
            with trio.fail_after(30):
                # Load the command decoder, schedules (not cron) and the http step's form;
                # neither croniter nor the HTTP client.
                every = {"op": "schedule", "id": "e", "every": 3600, "job": {"value": 1}}
                await d.send(every)
                schedule = (await d.wait_for("scheduled", id="e"))["schedule"]
                await d.send({"op": "unschedule", "id": "u", "schedule": schedule})
                await d.wait_for("unscheduled", id="u")
                await d.send(
                    {"op": "define", "id": "d", "name": "get", "job": {"http": {"url": url}}}
                )
                await d.wait_for("defined", id="d")
                pid = d.proc.pid
                normal = _limit_open_files(pid, len(os.listdir(f"/proc/{pid}/fd")))
                try:
                    starved = await _requests(d, "starved")
                finally:
                    _limit_open_files(pid, normal)
                fed = await _requests(d, "fed")
                await d.close_stdin()
                await d.rest()
            assert await d.proc.wait() == 0
    _no_internal(d.events)
    lifecycle_ok(d.events)
    cron, use = starved
    assert cron["event"] == "error", cron
    assert cron["code"] == "unavailable", cron
    assert cron["message"] == "could not load cron schedules: Too many open files (EMFILE)"
    assert use["state"] == "failed", use
    assert use["error"]["type"] == "unavailable", use
    assert use["error"]["message"].endswith("Too many open files (EMFILE)"), use
    cron, use = fed
    assert cron["event"] == "scheduled", cron
    assert use["state"] == "succeeded", use
    assert use["output"]["body"] == {"ok": True}, use


async def _requests(d: Any, tag: str) -> tuple[Event, Event]:
    """A cron schedule (croniter is imported on first use) and a job using the template (the
    HTTP client too): the schedule's reply and the job's ``finished``."""
    cron = {"op": "schedule", "id": f"{tag}-cron", "cron": "0 0 1 1 *", "job": {"value": 1}}
    await d.send(cron, {"op": "submit", "id": f"{tag}-use", "template": "get"})
    reply = await d.wait_until(lambda e: e.get("id") == f"{tag}-cron")
    job = (await d.wait_for("accepted", id=f"{tag}-use"))["job"]
    return reply, await d.wait_for("finished", job=job)
