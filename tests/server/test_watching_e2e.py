"""Watching a job through the real CLI: streamed `output` lines, a reader that stops (the child
blocks, memory stays bounded, nothing is lost), `logs`, `retry` events and failure tails."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from ..driver import Event, lifecycle_ok
from ..proc_tools import state, tagged_processes
from .test_faults import MiB, RssSampler, Served, served

pytestmark = pytest.mark.e2e

LINES = 50_000
WIDTH = 1_000  # bytes per line with its newline: 50 MB in all

WRITER = f"""
import sys
pad = "x" * ({WIDTH} - 10)
for n in range({LINES}):
    sys.stdout.write(f"{{n:09d}}{{pad}}\\n")
"""


def blocked_on_a_pipe(pid: int) -> bool:
    """Whether the process sleeps in a write to a full pipe (the kernel's wait channel)."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False
    return state(pid) == "S" and "pipe_write" in wchan


async def the_writer(sl: Served, marker: str) -> int:
    """The pid of the job's child, found by a marker in its command line."""
    while True:
        for pid in tagged_processes(sl.tag):
            try:
                if marker in Path(f"/proc/{pid}/cmdline").read_text():
                    return pid
            except OSError:
                continue
        await trio.sleep(0.02)


async def test_a_reader_that_stops_blocks_the_child_and_loses_nothing() -> None:
    """50 MB of streamed lines while the driver reads nothing: the child ends up blocked on its
    pipe, stepline's memory stays flat, and every line arrives in order once the driver reads."""
    job = {"run": [sys.executable, "-c", WRITER, "the-writer"], "stream": True}
    async with served("--heartbeat", "0", deadline=300) as sl, trio.open_nursery() as nursery:
        sampler = RssSampler(sl.pid)
        nursery.start_soon(sampler.run)
        await sl.driver.send({"op": "submit", "job": job})
        child = await the_writer(sl, "the-writer")
        with trio.fail_after(60):  # not a timing assertion: a hang would fail here, not forever
            while not blocked_on_a_pipe(child):
                await trio.sleep(0.05)
        await trio.sleep(2)  # stays blocked while nobody reads; memory is measured meanwhile
        assert blocked_on_a_pipe(child)
        stalled_growth = sampler.growth
        numbers = []
        finished: Event | None = None
        while finished is None:
            ev = await sl.driver.next_event()
            if ev["event"] == "output":
                assert ev["stream"] == "stdout"
                assert len(ev["line"]) == WIDTH - 1
                numbers.append(int(ev["line"][:9]))
            elif ev["event"] == "finished":
                finished = ev
        nursery.cancel_scope.cancel()
        await sl.driver.close_stdin()
        await sl.driver.rest()
    assert numbers == list(range(LINES))
    assert finished["state"] == "succeeded"
    assert finished["output"]["truncated"] is True
    assert stalled_growth < 40 * MiB, f"RSS grew by {stalled_growth / MiB:.1f} MiB while stalled"
    assert sampler.growth < 60 * MiB, f"RSS grew by {sampler.growth / MiB:.1f} MiB"


INTERLEAVED = """
import sys
for n in range(2000):
    print(f"out {n}", flush=True)
    print(f"err {n}", file=sys.stderr, flush=True)
sys.stdout.write("no newline")
"""


async def test_interleaved_streams_keep_their_own_order_and_match_the_log() -> None:
    job = {"steps": [{"run": [sys.executable, "-c", INTERLEAVED]}], "stream": True}
    async with served("--heartbeat", "0") as sl:
        await sl.driver.send({"op": "submit", "job": job})
        finished = await sl.driver.wait_for("finished")
        await sl.driver.send({"op": "logs", "job": "j1", "after": 0, "id": "L"})
        logs = await sl.driver.wait_for("logs")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    events = sl.driver.events
    lifecycle_ok([e for e in events if e["event"] != "logs"])  # a reply, not a job event
    streamed = [(e["stream"], e["line"]) for e in events if e["event"] == "output"]
    out = [line for stream, line in streamed if stream == "stdout"]
    err = [line for stream, line in streamed if stream == "stderr"]
    assert out == [f"out {n}" for n in range(2000)] + ["no newline"]
    assert err == [f"err {n}" for n in range(2000)]
    assert [(line["stream"], line["line"]) for line in logs["lines"]] == streamed
    assert [line["n"] for line in logs["lines"]] == list(range(1, 4002))
    assert (logs["id"], logs["next"], logs["trimmed"], logs["done"]) == ("L", 4001, 0, True)
    assert finished["output"]["stdout"].endswith("out 1999\nno newline")


async def test_logs_of_a_job_that_was_not_streamed() -> None:
    job = {"run": "seq 1 25000; echo done"}
    async with served("--heartbeat", "0") as sl:
        await sl.driver.send({"op": "submit", "job": job})
        await sl.driver.wait_for("finished")
        await sl.driver.send(
            {"op": "logs", "job": "j1"},
            {"op": "logs", "job": "j1", "after": 24999},
            {"op": "logs", "job": "j9"},
            {"op": "logs", "job": "j1", "after": -1},
        )
        first = await sl.driver.wait_for("logs")
        second = await sl.driver.wait_for("logs")
        unknown = await sl.driver.wait_for("error")
        bad = await sl.driver.wait_for("error")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    assert not [e for e in sl.driver.events if e["event"] == "output"]
    assert first["trimmed"] == 25001 - 10000
    assert first["lines"][0]["n"] == 15002
    assert first["lines"][0]["line"] == "15002"
    assert [line["line"] for line in second["lines"]] == ["25000", "done"]
    assert second["done"] is True
    assert second["next"] == 25001
    assert unknown["code"] == "unknown_job"
    assert bad["code"] == "bad_command"


async def test_a_step_tried_three_times_is_announced_twice() -> None:
    step = {"run": "echo try; echo why >&2; exit 4", "retry": {"attempts": 3, "backoff": 0.01}}
    async with served("--heartbeat", "0") as sl:
        await sl.driver.send({"op": "submit", "job": {"steps": [step]}})
        finished = await sl.driver.wait_for("finished")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    retries = [e for e in sl.driver.events if e["event"] == "retry"]
    assert [(e["attempt"], e["attempts"], e["step"]) for e in retries] == [
        (1, 3, "steps[0]"),
        (2, 3, "steps[0]"),
    ]
    assert [e["delay"] for e in retries] == [0.01, 0.02]
    assert all(e["error"]["exit"] == 4 for e in retries)
    error = finished["error"]
    assert (error["attempts"], error["stdout"], error["stderr"]) == (3, "try\n", "why\n")


async def test_failures_carry_both_tails_and_a_timeout_what_was_written() -> None:
    failing = {"run": "seq 1 3000; echo broken >&2; exit 1"}
    hanging = {"run": "echo collected; echo warn >&2; exec sleep 60", "timeout": 1}
    async with served("--heartbeat", "0") as sl:
        await sl.driver.send({"op": "submit", "job": failing})
        await sl.driver.send({"op": "submit", "job": hanging})
        one = await sl.driver.wait_for("finished", job="j1")
        two = await sl.driver.wait_for("finished", job="j2")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    assert one["error"]["stdout"].endswith("2999\n3000\n")
    assert len(one["error"]["stdout"]) == 4096
    assert one["error"]["stderr"] == "broken\n"
    assert two["error"]["type"] == "timeout"
    assert (two["error"]["stdout"], two["error"]["stderr"]) == ("collected", "warn")


FIVE_TASKS = {
    "tasks": {
        "lint": {"steps": [{"run": "echo clean"}]},
        "build": {"steps": [{"run": "echo built"}]},
        "test": {"needs": "build", "steps": [{"run": "echo '2 failed'; exit 1"}]},
        "deploy": {"needs": "test", "steps": [{"run": "echo shipped"}]},
        "report": {"needs": "test", "if": "failure", "steps": [{"value": "mailed"}]},
    }
}


async def test_a_failed_five_task_graph_reports_the_three_that_succeeded() -> None:
    async with served("--heartbeat", "0") as sl:
        await sl.driver.send({"op": "submit", "job": FIVE_TASKS})
        finished = await sl.driver.wait_for("finished")
        await sl.driver.send({"op": "status", "job": "j1"})
        status = await sl.driver.wait_for("status")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    assert finished["state"] == "failed"
    assert finished["error"]["task"] == "test"
    assert finished["error"]["stdout"] == "2 failed\n"
    partial = finished["partial"]
    assert sorted(partial) == ["build", "lint", "report"]
    assert partial["lint"]["stdout"] == "clean\n"
    assert partial["report"] == "mailed"
    assert status["jobs"][0]["partial"] == partial


STUBBORN = {"run": "trap 'echo got TERM' TERM; echo up; while :; do sleep 1; done", "grace": 300}


@pytest.mark.parametrize("options", [{"force": True}, {"grace": 0.5}])
async def test_a_cancel_can_cut_a_stubborn_childs_grace(options: dict[str, object]) -> None:
    """The child ignores SIGTERM and its step allows 300 s: only the cancel's own setting can
    end it before the test's deadline (a hang fails there, nothing is timed)."""
    async with served("--heartbeat", "0", deadline=60) as sl:
        await sl.driver.send({"op": "submit", "job": {**STUBBORN, "stream": True}})
        await sl.driver.wait_for("output", line="up")
        await sl.driver.send({"op": "cancel", "job": "j1", **options})
        await sl.driver.wait_for("cancelling")
        finished = await sl.driver.wait_for("finished")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    assert finished["state"] == "cancelled"
    lines = [e["line"] for e in sl.driver.events if e["event"] == "output"]
    assert lines[:1] == ["up"]
    if "force" in options:
        assert "got TERM" not in lines  # SIGKILL at once: no SIGTERM to trap


async def test_a_forced_cancel_ends_a_stop_already_under_way() -> None:
    """A first cancel's SIGTERM is trapped and its grace is 300 s: a second cancel with
    ``force`` must SIGKILL it now (a hang fails at the test's deadline, nothing is timed)."""
    async with served("--heartbeat", "0", deadline=60) as sl:
        await sl.driver.send({"op": "submit", "job": {**STUBBORN, "stream": True}})
        await sl.driver.wait_for("output", line="up")
        await sl.driver.send({"op": "cancel", "job": "j1", "id": 1})
        await sl.driver.send({"op": "status", "job": "j1", "id": "s"})
        status = await sl.driver.wait_for("status", id="s")
        assert status["jobs"][0]["stopping"] is True  # SIGTERM trapped: the grace is waited
        await sl.driver.send({"op": "cancel", "job": "j1", "force": True, "id": 2})
        await sl.driver.wait_for("cancelling", id=2)
        finished = await sl.driver.wait_for("finished")
        await sl.driver.close_stdin()
        await sl.driver.rest()
    assert finished["state"] == "cancelled"


async def test_status_shows_times_stopping_and_filters() -> None:
    async with served("--heartbeat", "0") as sl:
        await sl.driver.send(
            {"op": "submit", "job": {"value": 1}, "name": "a"},
            {"op": "submit", "job": {"fail": "x"}, "name": "b"},
            {"op": "submit", "job": {**STUBBORN, "stream": True}, "name": "a"},
        )
        await sl.driver.wait_for("output", line="up")
        await sl.driver.send({"op": "cancel", "job": "j3", "grace": 1})
        await sl.driver.send({"op": "status", "job": "j3", "id": "stopping"})
        stopping = await sl.driver.wait_for("status", id="stopping")
        await sl.driver.wait_for("finished", job="j3")
        await sl.driver.send(
            {"op": "status", "name": "a", "limit": 1, "id": 1},
            {"op": "status", "state": ["failed", "cancelled"], "id": 2},
            {"op": "status", "since": 0, "limit": 5, "state": "succeeded", "id": 3},
            {"op": "status", "limit": "1", "id": 4},
        )
        newest = await sl.driver.wait_for("status", id=1)
        unhappy = await sl.driver.wait_for("status", id=2)
        happy = await sl.driver.wait_for("status", id=3)
        refused = await sl.driver.wait_for("error", id=4)
        await sl.driver.close_stdin()
        await sl.driver.rest()
    (record,) = stopping["jobs"]
    assert (record["state"], record["stopping"], record["ended"]) == ("running", True, None)
    assert record["created"] <= record["started"]
    assert [r["job"] for r in newest["jobs"]] == ["j3"]
    assert newest["jobs"][0]["ended"] >= newest["jobs"][0]["started"]
    assert [r["job"] for r in unhappy["jobs"]] == ["j2", "j3"]
    assert [r["job"] for r in happy["jobs"]] == ["j1"]
    assert refused["code"] == "bad_command"
