"""One handler per command: the protocol's ops mapped onto the executor.

Handlers write their reply into the executor's outbox. A refused command raises a
:class:`~stepline._errors.CommandError`; :func:`dispatch` turns it into the one ``error`` event
that command gets, echoing its ``id``, and the executor goes on.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import CommandError
from ..engine._executor import Executor
from ..engine._jobs import StatusFilter
from ..triggers._attach import Triggers
from ..wire._events import RequestId, error, reply
from ..wire._plain import PlainSubmit

if TYPE_CHECKING:
    from ..wire._commands import (
        Ack,
        Cancel,
        Command,
        Define,
        Logs,
        Ping,
        Schedule,
        Shutdown,
        Stats,
        Status,
        Submit,
        Unschedule,
    )

__all__ = ["dispatch", "submit_nowait"]

log = logging.getLogger("stepline")


async def dispatch(executor: Executor, command: Command, request_id: RequestId) -> None:
    """Run one command; every outcome is exactly one reply or one ``error`` event."""
    try:
        await _handlers()[type(command)](executor, command, request_id)
    except Exception as exc:
        _report(executor, command, request_id, exc)


def submit_nowait(executor: Executor, submit: PlainSubmit) -> bool:
    """Run a plain submit now if it needs no waiting; False leaves it to :func:`dispatch`.

    The hot path: a submit that finds room in the queue (and no ``--state`` record to write)
    is handled without a coroutine. Going through ``dispatch``, its handler and
    ``Executor.submit`` cost four coroutines per line, an eighth of a trivial job.
    """
    try:
        executor.submit_nowait(submit.job, name=submit.name, request_id=submit.request_id)
    except trio.WouldBlock:
        return False
    except Exception as exc:
        _report(executor, submit, submit.request_id, exc)
    return True


def _report(
    executor: Executor, command: Command | PlainSubmit, request_id: RequestId, exc: Exception
) -> None:
    """A refused command's ``error`` event; a bug in stepline is logged too, and serving goes on."""
    if isinstance(exc, CommandError):
        executor.outbox.emit(error(exc.code, exc.message, request_id))
        return
    log.exception("internal error handling %r", command, exc_info=exc)
    message = f"internal error: {type(exc).__name__}: {exc}"
    executor.outbox.emit(error("internal", message, request_id))


async def _submit(ex: Executor, cmd: Submit, rid: RequestId) -> None:
    await ex.submit(
        cmd.job, template=cmd.template, params=cmd.params, name=cmd.name, request_id=rid
    )


async def _cancel(ex: Executor, cmd: Cancel, rid: RequestId) -> None:
    ex.cancel(cmd.job, rid, force=cmd.force, grace=cmd.grace)


async def _status(ex: Executor, cmd: Status, rid: RequestId) -> None:
    # Open alerts and live schedules are listed with every job's records, not for one job.
    extra = Triggers.of(ex).status() if cmd.job is None else {}
    select = StatusFilter.of(cmd.state, cmd.name, cmd.since, cmd.limit)
    ex.outbox.emit(reply("status", rid, jobs=ex.table.records(cmd.job, select), **extra))


async def _logs(ex: Executor, cmd: Logs, rid: RequestId) -> None:
    ex.outbox.emit(reply("logs", rid, **ex.logs(cmd.job, cmd.after)))


async def _define(ex: Executor, cmd: Define, rid: RequestId) -> None:
    ex.define(cmd.name, cmd.job)
    await ex.sync_state()  # with --state, `defined` promises the template survives a restart
    ex.outbox.emit(reply("defined", rid, template=cmd.name))


async def _schedule(ex: Executor, cmd: Schedule, rid: RequestId) -> None:
    entry = Triggers.of(ex).schedules.add(
        cron=cmd.cron,
        every=cmd.every,
        tz=cmd.tz,
        job=cmd.job,
        template=cmd.template,
        params=cmd.params,
        name=cmd.name,
        overlap=cmd.overlap,
    )
    ex.outbox.emit(reply("scheduled", rid, schedule=entry.id, next=entry.next()))


async def _unschedule(ex: Executor, cmd: Unschedule, rid: RequestId) -> None:
    entry = Triggers.of(ex).schedules.remove(cmd.schedule)
    ex.outbox.emit(reply("unscheduled", rid, schedule=entry.id))


async def _ack(ex: Executor, cmd: Ack, rid: RequestId) -> None:
    alert = Triggers.of(ex).alerts.ack(cmd.alert)
    ex.outbox.emit(reply("acked", rid, alert=alert.id, job=alert.job))


async def _stats(ex: Executor, cmd: Stats, rid: RequestId) -> None:
    ex.outbox.emit(reply("stats", rid, **ex.stats(), **Triggers.of(ex).stats()))


async def _ping(ex: Executor, cmd: Ping, rid: RequestId) -> None:
    ex.outbox.emit(reply("pong", rid))


async def _shutdown(ex: Executor, cmd: Shutdown, rid: RequestId) -> None:
    ex.outbox.emit(reply("shutting_down", rid, mode=cmd.mode))
    ex.shutdown(cmd.mode)


_Handler = Callable[[Executor, Any, RequestId], Awaitable[None]]


@functools.cache
def _handlers() -> dict[type, _Handler]:
    """Each command class's handler; made at the first command that is not a plain submit,
    which imports the classes (wire/_plain.py says why not at start)."""
    from ..wire import _commands as c

    return {
        c.Submit: _submit,
        c.Cancel: _cancel,
        c.Status: _status,
        c.Logs: _logs,
        c.Define: _define,
        c.Schedule: _schedule,
        c.Unschedule: _unschedule,
        c.Ack: _ack,
        c.Stats: _stats,
        c.Ping: _ping,
        c.Shutdown: _shutdown,
    }
