"""Every event of a job carries its submit's ``id``, through the real CLI: a driver can tie each
line to its submit without mapping job ids first (and so without the race in which a fast job's
``finished`` is read before the ``accepted`` handler mapped it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..driver import ENV, SERVE, Event, run_cli

pytestmark = pytest.mark.e2e

# One job that makes every kind of job event: log, step (--trace), output (stream), retry, task,
# workspace (keep_workspace), and its callbacks' notification and callback events.
BUSY = {
    "keep_workspace": True,
    "tasks": {
        "a": {
            "steps": [
                {"log": "first"},
                {"run": "echo out; echo err >&2; exit 1", "retry": {"attempts": 2}},
            ]
        },
        "b": {"steps": [{"value": 1}]},
    },
    "on_finish": [{"notify": "done"}],
}


def by_job(events: list[Event], job: str) -> list[Event]:
    return [ev for ev in events if ev.get("job") == job]


def test_every_event_of_a_job_carries_its_submits_id() -> None:
    events, code, _ = run_cli(
        [
            {"op": "submit", "id": "busy", "job": BUSY},
            {"op": "submit", "id": 7, "job": {"value": 1}},
            {"op": "submit", "job": {"log": "no id"}},  # a submit without id: nothing echoed
            {"op": "status", "job": "j1", "id": "ask"},
        ],
        "--heartbeat",
        "0",
        "--trace",
        "--stream",
    )
    assert code == 0
    busy = by_job(events, "j1")
    kinds = {ev["event"] for ev in busy}
    assert kinds >= {"accepted", "started", "log", "step", "task", "output", "retry", "workspace"}
    assert kinds >= {"finished", "notification", "callback"}
    replies = [ev for ev in busy if ev["event"] == "status"]
    assert [ev["id"] for ev in busy if ev not in replies] == ["busy"] * (len(busy) - len(replies))
    assert {ev["id"] for ev in by_job(events, "j2")} == {7}
    assert all("id" not in ev for ev in by_job(events, "j3"))
    for ev in busy:
        if ev["event"] == "workspace":
            subprocess.run(["rm", "-rf", ev["path"]], check=True)


def test_a_cancel_and_a_status_answer_with_their_own_id() -> None:
    events, code, _ = run_cli(
        [
            {"op": "submit", "id": "s", "job": {"sleep": 30}},
            {"op": "cancel", "job": "j1", "id": "c"},
        ],
        "--heartbeat",
        "0",
    )
    assert code == 0
    assert [(ev["event"], ev.get("id")) for ev in by_job(events, "j1")] == [
        ("accepted", "s"),
        ("cancelling", "c"),
        ("finished", "s"),
    ]


def test_a_job_run_again_after_a_restart_keeps_its_submits_id(tmp_path: Path) -> None:
    state = str(tmp_path / "state.db")
    first = subprocess.Popen(
        [*SERVE, "--state", state, "--heartbeat", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=ENV,
    )
    assert first.stdin is not None
    assert first.stdout is not None
    first.stdin.write(b'{"op":"submit","id":"long","job":{"steps":[{"sleep":30}]}}\n')
    first.stdin.flush()
    for line in first.stdout:  # started is written once it is on disk
        if b'"started"' in line:
            break
    first.kill()
    first.communicate(timeout=60)
    events, code, _ = run_cli(
        [{"op": "cancel", "job": "j1", "id": "stop"}], "--state", state, "--heartbeat", "0"
    )
    assert code == 0
    # (a `started` the first run committed but had not written may come first, again: same id)
    assert {ev.get("id") for ev in by_job(events, "j1") if ev["event"] == "started"} <= {"long"}
    lifecycle = [ev for ev in by_job(events, "j1") if ev["event"] != "started"]
    assert [(ev["event"], ev.get("id")) for ev in lifecycle] == [
        ("recovered", "long"),
        ("cancelling", "stop"),
        ("finished", "long"),
    ]
