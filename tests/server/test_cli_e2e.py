"""End-to-end: the real `stepline serve` process driven over pipes, exactly as PROTOCOL.md says."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import trio

from stepline import __version__

from ..driver import Event, lifecycle_ok, run_cli, serve

pytestmark = pytest.mark.e2e


def by_event(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e["event"] == name]


def test_ready_first_bye_last_and_eof_drains() -> None:
    events, rc, stderr = run_cli(
        [{"op": "submit", "id": 1, "job": {"steps": [{"sleep": 0.2}, {"value": "done"}]}}],
        "--workers",
        "3",
        "--queue",
        "7",
    )
    assert rc == 0, stderr
    assert events[0] == {
        "event": "ready",
        "ts": events[0]["ts"],
        "version": __version__,
        "protocol": 1,
        "workers": 3,
        "queue_size": 7,
    }
    assert events[-1]["event"] == "bye"
    assert [e["event"] for e in events[1:-1]] == ["accepted", "started", "finished"]
    assert events[1]["id"] == 1
    assert events[3]["output"] == "done"
    assert stderr == ""


def test_every_step_kind_in_one_job(tmp_path: Path) -> None:
    job = {
        "name": "tour",
        "steps": [
            {"sleep": 0.01},
            {"log": "hello"},
            {"try": {"fail": "expected"}, "catch": {"value": "caught"}},
            {"run": ["sh", "-c", "echo out; echo err >&2"]},
            {"run": "cat", "stdin": "fed", "name": "cat"},
            {"par": [{"value": 1}, {"value": 2}]},
            {"race": [{"seq": [{"sleep": 5}, {"value": "slow"}]}, {"value": "fast"}]},
            {"use": "t", "with": {"x": 3}},
        ],
    }
    events, rc, _ = run_cli(
        [
            {
                "op": "define",
                "id": "d",
                "name": "t",
                "job": {"params": {"x": 0}, "steps": [{"value": "${params.x}"}]},
            },
            {"op": "submit", "job": job, "id": "s"},
        ]
    )
    assert rc == 0
    assert by_event(events, "defined") == [
        {"event": "defined", "ts": events[1]["ts"], "id": "d", "template": "t"}
    ]
    assert by_event(events, "log")[0]["message"] == "hello"
    finished = by_event(events, "finished")[0]
    assert finished["state"] == "succeeded", finished
    assert finished["output"] == 3
    lifecycle_ok(events)


def test_run_step_outputs_and_error_types(tmp_path: Path) -> None:
    jobs = [
        {"run": ["sh", "-c", "printf 'a\\377b'; echo e >&2"]},
        {"run": "exit 3"},
        {"run": ["/nonexistent/prog"]},
        {"run": "sleep 5", "timeout": 0.3},
        {"run": "kill -TERM $$"},
        {"run": "kill -KILL $$"},
        {"run": "pwd; echo $GREETING", "cwd": str(tmp_path), "env": {"GREETING": "hi"}},
        {"run": "cat", "name": "no-stdin"},
    ]
    events, rc, _ = run_cli([{"op": "submit", "job": j} for j in jobs])
    assert rc == 0
    fin = {e["job"]: e for e in by_event(events, "finished")}
    ids = [e["job"] for e in by_event(events, "accepted")]
    ok = fin[ids[0]]["output"]
    assert ok == {"exit": 0, "stdout": "a\ufffdb", "stderr": "e\n"}
    assert fin[ids[1]]["error"]["type"] == "failure"
    assert fin[ids[1]]["error"]["exit"] == 3
    assert fin[ids[1]]["error"]["step"] == "steps[0]"
    assert fin[ids[2]]["error"]["type"] == "startup_failure"
    assert fin[ids[3]]["error"]["type"] == "timeout"
    assert fin[ids[4]]["error"]["type"] == "terminated"
    assert fin[ids[5]]["error"]["type"] == "killed"
    assert fin[ids[6]]["output"]["stdout"] == f"{tmp_path}\nhi\n"
    assert fin[ids[7]]["output"]["stdout"] == ""  # stdin is /dev/null, never stepline's stdin
    lifecycle_ok(events)


BAD_INPUT: list[tuple[bytes, str]] = [
    (b"{not json\n", "bad_json"),
    (b"[1, 2]\n", "bad_json"),
    (b'"just a string"\n', "bad_json"),
    (b'{"op": "ping", "x": "\xff"}\n', "bad_json"),
    (b'{"op": "submit", "job": {"sleep": NaN}}\n', "bad_json"),
    (b'{"op": "submit", "job": {"sleep": 1e999}}\n', "bad_json"),
    (b"[" * 1100 + b"]" * 1100 + b"\n", "bad_json"),
    (b'{"op": "frobnicate"}\n', "bad_command"),
    (b'{"nop": 1}\n', "bad_command"),
    (b'{"op": "ping", "extra": 1}\n', "bad_command"),
    (b'{"op": "cancel", "job": 5}\n', "bad_command"),
    (b'{"op": "submit", "job": {"sleep": -1}}\n', "invalid_job"),
    (b'{"op": "submit", "job": {"sleep": "1"}}\n', "invalid_job"),
    (b'{"op": "submit", "job": {"steps": [{"par": [{"run": 5}]}]}}\n', "invalid_job"),
    (
        b'{"op": "submit", "job": ' + b'{"seq": [' * 400 + b'{"value": 1}' + b"]}" * 400 + b"}\n",
        "invalid_job",
    ),
    (b'{"op": "cancel", "job": "j404"}\n', "unknown_job"),
    (b'{"op": "submit", "template": "nope"}\n', "unknown_template"),
    (b'{"op": "ping", "data": "' + b"x" * 9000 + b'"}\n', "line_too_long"),
]


def test_bad_input_gets_one_typed_error_each_and_the_executor_goes_on() -> None:
    lines = [line for line, _ in BAD_INPUT]
    events, rc, stderr = run_cli([*lines, {"op": "ping", "id": "after"}], "--max-line", "8192")
    assert rc == 0, stderr
    errors = by_event(events, "error")
    assert [e["code"] for e in errors] == [code for _, code in BAD_INPUT]
    assert all(isinstance(e["message"], str) and e["message"] for e in errors)
    assert by_event(events, "pong")[0]["id"] == "after"
    assert "Traceback" not in stderr


def test_error_echoes_the_id_and_names_the_path() -> None:
    events, _, _ = run_cli(
        [
            {
                "op": "submit",
                "id": 42,
                "job": {"steps": [{"value": 1}, {"value": 2}, {"par": [{"run": 7}]}]},
            },
            {"op": "frobnicate", "id": "abc"},
        ]
    )
    errors = by_event(events, "error")
    assert errors[0]["id"] == 42
    assert "steps[2].par[0].run" in errors[0]["message"]
    assert errors[1]["id"] == "abc"


def test_crlf_blank_lines_and_a_final_line_without_newline() -> None:
    raw = b'\r\n\n{"op":"ping","id":1}\r\n   \n{"op":"ping","id":2}'
    events, _rc, _ = run_cli([raw])
    assert [e["id"] for e in by_event(events, "pong")] == [1, 2]


def test_status_stats_and_keep() -> None:
    events, _, _ = run_cli(
        [
            *[{"op": "submit", "job": {"value": i}, "name": f"n{i}"} for i in range(5)],
            {"op": "shutdown", "id": "s"},  # drains; status below still answers
            {"op": "status", "id": "all"},
            {"op": "stats", "id": "st"},
            {"op": "submit", "job": {"value": 1}, "id": "late"},
        ],
        "--keep",
        "2",
        "--workers",
        "1",
    )
    # commands after `shutdown` race with the drain, so read their answers leniently:
    late = [e for e in events if e.get("id") == "late"]
    assert late
    assert late[0]["event"] == "error"
    assert late[0]["code"] == "shutting_down"
    status = next(e for e in events if e.get("id") == "all")
    finished = [r for r in status["jobs"] if r["state"] == "succeeded"]
    assert len(finished) <= 2
    stats = next(e for e in events if e.get("id") == "st")
    assert {"queued", "running", "finished", "workers", "queue_size"} <= stats.keys()
    assert events[-1]["event"] == "bye"


def test_queue_full_reject() -> None:
    cmds = [{"op": "submit", "job": {"sleep": 0.5}, "id": i} for i in range(5)]
    events, _, _ = run_cli(cmds, "--workers", "1", "--queue", "1", "--on-full", "reject")
    assert by_event(events, "error")[0]["code"] == "queue_full"
    lifecycle_ok(events)


async def test_status_of_one_job_cancel_and_heartbeat() -> None:
    async with serve("--heartbeat", "0.05") as sl:
        await sl.send({"op": "submit", "job": {"sleep": 30}, "id": "a"})
        job = (await sl.wait_for("accepted", id="a"))["job"]
        progress = await sl.wait_for("progress", job=job)
        assert progress["step"] == "steps[0]"
        await sl.send({"op": "status", "job": job, "id": "s"})
        (record,) = (await sl.wait_for("status", id="s"))["jobs"]
        assert record["state"] == "running"
        await sl.send({"op": "cancel", "job": job, "id": "c"})
        await sl.wait_for("cancelling", job=job, id="c")
        finished = await sl.wait_for("finished", job=job)
        assert finished["state"] == "cancelled"
        await sl.send({"op": "cancel", "job": job, "id": "again"})
        assert (await sl.wait_for("error", id="again"))["code"] == "already_finished"
        await sl.close_stdin()
        assert (await sl.rest())[-1]["event"] == "bye"
        assert await sl.proc.wait() == 0


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


async def start_child(sl, pidfile: Path, script: str, grace: float = 5) -> str:
    job = {"run": ["sh", "-c", f"echo $$ > {pidfile}; {script}"], "grace": grace}
    await sl.send({"op": "submit", "job": job, "id": str(pidfile)})
    job_id: str = (await sl.wait_for("accepted", id=str(pidfile)))["job"]
    while not pidfile.exists() or not pidfile.read_text().strip():
        await trio.sleep(0.01)
    return job_id


@pytest.mark.parametrize("how", ["op", "SIGTERM", "SIGINT"])
async def test_cancelling_shutdown_stops_children_and_says_bye(tmp_path: Path, how: str) -> None:
    async with serve() as sl:
        job = await start_child(sl, tmp_path / "pid", "sleep 30")
        sleepers = [{"op": "submit", "job": {"sleep": s}} for s in (30, 30, 30, 3)]
        await sl.send(*sleepers)
        await sl.wait_until(lambda e: e["event"] == "accepted" and e["job"] == "j5")
        if how == "op":
            await sl.send({"op": "shutdown", "mode": "cancel", "id": "x"})
        else:
            sl.signal(getattr(signal, how))
        rest = await sl.rest()
        assert await sl.proc.wait() == 0
    events = sl.events
    assert rest[-1]["event"] == "bye"
    assert {e["state"] for e in by_event(events, "finished")} == {"cancelled"}
    lifecycle_ok(events)
    assert pids_alive([int((tmp_path / "pid").read_text())]) == []
    assert job == "j1"


async def test_second_signal_kills_at_once(tmp_path: Path) -> None:
    async with serve() as sl:
        await start_child(sl, tmp_path / "pid", "trap '' TERM; sleep 30 & wait", grace=60)
        sl.signal(signal.SIGINT)
        await trio.sleep(0.3)  # the child ignores SIGTERM and has a 60 s grace
        assert sl.proc.returncode is None
        sl.signal(signal.SIGINT)
        with trio.fail_after(5):
            assert await sl.proc.wait() == 130
    assert pids_alive([int((tmp_path / "pid").read_text())]) == []


async def test_driver_closing_stdout_stops_jobs_without_traceback(tmp_path: Path) -> None:
    async with serve() as sl:
        await start_child(sl, tmp_path / "pid", "sleep 30")
        assert sl.proc.stdout is not None
        await sl.proc.stdout.aclose()
        await sl.send({"op": "ping"})
        with trio.fail_after(10):
            rc = await sl.proc.wait()
    assert rc == 1
    assert pids_alive([int((tmp_path / "pid").read_text())]) == []


def test_trace_adds_step_events() -> None:
    events, _, _ = run_cli([{"op": "submit", "job": {"seq": [{"value": 1}]}}], "--trace")
    steps = by_event(events, "step")
    assert [(s["step"], s["status"]) for s in steps] == [
        ("steps[0]", "started"),
        ("steps[0].seq[0]", "started"),
        ("steps[0].seq[0]", "succeeded"),
        ("steps[0]", "succeeded"),
    ]


def test_job_timeout_through_the_cli() -> None:
    events, _, _ = run_cli(
        [{"op": "submit", "job": {"steps": [{"run": "sleep 10"}], "timeout": 0.3}}]
    )
    (finished,) = by_event(events, "finished")
    assert finished["state"] == "timed_out"
    assert finished["error"]["type"] == "timeout"


@pytest.mark.parametrize("gap", [0.0, 0.02, 0.1])
async def test_two_quick_signals_never_end_by_signal(gap: float) -> None:
    """Regression: a second SIGINT landing after trio's receiver closed exited -2 (killed)."""
    async with serve() as sl:
        sl.signal(signal.SIGINT)
        await trio.sleep(gap)
        if sl.proc.returncode is None:
            sl.signal(signal.SIGINT)
        with trio.fail_after(10):
            rc = await sl.proc.wait()
    assert rc in (0, 130), rc


def test_jobs_that_cannot_wait_run_as_they_are_read_behind_a_waiting_one() -> None:
    # Jobs that complete at once run where they are read while a worker is free and none waits:
    # each one's events before the next submit's. Behind a job that waits for its worker
    # (queued, not started), they keep their place in the queue.
    cmds = [
        *[{"op": "submit", "id": i, "job": {"value": i}} for i in range(3)],
        {"op": "submit", "id": "slow", "job": {"sleep": 0.2}},
        {"op": "submit", "id": "busy", "job": {"sleep": 0.2}},
        {"op": "submit", "id": "behind", "job": {"value": "b"}},
    ]
    events, rc, stderr = run_cli(cmds, "--workers", "2")
    assert rc == 0, stderr
    lifecycle_ok(events)
    quick = [(e["event"], e["id"]) for e in events if e.get("id") in (0, 1, 2)]
    assert quick == [(kind, i) for i in range(3) for kind in ("accepted", "started", "finished")]
    started = [e["id"] for e in by_event(events, "started")]
    assert sorted(started[3:5]) == ["busy", "slow"]  # two workers: either may start first
    assert started[5] == "behind"
