"""Fault tests on the real ``stepline serve``: hostile drivers, hostile children, and signals.

Each test ends the same way: stepline has exited with the status PROTOCOL.md (or NOTES.md, where
the spec is silent) gives, every job it accepted has its one ``finished`` (when stdout is still
readable), nothing on stderr looks like a crash, and no process stepline started is still alive.
"No process left" is checked without trusting stepline's own bookkeeping: stepline runs with a
unique marker in its environment, which every descendant inherits, and ``/proc`` is searched for
it (see :mod:`tests.proc_tools`). Each test extends a scenario of ``test_cli_e2e.py`` with what
that file does not cover (grandchildren, queued jobs, blocked writes, timing, memory).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from ..driver import SERVE, Driver, lifecycle_ok
from ..proc_tools import (
    new_tag,
    rss_bytes,
    tagged_env,
    tagged_processes,
    wait_for_pids_to_die,
    wait_until_gone,
)

pytestmark = pytest.mark.e2e

MiB = 1 << 20


class Served:
    """A running stepline, its driver, its pid, and what it wrote on stderr."""

    def __init__(self, driver: Driver, tag: str, stderr: Any) -> None:
        self.driver = driver
        self.tag = tag
        self._stderr = stderr
        self.final_stderr = ""

    @property
    def pid(self) -> int:
        return self.driver.proc.pid

    def stderr(self) -> str:
        """What stepline wrote on stderr so far (all of it, once ``served`` has exited)."""
        if self._stderr.closed:
            return self.final_stderr
        self._stderr.seek(0)
        self.final_stderr = str(self._stderr.read().decode(errors="replace"))
        return self.final_stderr


@asynccontextmanager
async def served(*args: str, deadline: float = 60) -> AsyncIterator[Served]:
    """``stepline serve ARGS`` with a tagged environment and stderr kept in a file.

    On the way out it checks that no tagged process survived stepline.
    """
    tag = new_tag()
    with tempfile.TemporaryFile() as stderr:
        proc = await trio.lowlevel.open_process(
            [*SERVE, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=tagged_env(tag),
        )
        sl = Served(Driver(proc), tag, stderr)
        try:
            with trio.fail_after(deadline):
                assert (await sl.driver.next_event())["event"] == "ready"
                yield sl
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            sl.stderr()  # keep it: the file goes away with this block
        survivors = wait_until_gone(tag)
        assert survivors == [], f"processes outlived stepline: {survivors}"
        assert "Traceback" not in sl.stderr(), sl.stderr()


async def seen(sl: Served, name: str, **fields: Any) -> dict[str, Any]:
    """Like ``Driver.wait_for``, but also finds an event that was already read."""
    for ev in sl.driver.events:
        if ev["event"] == name and all(ev.get(k) == v for k, v in fields.items()):
            return ev
    return await sl.driver.wait_for(name, **fields)


async def submit(sl: Served, job: Any, ref: str) -> str:
    """Submit and return the job id."""
    await sl.driver.send({"op": "submit", "job": job, "id": ref})
    return str((await sl.driver.wait_for("accepted", id=ref))["job"])


async def wait_for_file(path: Path, lines: int = 1) -> list[int]:
    """The pids a child wrote, one per line, once there are ``lines`` of them."""
    while True:
        text = path.read_text() if path.exists() else ""
        pids = [int(x) for x in text.split()]
        if len(pids) >= lines:
            return pids
        await trio.sleep(0.02)


def family(pidfile: Path, extra: str = "") -> dict[str, Any]:
    """A ``run`` step whose shell forks two grandchildren and a great-grandchild, all of which
    keep the output pipes open, then waits. Every pid goes to ``pidfile``."""
    script = (
        f"echo $$ >> {pidfile}; "
        f"sleep 300 & echo $! >> {pidfile}; "
        f"sh -c 'sleep 300 & echo $! >> {pidfile}; wait' & echo $! >> {pidfile}; "
        f"{extra} wait"
    )
    return {"run": ["sh", "-c", script], "grace": 1}


class RssSampler:
    """Samples a process's resident memory in the background; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline

    async def run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, LookupError):
                return
            await trio.sleep(0.02)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


# -- the driver misbehaves ---------------------------------------------------------------------


async def test_stdout_closed_with_running_queued_and_forking_jobs(tmp_path: Path) -> None:
    async with served("--workers", "2", "--queue", "8") as sl:
        pidfile = tmp_path / "pids"
        await submit(sl, family(pidfile), "family")
        await submit(sl, {"sleep": 300}, "sleeper")
        for n in range(5):
            await submit(sl, {"run": "sleep 300"}, f"queued{n}")
        await wait_for_file(pidfile, 4)
        assert sl.driver.proc.stdout is not None
        await sl.driver.proc.stdout.aclose()
        await sl.driver.send({"op": "ping"})  # the pong cannot be written: EPIPE
        with trio.fail_after(10):
            assert await sl.driver.proc.wait() == 1
    assert "stdout was closed" in sl.stderr()


async def test_stdout_closed_while_the_writer_is_blocked(tmp_path: Path) -> None:
    """The writer is stuck in a full pipe (nobody reads) when the driver closes it."""
    chatty = {"steps": [{"log": "x" * 200}] * 3000}
    async with served() as sl:
        for n in range(3):
            await sl.driver.send({"op": "submit", "job": chatty, "id": n})
        await trio.sleep(1)  # far more than a pipe's 64 KiB is pending now
        assert sl.driver.proc.stdout is not None
        await sl.driver.proc.stdout.aclose()
        with trio.fail_after(10):
            assert await sl.driver.proc.wait() == 1


async def test_stdin_closed_while_jobs_run_drains_them(tmp_path: Path) -> None:
    """EOF is a drain: running and queued jobs (children, grandchildren) run to the end."""
    job = {"run": ["sh", "-c", "(sleep 0.3; echo grandchild) & sleep 0.2; echo child; wait"]}
    async with served("--workers", "2") as sl:
        ids = [await submit(sl, job, f"r{n}") for n in range(3)]
        ids.append(await submit(sl, {"steps": [{"sleep": 0.3}, {"value": 1}]}, "s"))
        await seen(sl, "started", job=ids[0])
        await sl.driver.close_stdin()
        rest = await sl.driver.rest()
        assert await sl.driver.proc.wait() == 0
    assert rest[-1]["event"] == "bye"
    finished = {e["job"]: e for e in sl.driver.events if e["event"] == "finished"}
    assert {finished[j]["state"] for j in ids} == {"succeeded"}
    assert finished[ids[0]]["output"]["stdout"] == "child\ngrandchild\n"
    lifecycle_ok(sl.driver.events)


async def read_slowly(driver: Driver, finished_jobs: int) -> list[dict[str, Any]]:
    """Read stdout in small sips with pauses until ``finished_jobs`` jobs have finished."""
    stdout = driver.proc.stdout
    assert stdout is not None
    raw = b""
    while raw.count(b'"event":"finished"') < finished_jobs:
        raw += await stdout.receive_some(4096)
        await trio.sleep(0.001)
    *lines, tail = raw.split(b"\n")
    driver.unread(tail)
    return [json.loads(line) for line in lines]


async def test_slow_reader_of_a_chatty_job_loses_nothing_and_memory_stays_flat() -> None:
    """Four jobs of 5,000 ``log`` steps each, while the driver reads slowly: every line
    arrives, in order, and stepline waits for the reader instead of buffering without bound."""
    chatty = {"steps": [{"log": f"line {n} " + "z" * 60} for n in range(5000)]}
    async with served("--heartbeat", "0.01") as sl, trio.open_nursery() as nursery:
        sampler = RssSampler(sl.pid)
        nursery.start_soon(sampler.run)
        for n in range(4):
            await sl.driver.send({"op": "submit", "job": chatty, "id": n})
        await trio.sleep(1)  # read nothing at first: the pipe and the outbox fill up
        events = await read_slowly(sl.driver, 4)
        sl.driver.events += events
        await sl.driver.send({"op": "ping", "id": "still here"})
        await sl.driver.wait_for("pong", id="still here")
        await sl.driver.close_stdin()
        await sl.driver.rest()
        nursery.cancel_scope.cancel()
    for job in {e["job"] for e in events if e["event"] == "accepted"}:
        logs = [e["message"] for e in events if e["event"] == "log" and e["job"] == job]
        assert logs == [step["log"] for step in chatty["steps"]]
    lifecycle_ok(sl.driver.events)
    assert sampler.growth < 60 * MiB, f"RSS grew by {sampler.growth / MiB:.1f} MiB"


# -- children misbehave ------------------------------------------------------------------------


async def test_child_ignoring_sigterm_is_killed_after_its_grace(tmp_path: Path) -> None:
    stubborn = {
        "run": ["sh", "-c", f"trap '' TERM; echo $$ > {tmp_path}/pid; sleep 300 & wait"],
        "grace": 0.5,
    }
    async with served() as sl:
        job = await submit(sl, stubborn, "s")
        await wait_for_file(tmp_path / "pid")
        await sl.driver.send({"op": "cancel", "job": job, "id": "c"})
        cancelling = await sl.driver.wait_for("cancelling", job=job)
        finished = await sl.driver.wait_for("finished", job=job)
        took = finished["ts"] - cancelling["ts"]
        assert finished["state"] == "cancelled"
        assert 0.4 <= took < 5, took  # SIGTERM ignored: SIGKILL after the 0.5 s grace
        timed = {**stubborn, "run": ["sh", "-c", "trap '' TERM; sleep 300"], "timeout": 0.2}
        second = await submit(sl, timed, "t")
        finished = await sl.driver.wait_for("finished", job=second)
        assert finished["error"]["type"] == "timeout"
        assert 0.6 <= finished["elapsed"] < 5, finished  # timeout + grace
        await sl.driver.close_stdin()
        await sl.driver.rest()
        assert await sl.driver.proc.wait() == 0


@pytest.mark.parametrize("stop", ["cancel", "timeout", "shutdown"])
async def test_every_descendant_is_stopped(tmp_path: Path, stop: str) -> None:
    """Grandchildren and great-grandchildren holding the pipes go with the child's group."""
    pidfile = tmp_path / "pids"
    job = family(pidfile)
    if stop == "timeout":
        job["timeout"] = 0.5
    async with served() as sl:
        job_id = await submit(sl, job, "f")
        pids = await wait_for_file(pidfile, 4)
        assert len(tagged_processes(sl.tag)) >= 5  # stepline, sh, two sleeps, sh -c, sleep
        if stop == "cancel":
            await sl.driver.send({"op": "cancel", "job": job_id})
        elif stop == "shutdown":
            await sl.driver.send({"op": "shutdown", "mode": "cancel"})
        finished = await sl.driver.wait_for("finished", job=job_id)
        assert finished["state"] == ("failed" if stop == "timeout" else "cancelled")
        assert wait_for_pids_to_die(pids) == [], "descendants survived their job"
        await sl.driver.close_stdin()
        await sl.driver.rest()
        assert await sl.driver.proc.wait() == 0


async def test_hundreds_of_megabytes_of_output_are_capped_in_bounded_memory() -> None:
    job = {"run": ["sh", "-c", "yes | head -c 300000000; yes e | head -c 100000000 >&2"]}
    async with served() as sl, trio.open_nursery() as nursery:
        sampler = RssSampler(sl.pid)
        nursery.start_soon(sampler.run)
        job_id = await submit(sl, job, "big")
        finished = await sl.driver.wait_for("finished", job=job_id)
        nursery.cancel_scope.cancel()
        await sl.driver.close_stdin()
        await sl.driver.rest()
    output = finished["output"]
    assert finished["state"] == "succeeded"
    assert output["truncated"] is True
    assert len(output["stdout"]) == MiB == len(output["stderr"])
    assert output["stdout"].startswith("y\ny\n")
    assert sampler.growth < 60 * MiB, f"RSS grew by {sampler.growth / MiB:.1f} MiB"


# -- signals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_second_signal_stops_at_once_and_still_finishes_every_job(
    tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    """Stubborn children, grandchildren and queued jobs; two signals back to back."""
    stubborn = {
        "run": ["sh", "-c", f"trap '' TERM; echo $$ >> {tmp_path}/s; sleep 300 & wait"],
        "grace": 60,
    }
    async with served("--workers", "3", "--queue", "10") as sl:
        await submit(sl, stubborn, "stubborn")
        await submit(sl, family(tmp_path / "f"), "family")
        await submit(sl, {"retry": {"attempts": 100, "backoff": 1}, "fail": "x"}, "backoff")
        for n in range(6):
            await submit(sl, {"run": "sleep 300"}, f"q{n}")
        await wait_for_file(tmp_path / "s")
        await wait_for_file(tmp_path / "f", 4)
        sl.driver.signal(signum)
        # Signals that arrive before stepline handled the first are one signal (the kernel and
        # CPython both coalesce pending signals): send the second once the first took effect.
        await seen(sl, "finished", job="j9")  # a queued job, cancelled at once
        sl.driver.signal(signum)
        with trio.fail_after(5):
            rest = await sl.driver.rest()
            assert await sl.driver.proc.wait() == status
    assert rest[-1]["event"] == "bye"
    assert {e["state"] for e in sl.driver.events if e["event"] == "finished"} == {"cancelled"}
    lifecycle_ok(sl.driver.events)


async def test_signal_during_a_drain_cancels_what_is_left(tmp_path: Path) -> None:
    """EOF started a drain; a SIGTERM then turns it into a cancelling shutdown, exit 0."""
    async with served() as sl:
        job = await submit(sl, {"run": "sleep 300"}, "r")
        await seen(sl, "started", job=job)
        await sl.driver.close_stdin()
        await trio.sleep(0.2)
        sl.driver.signal(signal.SIGTERM)
        with trio.fail_after(10):
            rest = await sl.driver.rest()
            assert await sl.driver.proc.wait() == 0
    assert rest[-1]["event"] == "bye"
    assert [e["state"] for e in sl.driver.events if e["event"] == "finished"] == ["cancelled"]


def serve_with(redirection: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``stepline serve`` started by a shell with one of its standard fds closed."""
    return subprocess.run(
        ["sh", "-c", f'exec "$@" {redirection}', "sh", *SERVE],
        input=stdin,
        capture_output=True,
        env=tagged_env(new_tag()),
        timeout=30,
        check=False,
    )


def test_started_with_stdin_closed_it_reads_eof_and_says_bye() -> None:
    """Regression: trio's epoll fd took the free fd 0 and stepline "read commands" from it
    (EINVAL, a traceback, status 1). A closed stdin is EOF: ready, bye, status 0."""
    done = serve_with("<&-")
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == ["ready", "bye"], done
    assert done.returncode == 0
    assert done.stderr == b""


def test_started_with_stdout_closed_it_says_so_and_exits_1() -> None:
    """Regression: an ``AttributeError`` traceback (``sys.stdout`` is None then)."""
    done = serve_with(">&-", b'{"op": "ping"}\n')
    assert done.returncode == 1
    assert done.stderr.decode().strip() == (
        "stepline: ERROR: stdout is closed: nowhere to write the protocol"
    )


def test_started_with_stderr_closed_it_still_serves() -> None:
    done = serve_with("2>&-", b'{"op": "ping", "id": 1}\n')
    assert [json.loads(line)["event"] for line in done.stdout.splitlines()] == [
        "ready",
        "pong",
        "bye",
    ]
    assert done.returncode == 0


def test_proc_tools_see_through_a_double_fork() -> None:
    """The leak detector itself: it finds an orphaned grandchild by its inherited marker."""
    tag = new_tag()
    child = subprocess.run(
        ["sh", "-c", "sleep 30 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        env=tagged_env(tag),
        check=True,
    )
    orphan = int(child.stdout)
    try:
        assert orphan in tagged_processes(tag)
    finally:
        os.kill(orphan, signal.SIGKILL)
    assert wait_until_gone(tag) == []
