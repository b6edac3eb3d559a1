from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio

from stepline import Config, Executor
from stepline.runners._leftovers import sweep_leftovers
from stepline.triggers._attach import Triggers

Event = dict[str, Any]


class MemoryOutbox:
    """An outbox that keeps every event in a list, and lets tests await one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = trio.lowlevel.ParkingLot()
        self.congested = False

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self._changed.unpark_all()

    def emit_line(self, line: bytes) -> None:
        """An event encoded as a JSON line (``--state``'s event log), kept decoded."""
        self.emit(orjson.loads(line))

    def emit_lines(self, data: bytes, count: int) -> None:
        """``count`` events encoded as consecutive JSON lines, kept decoded."""
        for line in data.split(b"\n")[:count]:
            self.emit_line(line)

    @property
    def emitted(self) -> int:
        return len(self.events)

    @property
    def written(self) -> int:  # kept at once: "written" as soon as emitted
        return len(self.events)

    async def wait_written(self, count: int) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()

    async def wait_for(self, predicate: Callable[[Event], bool]) -> Event:
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if predicate(ev):
                    return ev
            seen = len(self.events)
            await self._changed.park()

    async def finished(self, job_id: str) -> Event:
        return await self.wait_for(lambda e: e["event"] == "finished" and e["job"] == job_id)

    def of(self, job_id: str) -> list[str]:
        return [e["event"] for e in self.events if e.get("job") == job_id]


@asynccontextmanager
async def running_executor(**config: Any) -> AsyncIterator[tuple[Executor, MemoryOutbox]]:
    """An executor running in a nursery; drained on exit."""
    outbox = MemoryOutbox()
    executor = Executor(Config(**config), outbox)
    Triggers.attach(executor)
    async with trio.open_nursery() as nursery:
        await nursery.start(executor.run)
        yield executor, outbox
        executor.shutdown("drain")


@pytest.fixture
def memory_outbox() -> MemoryOutbox:
    return MemoryOutbox()


@pytest.fixture
def no_leftovers() -> None:
    """Stop what earlier tests' SIGKILLed steplines left before this test starts its own.

    A stepline stops every process a dead stepline left behind before its first step and says
    so on stderr (``runners/_leftovers.py``). Tests that SIGKILL a stepline move on before its
    guardian has killed that stepline's steps, so a test that requires an empty stderr could
    find the warning about another test's leftovers: sweeping here first leaves its stepline
    nothing to find.
    """
    sweep_leftovers()
