"""Everything that happens around jobs rather than inside them: callbacks, alerts, schedules.

One object, attached to an executor from outside through the engine's attachment point
(:mod:`stepline.engine._attach`), so the engine knows nothing of triggers:

* ``Triggers.attach(executor, clock)`` — makes the triggers, attaches them as a service and
  registers the callback hook (``executor.on_finish``); ``Triggers.of(executor)`` finds them;
* ``run`` — hosts the alert repeater, the callback runner and the schedules in the executor's
  service nursery;
* ``drain`` — once every job has finished: pending callbacks get ``--callback-drain`` seconds,
  then are cancelled;
* ``shutdown(mode)`` — schedules stop; ``cancel`` also cancels pending callbacks;
* ``status()`` / ``stats()`` — the ``alerts`` and ``schedules`` fields.

Webhooks share the executor's HTTP client (``executor.http``) with ``http`` steps.

The callback runner, the alerts and the schedules are made on first use (a job with
``on_finish``, an ``ack``, a ``schedule``), and their task then starts in :meth:`run`'s nursery:
their modules are a sizeable part of ``stepline serve``'s start-up, and most executors never use
them. Until then ``status`` and ``stats`` report none, and a shutdown is remembered so that one
made later starts stopped (schedules) or cancelled (callbacks), as it would have been.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import Unavailable
from .._lazy import loading
from ..engine._attach import ShutdownMode
from ..wire._events import event

if TYPE_CHECKING:
    from ..engine._executor import Executor
    from ..engine._jobs import Job
    from ..wire._events import Event
    from ._alerts import AlertBook
    from ._callbacks import CallbackRunner
    from ._clock import WallClock
    from ._schedules import Schedules

__all__ = ["NoTriggers", "Triggers"]


class NoTriggers(LookupError):
    """An executor was asked for its triggers, but none were attached to it."""


class Triggers:
    """The callback runner, the alerts and the schedules of one executor."""

    def __init__(self, executor: Executor, clock: WallClock | None = None) -> None:
        self._executor = executor
        self._clock = clock
        self._drain_timeout = executor.config.callback_drain
        # Made on first use (start-up time: see the module docstring).
        self._alerts: AlertBook | None = None
        self._callbacks: CallbackRunner | None = None
        self._schedules: Schedules | None = None
        self._nursery: trio.Nursery | None = None  # where their tasks run, while `run` runs
        self._ended = False  # `run` has returned: no task can start any more
        self._stopped = False  # shutdown began: schedules stop
        self._cancelled = False  # callbacks are cancelled (a cancelling shutdown, or drained)

    @classmethod
    def attach(cls, executor: Executor, clock: WallClock | None = None) -> Triggers:
        """Make the triggers of ``executor`` and attach them (``clock``: the wall clock of cron
        schedules; the system's by default)."""
        triggers = cls(executor, clock)
        executor.attach(triggers)
        executor.on_finish(triggers._job_finished, callbacks_only=True)
        return triggers

    @staticmethod
    def of(executor: Executor) -> Triggers:
        """The triggers attached to ``executor``; raises :class:`NoTriggers` if there are none."""
        triggers = executor.attached(Triggers)
        if triggers is None:
            raise NoTriggers("no triggers are attached to this executor (Triggers.attach)")
        return triggers

    def use_alerts(self, alerts: AlertBook) -> None:
        """Keep alerts elsewhere than in this process's memory (a cluster keeps them in its
        database): called before any alert is opened."""
        self._alerts = alerts
        self._start(alerts.run)

    @property
    def alerts(self) -> AlertBook:
        if self._alerts is None:
            with loading("alerts"):
                from ._alerts import Alerts  # start-up time: made on first use

            config = self._executor.config
            self._alerts = Alerts(self._executor.outbox.emit, config.alert_repeat)
            self._start(self._alerts.run)
        return self._alerts

    @property
    def callbacks(self) -> CallbackRunner:
        if self._callbacks is None:
            with loading("callbacks"):
                from ._callbacks import CallbackRunner  # start-up time: made on first use

            executor = self._executor
            runner = CallbackRunner(
                executor.outbox,
                self.alerts,
                executor.http,
                executor.runner,
                limit=executor.config.callback_limit,
                released=None if executor.durable is None else executor.durable.wait_recorded,
            )
            if self._cancelled or self._ended:
                runner.cancel()  # as a runner made at start would be by now
            self._callbacks = runner
            self._start(runner.run)
        return self._callbacks

    @property
    def schedules(self) -> Schedules:
        if self._schedules is None:
            with loading("schedules"):
                from ._schedules import Schedules  # start-up time: made on first use

            self._schedules = Schedules(self._executor, self._clock)
            if self._stopped:
                self._schedules.stop()
            self._start(self._schedules.run)
        return self._schedules

    def _job_finished(self, job: Job, finished: Event) -> None:
        """The job table's finish hook: only a job with callbacks needs the runner."""
        if not job.spec.on_finish:
            return
        try:
            runner = self.callbacks
        except Unavailable as exc:  # the hook must not raise: each callback reports it
            for callback in job.spec.on_finish:
                if callback.applies(finished["state"]):
                    about = {"job": job.id, "callback": callback.index, "kind": callback.kind}
                    report = event("callback", **about, ok=False, attempts=0, error=exc.message)
                    self._executor.outbox.emit(report)
            return
        runner.job_finished(job, finished)

    def _start(self, service: Callable[[], Awaitable[object]]) -> None:
        """Start the task of a service made while :meth:`run` runs (one made before: `run` does)."""
        if self._nursery is not None:
            self._nursery.start_soon(service)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the services until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for service in (self._alerts, self._callbacks, self._schedules):
                    if service is not None:  # made before `run`: starts now
                        nursery.start_soon(service.run)
                task_status.started()
                await trio.sleep_forever()  # the services run until the executor cancels them
        finally:
            self._nursery = None
            self._ended = True

    async def drain(self) -> None:
        """Every job has finished: let pending callbacks end (bounded), cancel the rest."""
        if self._callbacks is not None:
            await self._callbacks.drain(self._drain_timeout)
        self._cancelled = True  # drain cancels what is left, and refuses later callbacks

    def shutdown(self, mode: ShutdownMode) -> None:
        self._stopped = True
        if self._schedules is not None:
            self._schedules.stop()
        if mode == "cancel":
            self._cancelled = True
            if self._callbacks is not None:
                self._callbacks.cancel()

    def status(self) -> dict[str, Any]:
        """The ``alerts`` (open ones) and ``schedules`` fields of a ``status`` reply."""
        return {
            "alerts": [] if self._alerts is None else self._alerts.records(),
            "schedules": [] if self._schedules is None else self._schedules.records(),
        }

    def stats(self) -> dict[str, Any]:
        """Open ``alerts``, the number of live ``schedules`` and of ``callbacks_pending``."""
        return {
            "alerts": [] if self._alerts is None else self._alerts.records(),
            "schedules": 0 if self._schedules is None else len(self._schedules),
            "callbacks_pending": 0 if self._callbacks is None else self._callbacks.pending,
        }
