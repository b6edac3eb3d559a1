"""Drive a real ``stepline serve`` process over pipes, as any external program would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

Event = dict[str, Any]
SERVE = [sys.executable, "-m", "stepline", "serve"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def stepline(
    *args: str,
    stdin: str = "",
    cwd: os.PathLike[str] | str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stepline ARGS`` to its end, as a user's shell would, and keep its output.

    Its stdin is ``stdin`` (empty by default: a command that reads stdin sees its end at once
    rather than whatever the test runner's own stdin holds)."""
    return subprocess.run(
        [sys.executable, "-m", "stepline", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env if env is not None else ENV,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def encode(obj: Any) -> bytes:
    return obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n"


def run_cli(commands: list[Any], *args: str, timeout: float = 60) -> tuple[list[Event], int, str]:
    """Pipe every command in, close stdin, and collect every event until the process exits."""
    proc = subprocess.run(
        [*SERVE, *args],
        input=b"".join(encode(c) for c in commands),
        capture_output=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )
    return parse_events(proc.stdout), proc.returncode, proc.stderr.decode()


def parse_events(raw: bytes) -> list[Event]:
    """Every stdout line must be one JSON object with `event` and `ts`: nothing else, ever."""
    events = []
    for line in raw.decode().splitlines():
        ev = json.loads(line)
        assert isinstance(ev, dict), line
        assert isinstance(ev["event"], str), line
        assert isinstance(ev["ts"], float), line
        events.append(ev)
    return events


class Driver:
    """A live `stepline serve` child: send commands, await matching events."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self._lines: deque[bytes] = deque()  # complete lines not yet parsed
        self._partial: list[bytes] = []  # the start of the next line, in pieces

    def unread(self, data: bytes) -> None:
        """Give back bytes read from stdout by other means (they come before anything else)."""
        *lines, tail = (b"".join(self._partial) + data).split(b"\n")
        self._lines.extendleft(reversed(lines))
        self._partial = [tail] if tail else []

    async def send(self, *commands: Any) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(b"".join(encode(c) for c in commands))

    async def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        await self.proc.stdin.aclose()

    async def next_event(self) -> Event:
        assert self.proc.stdout is not None
        # Lines are split once per chunk and a long line joined once: a 100 MB `status` line
        # read by appending chunks to one buffer took minutes.
        while not self._lines:
            chunk = bytes(await self.proc.stdout.receive_some(1 << 20))
            if not chunk:
                raise EOFError(f"stdout closed; events so far: {self.events[-5:]}")
            if b"\n" not in chunk:
                self._partial.append(chunk)
                continue
            head, *lines, tail = chunk.split(b"\n")
            self._lines.append(b"".join([*self._partial, head]))
            self._lines.extend(lines)
            self._partial = [tail] if tail else []
        ev = parse_events(self._lines.popleft())[0]
        self.events.append(ev)
        return ev

    async def wait_for(self, name: str, **fields: Any) -> Event:
        return await self.wait_until(
            lambda ev: ev["event"] == name and all(ev.get(k) == v for k, v in fields.items())
        )

    async def wait_until(self, predicate: Callable[[Event], bool]) -> Event:
        while True:
            ev = await self.next_event()
            if predicate(ev):
                return ev

    async def rest(self) -> list[Event]:
        """Every event until stdout closes."""
        out = []
        while True:
            try:
                out.append(await self.next_event())
            except EOFError:
                return out

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)


@asynccontextmanager
async def serve(
    *args: str, deadline: float = 30, env: dict[str, str] | None = None
) -> AsyncIterator[Driver]:
    """Start `stepline serve ARGS`; the test fails if it is still running after ``deadline``."""
    proc = await trio.lowlevel.open_process(
        [*SERVE, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env if env is not None else ENV,
    )
    driver = Driver(proc)
    try:
        with trio.fail_after(deadline):
            ready = await driver.next_event()
            assert ready["event"] == "ready", ready
            yield driver
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def lifecycle_ok(events: list[Event]) -> None:
    """Every accepted job has exactly one `finished`, after its other events."""
    accepted = {e["job"] for e in events if e["event"] == "accepted"}
    finished = [e["job"] for e in events if e["event"] == "finished"]
    assert sorted(finished) == sorted(accepted), (accepted, finished)
    for job in accepted:
        mine = [e["event"] for e in events if e.get("job") == job and e["event"] != "cancelling"]
        assert mine[0] == "accepted", mine
        assert mine[-1] == "finished", mine
        assert mine.count("started") <= 1
