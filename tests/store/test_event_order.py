"""``status`` never runs ahead of ``finished`` with ``--state``.

A job's outcome is in the job table at once, but its ``finished`` is written only after the
outcome's commit. A ``status`` answered meanwhile showed the job final before its ``finished``
was written, so a driver could see an outcome that a crash would then take back. Replies now
wait behind the logged events still being committed. Here every commit takes 0.3 s longer
(the server is run through a wrapper that slows the SQLite commit down), so the ``status`` sent
as soon as the job's ``started`` is read always arrives while its ``finished`` is held.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from ..driver import ENV, Driver, run_cli

pytestmark = pytest.mark.e2e

_SERVE_SLOW_COMMITS = """
import sys, time
from stepline.store import _sqlite
real = _sqlite._commit
def slow(*args, **kwargs):
    time.sleep(0.3)  # on the writer's thread: the event loop goes on meanwhile
    return real(*args, **kwargs)
_sqlite._commit = slow
sys.argv = ["stepline", "serve", *sys.argv[1:]]
from stepline.cli._main import main
main()
"""


async def test_a_status_never_shows_an_outcome_before_its_finished(tmp_path: Path) -> None:
    command = [sys.executable, "-c", _SERVE_SLOW_COMMITS, "--state", str(tmp_path / "s.db")]
    proc = await trio.lowlevel.open_process(
        [*command, "--heartbeat", "0"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV
    )
    d = Driver(proc)
    try:
        with trio.fail_after(30):
            assert (await d.next_event())["event"] == "ready"
            await d.send({"op": "submit", "id": "a", "job": {"value": 1}})
            job = (await d.wait_for("accepted", id="a"))["job"]
            await d.wait_for("started", job=job)
            await d.send({"op": "status", "id": "st", "job": job})
            status = await d.wait_for("status", id="st")
            await d.close_stdin()
            await d.rest()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    (record,) = status["jobs"]
    assert record["state"] == "succeeded", record  # the job had finished: the case that matters
    finished = next(e for e in d.events if e["event"] == "finished" and e["job"] == job)
    assert d.events.index(finished) < d.events.index(status), d.events


async def test_under_on_restart_fail_a_started_job_is_never_started_again(tmp_path: Path) -> None:
    """``started`` is written only once the job's ``running`` record is committed. Killed as
    soon as ``started`` is read (commits slowed by 0.3 s, so a ``started`` written before its
    commit would be caught inside the window every time), the job is finished ``interrupted``
    at the restart: ``--on-restart fail`` never shows ``started`` twice for one job."""
    state = str(tmp_path / "s.db")
    command = [sys.executable, "-c", _SERVE_SLOW_COMMITS, "--state", state, "--heartbeat", "0"]
    proc = await trio.lowlevel.open_process(
        [*command, "--on-restart", "fail"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
    )
    d = Driver(proc)
    try:
        with trio.fail_after(30):
            assert (await d.next_event())["event"] == "ready"
            await d.send({"op": "submit", "id": "a", "job": {"sleep": 2}})
            job = (await d.wait_for("accepted", id="a"))["job"]
            started = await d.wait_for("started", job=job)
            proc.kill()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    events, rc, stderr = run_cli([], "--state", state, "--on-restart", "fail", "--heartbeat", "0")
    assert rc == 0, stderr
    mine = [e for e in events if e.get("job") == job]
    # A copy of the `started` written before the kill may come again (same seq, same line).
    assert all(e == started for e in mine if e["event"] == "started"), mine
    recovered, finished = [e for e in mine if e["event"] != "started"]
    assert (recovered["event"], recovered["state"]) == ("recovered", "running"), mine
    assert (finished["event"], finished["state"]) == ("finished", "failed"), mine
    assert finished["error"]["type"] == "interrupted", mine
