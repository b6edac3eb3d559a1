"""The embedded executor kept in an SQLite file: ``open_executor(state=PATH)``, and the shared
run of an executor over a :class:`~stepline.store.Store` that ``stepline run --state`` uses too.

It is ``stepline serve --state FILE`` without the pipes: the same :class:`Store` (every
accepted job committed before ``submit`` returns, every outcome before the block ends), the
same recovery (a job queued or running when the process died runs again, or with
``on_restart="fail"`` finishes ``failed``/``interrupted``), and the same file: a state file
may be opened by ``serve --state`` and by ``open_executor(state=)`` in turn, never at once (the
store refuses a file another process holds).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import get_args

import orjson
import trio

from ..engine._executor import Config, Executor
from ..store._recovery import Recovered, RestartPolicy, restore, resume
from ..store._store import Store
from ..triggers._attach import Triggers
from ..wire._events import Event
from ._api import EmbeddedExecutor, FanOutOutbox, JobHandle

__all__ = ["FanOutSink", "open_durable", "run_durable"]


class FanOutSink:
    """A :class:`Store`'s sink (``store/_eventlog.Sink``) that hands every event to a fan-out
    outbox.

    The store's event log writes committed lifecycle events as encoded lines; in-process
    there is no stdout to write them to, so they are decoded and routed like the others, and
    count as written at once (a repeat after a restart goes to nobody: nothing is at stake).
    """

    def __init__(self, fanout: FanOutOutbox) -> None:
        self._fanout = fanout
        self.emitted = 0

    @property
    def written(self) -> int:
        return self.emitted

    @property
    def congested(self) -> bool:
        return self._fanout.congested

    async def wait_writable(self) -> None:
        await self._fanout.wait_writable()

    async def wait_written(self, count: int) -> None:
        await trio.lowlevel.checkpoint()

    def emit(self, event: Event) -> None:
        self.emitted += 1
        self._fanout.emit(event)

    def emit_line(self, line: bytes) -> None:
        event = orjson.loads(line)
        if "event" in event:  # a line the last run had not written has its seq only
            self.emit(event)
        else:
            self.emitted += 1

    def emit_lines(self, data: bytes, count: int) -> None:
        for line in data.split(b"\n")[:count]:
            self.emit_line(line)


@asynccontextmanager
async def open_durable(
    path: str | os.PathLike[str], config: Config, fanout: FanOutOutbox, on_restart: str
) -> AsyncIterator[EmbeddedExecutor]:
    """:func:`~stepline.open_executor` with ``state=path``: raises ``ValueError`` for a
    policy other than ``rerun``/``fail`` or a database URL, ``StoreError`` for a file that
    cannot be used (foreign, corrupt, newer, held by another process: never reset)."""
    policy = _policy(on_restart)
    if str(path).startswith(("postgresql://", "postgres://")):
        raise ValueError(
            "open_executor(state=...) takes an SQLite file; a postgresql:// database makes "
            "a node of a cluster: stepline serve or worker --state (docs/cluster.md)"
        )
    store = await Store.open(path, keep=config.keep, write_ahead_start=policy == "fail")
    executor = Executor(config, store.sequence(FanOutSink(fanout)))
    Triggers.attach(executor)
    store.attach(executor)
    plan = restore(executor, store.snapshot, policy)
    recovered = [JobHandle(item.job, fanout.watch(item.job.id), executor) for item in plan]
    async with run_durable(store, executor, plan):
        yield EmbeddedExecutor(executor, fanout, recovered)


def _policy(on_restart: str) -> RestartPolicy:
    if on_restart == "rerun":
        return "rerun"
    if on_restart == "fail":
        return "fail"
    choices = " or ".join(map(repr, get_args(RestartPolicy)))
    raise ValueError(f"on_restart must be {choices}, not {on_restart!r}")


@asynccontextmanager
async def run_durable(
    store: Store, executor: Executor, plan: list[Recovered]
) -> AsyncIterator[None]:
    """Run ``executor`` over ``store`` for the block: what the last run committed but had not
    delivered first, then the recovered jobs (``plan``) announced and queued. Leaving the block
    normally drains; leaving it with an exception (a cancellation included) cancels every job
    and re-raises that exception unwrapped, once every outcome is durable."""
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            async with trio.open_nursery() as inner:
                await inner.start(executor.run)
                store.redeliver()
                await resume(executor, store, plan)
                try:
                    yield
                except BaseException as exc:
                    # Raised below, outside the nurseries: the caller sees its own exception
                    # (a Cancelled included), not a group, once every job is cancelled and
                    # stored.
                    failure = exc
                    executor.shutdown("cancel")
                else:
                    executor.shutdown("drain")
            with trio.CancelScope(shield=True):
                await store.aclose()  # every outcome durable before the block ends
    finally:
        executor.workspaces.remove_abandoned()  # left by kill(), which did not wait for them
    if failure is not None:
        raise failure
