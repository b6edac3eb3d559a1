"""The in-process API: the one :class:`~stepline.Executor`, embedded in a trio program.

::

    async with stepline.open_executor(workers=4) as ex:
        job = await ex.submit({"run": ["make"]})
        output = await job.wait()          # or raises stepline.JobFailed

There is no second engine here: :func:`open_executor` runs the same :class:`Executor` that
``stepline serve`` runs, and gives it a :class:`FanOutOutbox` instead of stdout. That outbox
routes each event by its ``job`` field into the job's own bounded
:class:`~stepline.client._history.EventHistory`, which is what :meth:`JobHandle.wait` and
:meth:`JobHandle.events` read. It never makes a producer wait: a job whose events nobody reads
must not stall, so its history evicts old ``log``/``progress`` events instead (see
:mod:`stepline.client._history`).

The coroutine-shaped methods (``submit``, ``status``, ``stats``, ``define``, and a handle's
``wait``, ``cancel``, ``events``) match :class:`stepline.AsyncClient` one for one, so code moves
between an embedded executor and a ``stepline serve`` child by changing one line.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from ..engine._executor import Config, Executor
from ..engine._jobs import FINAL_STATES, Job, JobState, StatusFilter
from ..triggers._attach import Triggers
from ..wire._events import Event
from ._feeds import Feed, FeedEvents
from ._history import DEFAULT_HISTORY, HistoryRouter
from ._lines import POLL
from ._outcome import result_of

__all__ = ["EmbeddedExecutor", "FanOutOutbox", "JobHandle", "open_executor"]

_SETTINGS: Final = tuple(attribute.name for attribute in attrs.fields(Config))


def _config(settings: dict[str, Any]) -> Config:
    """The :class:`Config` of :func:`open_executor`'s keywords; a misspelt one is refused here,
    naming the keywords there are."""
    unknown = sorted(settings.keys() - set(_SETTINGS))
    if unknown:
        raise TypeError(
            f"open_executor() got unknown keyword {', '.join(map(repr, unknown))}; "
            f"it takes history, state, on_restart and Config's fields: {', '.join(_SETTINGS)}"
        )
    return Config(**settings)


def _signature() -> inspect.Signature:
    """What ``help()`` and ``inspect`` show for :func:`open_executor`: ``history``, ``state``,
    ``on_restart`` and every :class:`Config` field, keyword-only, with its default, as if each
    were written out."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("history", keyword, default=DEFAULT_HISTORY, annotation=int),
        inspect.Parameter("state", keyword, default=None, annotation="str | os.PathLike | None"),
        inspect.Parameter("on_restart", keyword, default="rerun", annotation=str),
    ]
    for attribute in attrs.fields(Config):
        parameters.append(
            inspect.Parameter(
                attribute.name, keyword, default=attribute.default, annotation=attribute.type
            )
        )
    return inspect.Signature(parameters)


class FanOutOutbox:
    """An :class:`~stepline.wire._outbox.Outbox` that routes each job's events to that job's feed.

    Events without a ``job`` (command replies) are dropped: in-process, every command answers
    by returning.
    """

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self._router = HistoryRouter(lambda job: Feed(job, history))

    @property
    def congested(self) -> bool:
        return False  # histories evict old events instead of making producers wait

    async def wait_writable(self) -> None:
        await trio.lowlevel.checkpoint()

    def emit(self, event: Event) -> None:
        self._router.route(event)

    def watch(self, job: str) -> Feed:
        """The feed of a job known before any event of it is routed (a recovered job)."""
        return self._router.open(job)

    def feed(self, job: str) -> Feed:
        """The feed of a job accepted since the last checkpoint (so it cannot have finished)."""
        feed = self._router.get(job)
        if feed is None:
            raise LookupError(f"job {job} has no live feed")  # a bug: see the docstring
        return feed


class JobHandle:
    """A submitted job: await its result, cancel it, or read its events."""

    def __init__(self, record: Job, feed: Feed, executor: Executor) -> None:
        self._record = record
        self._feed = feed
        self._executor = executor

    def __repr__(self) -> str:
        return f"<JobHandle {self.id} {self.state.value}>"

    @property
    def id(self) -> str:
        return self._record.id

    @property
    def name(self) -> str | None:
        return self._record.name

    @property
    def state(self) -> JobState:
        return self._record.state

    @property
    def elapsed(self) -> float:
        """Seconds the job has run: 0 while queued, frozen once finished."""
        return self._record.elapsed

    @property
    def done(self) -> bool:
        return self._record.state in FINAL_STATES

    async def wait(self) -> Any:
        """The job's output once it succeeded; raises :class:`~stepline.JobFailed` otherwise."""
        return result_of(await self._feed.wait_done())

    async def cancel(self, *, force: bool = False, grace: float | None = None) -> bool:
        """Cancel the job and wait until it has finished (its processes stopped: after
        ``grace`` seconds, or their steps' own; ``force``: SIGKILL at once).

        Returns False, doing nothing, when the job had already finished: a job that ends just
        as you cancel it is a normal race, not an error, in Python code.
        """
        if self.done:
            await trio.lowlevel.checkpoint()
            return False
        self._executor.cancel(self.id, force=force, grace=grace)
        await self._feed.wait_done()
        return True

    def events(self) -> AsyncIterator[Event]:
        """This job's events from ``accepted`` to ``finished``; each call starts over."""
        return FeedEvents(self._feed)

    async def output_lines(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The job's output lines after line ``after``, to the end of the job (``_lines.py``)."""
        while True:
            await trio.lowlevel.checkpoint()
            reply = self._executor.logs(self.id, after)
            for line in reply["lines"]:
                yield line
            if reply["done"]:
                return
            if reply["next"] == after:
                await trio.sleep(POLL)
            after = reply["next"]


class EmbeddedExecutor:
    """The executor as :func:`open_executor` hands it out. ``executor`` is the engine itself;
    ``recovered``: with ``state=``, handles of the jobs the last run left queued or running (run
    again, or failed with ``on_restart="fail"``), in id order."""

    def __init__(
        self, executor: Executor, outbox: FanOutOutbox, recovered: Sequence[JobHandle] = ()
    ) -> None:
        self.executor = executor
        self._outbox = outbox
        self.recovered = list(recovered)

    async def submit(
        self,
        job: Any = None,
        *,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> JobHandle:
        """Validate and queue a job (or a template with params).

        Raises :class:`~stepline.InvalidJob`, :class:`~stepline.QueueFull` (``on_full="reject"``),
        :class:`~stepline.ShuttingDown` and the other command errors; with ``on_full="block"``
        it waits for a queue slot.
        """
        record = await self.executor.submit(job, template=template, params=params, name=name)
        return JobHandle(record, self._outbox.feed(record.id), self.executor)

    async def define(self, name: str, job: Any) -> None:
        """Define a template for ``submit(template=...)`` and ``use`` steps."""
        await trio.lowlevel.checkpoint()
        self.executor.define(name, job)

    async def status(
        self,
        job: str | JobHandle | None = None,
        *,
        state: str | list[str] | None = None,
        name: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``status`` records: every known job's, or one job's, or those the filters pick
        (``limit``: the most recent first)."""
        await trio.lowlevel.checkpoint()
        job_id = job.id if isinstance(job, JobHandle) else job
        return self.executor.table.records(job_id, StatusFilter.of(state, name, since, limit))

    async def logs(self, job: str | JobHandle, after: int = 0) -> dict[str, Any]:
        """A page of the job's output lines after line ``after``: ``lines``, ``next``,
        ``trimmed``, ``done``."""
        await trio.lowlevel.checkpoint()
        return self.executor.logs(job.id if isinstance(job, JobHandle) else job, after)

    async def stats(self) -> dict[str, Any]:
        """Counts: ``queued``, ``running``, ``finished`` by state; ``workers``, ``queue_size``."""
        await trio.lowlevel.checkpoint()
        return self.executor.stats()


@asynccontextmanager
async def open_executor(
    *,
    history: int = DEFAULT_HISTORY,
    state: str | os.PathLike[str] | None = None,
    on_restart: str = "rerun",
    **settings: Any,
) -> AsyncIterator[EmbeddedExecutor]:
    """Run an executor for the duration of the block.

    ``settings`` are exactly :class:`~stepline.Config`'s fields (the executor flags of ``stepline
    serve``, with the same defaults: ``workers=4``, ``queue_size=64``, ...), and ``history`` is
    the events kept per job for :meth:`JobHandle.events`. Leaving the block normally drains (no
    new jobs; every accepted job runs to its end); leaving it with an exception cancels every
    queued and running job first, then re-raises that exception unwrapped.

    ``state``: an SQLite file that keeps the jobs, as ``stepline serve --state`` does (the same
    file format): opened again, the jobs of earlier blocks are known to ``status``, and those
    left queued or running by a process that died are run again (``on_restart="fail"``: they
    finish ``failed``) and handed out as :attr:`EmbeddedExecutor.recovered`.
    """
    config = _config(settings)
    outbox = FanOutOutbox(history)
    if state is not None:
        from ._durable import open_durable  # start-up time: only with state

        async with open_durable(state, config, outbox, on_restart) as durable:
            yield durable
        return
    executor = Executor(config, outbox)
    Triggers.attach(executor)
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            try:
                yield EmbeddedExecutor(executor, outbox)
            except BaseException as exc:
                # Kept out of the nursery so the caller sees its own exception, not a group.
                failure = exc
                executor.shutdown("cancel")
            else:
                executor.shutdown("drain")
    finally:
        executor.workspaces.remove_abandoned()  # left by kill(), which did not wait for them
    if failure is not None:
        raise failure


# inspect.signature() reads __signature__ from any callable; typeshed declares it on none.
open_executor.__signature__ = _signature()  # type: ignore[attr-defined]
