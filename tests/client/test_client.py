"""The subprocess clients, ``stepline.Client`` (threads) and ``stepline.AsyncClient`` (trio),
driving real ``stepline serve`` children; and the sans-I/O session they share."""

from __future__ import annotations

import math
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import stepline
from stepline import AsyncClient, Client, ClientError, JobFailed, JobState
from stepline import steps as s
from stepline.client._history import EventHistory
from stepline.client._session import ClientSession

pytestmark = pytest.mark.e2e

ARGS = ("--workers", "2", "--heartbeat", "0")


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """One child shared by the tests that only send commands (spawning one costs ~0.4 s)."""
    with Client(ARGS) as shared:
        yield shared


def sleeper(pidfile: Path) -> dict[str, Any]:
    """A `run` step that records its pid, then sleeps for half a minute."""
    return s.run(["sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"])


def wait_for_pid(pidfile: Path) -> int:
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the job's process never started"
        time.sleep(0.01)
    return int(pidfile.read_text())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the sync client, on a shared child ---------------------------------------------------------


def test_submit_wait_events_status_and_stats(client: Client) -> None:
    assert client.ready["protocol"] == 1
    assert client.ready["workers"] == 2
    job = client.submit(s.job(s.log("hi"), s.run(["echo", "out"]), name="echo"))
    assert job.wait(timeout=10) == {"exit": 0, "stdout": "out\n", "stderr": ""}
    assert job.state is JobState.SUCCEEDED
    assert [e["event"] for e in job.events()] == ["accepted", "started", "log", "finished"]
    (record,) = client.status(job)
    assert client.status(job.id) == [record]
    assert record["name"] == "echo"
    assert record["state"] == "succeeded"
    stats = client.stats()
    assert stats["workers"] == 2
    assert stats["finished"]["succeeded"] >= 1


def test_define_and_submit_a_template(client: Client) -> None:
    client.define("add", {"params": {"x": 0}, "steps": [{"value": "${params.x}"}]})
    assert client.submit(template="add", params={"x": 7}).wait(timeout=10) == 7
    assert client.submit(s.use("add", x=[1])).wait(timeout=10) == [1]


def test_a_failed_job_raises_job_failed(client: Client) -> None:
    job = client.submit(s.job(s.named(s.fail("boom"), "f")))
    with pytest.raises(JobFailed) as caught:
        job.wait(timeout=10)
    assert caught.value.state is JobState.FAILED
    assert caught.value.error == {
        "type": "fail",
        "message": "boom",
        "step": "steps[0]",
        "name": "f",
    }


@pytest.mark.parametrize(
    ("op", "fields", "code"),
    [
        ("submit", {"job": {"sleep": -1}}, "invalid_job"),
        ("submit", {"template": "no-such-template"}, "unknown_template"),
        ("cancel", {"job": "j99999"}, "unknown_job"),
        ("frobnicate", {}, "bad_command"),
        ("ping", {"padding": "x" * (2 << 20)}, "line_too_long"),  # no id echoed: matched anyway
        ("submit", {"job": {"sleep": math.nan}}, "bad_json"),  # refused before it is sent
    ],
)
def test_an_error_reply_raises_client_error_with_its_code(
    client: Client, op: str, fields: dict[str, Any], code: str
) -> None:
    with pytest.raises(ClientError) as caught:
        client.request(op, timeout=10, **fields)
    assert caught.value.code == code
    assert isinstance(caught.value, stepline.SteplineError)
    assert client.request("ping", timeout=10)["event"] == "pong"  # and the client goes on


def test_wait_timeout_then_cancel(client: Client, tmp_path: Path) -> None:
    job = client.submit(sleeper(tmp_path / "pid"))
    pid = wait_for_pid(tmp_path / "pid")
    with pytest.raises(TimeoutError):
        job.wait(timeout=0.05)
    assert job.cancel(timeout=10) is True
    assert job.state is JobState.CANCELLED
    assert not alive(pid)
    assert job.cancel(timeout=10) is False
    with pytest.raises(JobFailed) as caught:
        job.wait()
    assert caught.value.state is JobState.CANCELLED
    assert [e["event"] for e in job.events()] == ["accepted", "started", "cancelling", "finished"]


def test_threads_sharing_a_client_each_get_their_own_replies(client: Client) -> None:
    results: dict[int, Any] = {}

    def submit_some(base: int) -> None:
        jobs = {base + i: client.submit(s.value(base + i)) for i in range(10)}
        for number, job in jobs.items():
            results[number] = job.wait(timeout=10)

    threads = [threading.Thread(target=submit_some, args=(100 * t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == {n: n for n in results}
    assert len(results) == 40


# -- the sync client's lifetime, each on its own child -------------------------------------------


def test_the_tap_sees_every_line_both_ways() -> None:
    seen: list[tuple[str, str]] = []
    with Client(ARGS, tap=lambda way, msg: seen.append((way, msg.get("op") or msg["event"]))) as c:
        c.submit(s.value(1)).wait(timeout=10)
    assert seen == [
        ("<", "ready"),
        (">", "submit"),
        ("<", "accepted"),
        ("<", "started"),
        ("<", "finished"),
        ("<", "bye"),
    ]


def test_leaving_the_block_normally_drains_running_jobs() -> None:
    with Client(ARGS) as c:
        job = c.submit(s.job(s.run("sleep 0.3"), s.value("drained")))
    assert job.state is JobState.SUCCEEDED
    assert job.wait() == "drained"
    assert c.close() == 0


def fail_with_jobs_running(pidfile: Path, made: list[Any]) -> None:
    """Start a child and four jobs (the first running a process), then raise."""
    with Client(ARGS) as c:
        made.append(c)
        made.append(c.submit(sleeper(pidfile)))
        made.extend(c.submit(s.sleep(30)) for _ in range(3))
        wait_for_pid(pidfile)
        raise KeyError("boom")


def test_leaving_the_block_with_an_exception_cancels_and_stops_processes(tmp_path: Path) -> None:
    start = time.monotonic()
    made: list[Any] = []
    with pytest.raises(KeyError, match="boom"):
        fail_with_jobs_running(tmp_path / "pid", made)
    c, *jobs = made
    assert time.monotonic() - start < 8
    assert [j.state for j in jobs] == [JobState.CANCELLED] * 4
    assert not alive(int((tmp_path / "pid").read_text()))
    assert c.close() == 0


def test_a_killed_child_fails_every_waiting_handle() -> None:
    c = Client(ARGS)
    c.start()
    job = c.submit(s.sleep(30))
    c.kill()
    with pytest.raises(ClientError) as caught:
        job.wait(timeout=10)
    assert caught.value.code == "disconnected"
    assert "status -9" in caught.value.message
    with pytest.raises(ClientError, match="disconnected"):
        c.submit(s.value(1))
    with pytest.raises(ClientError, match="disconnected"):
        list(job.events(timeout=10))
    assert c.close() == -9


def test_a_client_used_without_with_or_start_says_how_to_start_it() -> None:
    """Regression: ``Client().submit`` said only "has not been started", ``.ready`` asserted."""
    c = Client(ARGS)
    for use in (lambda: c.submit(s.value(1)), lambda: c.ready, lambda: c.close(cancel=True)):
        with pytest.raises(RuntimeError, match=r"use `with stepline.Client\(\) as c:`"):
            use()
    c.start()
    assert c.submit(s.value(1)).wait(timeout=30) == 1
    assert c.close() == 0


def test_a_child_that_cannot_start_is_reported_at_start() -> None:
    with (
        pytest.raises(ClientError) as caught,
        Client(["--workers", "0"], stderr=subprocess.DEVNULL),
    ):
        pass  # pragma: no cover - never reached
    assert caught.value.code == "disconnected"
    assert "status 2" in caught.value.message


# -- the trio client -----------------------------------------------------------------------------


async def test_async_client_round_trip(tmp_path: Path) -> None:
    async with AsyncClient(ARGS) as c:
        assert c.ready["workers"] == 2
        await c.define("t", {"steps": [{"value": "${params.v}"}], "params": {"v": 0}})
        job = await c.submit(s.job(s.log("x"), s.use("t", v=5)))
        assert await job.wait() == 5
        assert [e["event"] async for e in job.events()] == [
            "accepted",
            "started",
            "log",
            "finished",
        ]
        assert (await c.status(job.id))[0]["output"] == 5
        assert (await c.stats())["finished"]["succeeded"] == 1
        with pytest.raises(ClientError) as caught:
            await c.submit({"run": 5})
        assert caught.value.code == "invalid_job"
        slow = await c.submit(sleeper(tmp_path / "pid"))
        async for ev in slow.events():
            if ev["event"] == "started":
                break
        assert await slow.cancel() is True
        assert await slow.cancel() is False
        assert slow.state is JobState.CANCELLED
    assert c.returncode == 0


async def test_async_leaving_normally_drains() -> None:
    async with AsyncClient(ARGS) as c:
        job = await c.submit(s.job(s.run("sleep 0.3"), s.value("drained")))
    assert job.state is JobState.SUCCEEDED
    assert c.returncode == 0


async def async_fail_with_jobs_running(pidfile: Path, made: list[Any]) -> None:
    async with AsyncClient(ARGS) as c:
        made.append(c)
        made.append(await c.submit(sleeper(pidfile)))
        made.extend([await c.submit(s.sleep(30)), await c.submit(s.sleep(30))])
        await trio.to_thread.run_sync(wait_for_pid, pidfile)
        raise KeyError("boom")


async def test_async_exception_cancels_every_job_and_is_raised_as_itself(tmp_path: Path) -> None:
    made: list[Any] = []
    with pytest.raises(KeyError, match="boom"):
        await async_fail_with_jobs_running(tmp_path / "pid", made)
    c, *jobs = made
    assert [j.state for j in jobs] == [JobState.CANCELLED] * 3
    assert not alive(int((tmp_path / "pid").read_text()))
    assert c.returncode == 0


async def test_async_outer_cancellation_cancels_every_job(tmp_path: Path) -> None:
    job = None
    with trio.move_on_after(20) as scope:
        async with AsyncClient(ARGS) as c:
            job = await c.submit(sleeper(tmp_path / "pid"))
            await trio.to_thread.run_sync(wait_for_pid, tmp_path / "pid")
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert job is not None
    assert job.state is JobState.CANCELLED
    assert c.returncode == 0


async def test_async_cancelled_while_draining_still_stops_jobs_in_order(tmp_path: Path) -> None:
    with trio.move_on_after(30) as scope:
        async with AsyncClient(ARGS) as c:
            job = await c.submit(sleeper(tmp_path / "pid"))
            await trio.to_thread.run_sync(wait_for_pid, tmp_path / "pid")
            scope.deadline = trio.current_time() + 0.3  # fires during the drain below
    assert scope.cancelled_caught
    assert job.state is JobState.CANCELLED  # stdin was closed: told by SIGTERM, not killed
    assert c.returncode == 0
    assert not alive(int((tmp_path / "pid").read_text()))


async def test_async_a_killed_child_fails_waiting_handles() -> None:
    async with AsyncClient(ARGS) as c:
        job = await c.submit(s.sleep(30))
        c.kill()
        with pytest.raises(ClientError) as caught:
            await job.wait()
        assert caught.value.code == "disconnected"
        with pytest.raises(ClientError, match="disconnected"):
            await c.submit(s.value(1))
    assert c.returncode == -9


# -- the shared protocol logic, without a child --------------------------------------------------


def session() -> ClientSession[EventHistory]:
    return ClientSession(EventHistory)


def test_replies_are_matched_by_id_and_submits_get_their_history() -> None:
    sess = session()
    first, _ = sess.command("ping", {})
    second, command = sess.command("submit", {"job": {"value": 1}})
    assert command == {"op": "submit", "id": second, "job": {"value": 1}}
    sess.receive({"event": "accepted", "ts": 1.0, "job": "j1", "id": second})
    sess.receive({"event": "pong", "ts": 1.0, "id": first})
    reply, history = sess.take_reply(second)
    assert reply["job"] == "j1"
    assert history is not None
    assert history.job == "j1"
    assert sess.take_reply(first) == ({"event": "pong", "ts": 1.0, "id": first}, None)


def test_an_error_without_an_id_answers_the_oldest_unanswered_command() -> None:
    sess = session()
    first, _ = sess.command("ping", {})
    second, _ = sess.command("ping", {})
    sess.receive({"event": "pong", "ts": 1.0, "id": first})
    sess.receive({"event": "error", "ts": 1.0, "code": "line_too_long", "message": "long"})
    assert sess.take_reply(first)[0]["event"] == "pong"
    with pytest.raises(ClientError) as caught:
        sess.take_reply(second)
    assert caught.value.code == "line_too_long"


def test_a_disconnect_answers_everything_and_refuses_new_commands() -> None:
    sess = session()
    request, _ = sess.command("submit", {"job": {"value": 1}})
    sess.receive({"event": "accepted", "ts": 1.0, "job": "j1", "id": 99})  # not our id
    assert not sess.answered(request)
    unfinished = sess.disconnect("gone")
    assert [h.job for h in unfinished] == ["j1"]
    assert sess.answered(request)
    with pytest.raises(ClientError, match="gone"):
        sess.take_reply(request)
    with pytest.raises(ClientError, match="disconnected"):
        sess.command("ping", {})
