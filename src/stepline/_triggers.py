"""Everything that happens around jobs rather than inside them: callbacks, alerts, schedules.

One object so the executor needs only a handful of one-line hooks (issue 4):

* ``Triggers(executor, clock)`` — registers the callback runner as the job table's finish hook;
* ``await service.start(triggers.run)`` — hosts the alert repeater, the callback runner and the
  schedules in the executor's service nursery;
* ``await triggers.drain()`` — once every job has finished: pending callbacks get
  ``--callback-drain`` seconds, then are cancelled;
* ``triggers.shutdown(mode)`` — schedules stop; ``cancel`` also cancels pending callbacks;
* ``triggers.status()`` / ``triggers.stats()`` — the ``alerts`` and ``schedules`` fields.

It also owns the executor's shared HTTP client (``http`` steps and webhooks), closed when
:meth:`run` ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import trio

from ._alerts import Alerts
from ._callbacks import CallbackRunner
from ._clock import WallClock
from ._http import HttpClient
from ._schedules import Schedules

if TYPE_CHECKING:
    from ._executor import Executor

__all__ = ["Triggers"]


class Triggers:
    """The callback runner, the alerts, the schedules, and the HTTP client they share."""

    def __init__(self, executor: Executor, clock: WallClock | None = None) -> None:
        config = executor.config
        self._drain_timeout = config.callback_drain
        self.http = HttpClient()
        self.alerts = Alerts(executor.outbox.emit, config.alert_repeat)
        self.callbacks = CallbackRunner(
            executor.outbox,
            self.alerts,
            self.http,
            executor.groups,
            limit=config.callback_limit,
            released=None if executor.store is None else executor.store.wait_recorded,
        )
        self.schedules = Schedules(executor, clock)
        executor.table.finish_hooks.append(self.callbacks.job_finished)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the services until cancelled; then close the HTTP client."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.alerts.run)
                await nursery.start(self.callbacks.run)
                await nursery.start(self.schedules.run)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.http.aclose()

    async def drain(self) -> None:
        """Every job has finished: let pending callbacks end (bounded), cancel the rest."""
        await self.callbacks.drain(self._drain_timeout)

    def shutdown(self, mode: Literal["drain", "cancel"]) -> None:
        self.schedules.stop()
        if mode == "cancel":
            self.callbacks.cancel()

    def status(self) -> dict[str, Any]:
        """The ``alerts`` (open ones) and ``schedules`` fields of a ``status`` reply."""
        return {"alerts": self.alerts.records(), "schedules": self.schedules.records()}

    def stats(self) -> dict[str, Any]:
        """Open ``alerts``, the number of live ``schedules`` and of ``callbacks_pending``."""
        return {
            "alerts": self.alerts.records(),
            "schedules": len(self.schedules),
            "callbacks_pending": self.callbacks.pending,
        }
