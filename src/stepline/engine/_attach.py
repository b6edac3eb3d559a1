"""The attachment point: services that live beside an executor without the engine knowing them.

The engine runs jobs and nothing else. Callbacks, alerts and schedules (``stepline.triggers``)
sit a layer above it and plug in from outside, so the engine imports none of them and a new
kind of service needs no edit here. Whoever builds an :class:`~stepline.engine._executor.Executor`
(``stepline serve``, :func:`stepline.open_executor`, a test) attaches them:

* ``executor.attach(service)`` hands the executor an :class:`Attachment`: its task runs in the
  executor's service nursery for as long as :meth:`Executor.run` runs, it hears of the shutdown,
  and it gets to finish its own work once every job has finished;
* ``executor.on_finish(hook)`` calls ``hook(job, finished)`` right after each job's
  ``finished`` event (the callbacks hook in here).

A service may be attached at any time: one attached before ``run`` starts with it; one attached
while ``run`` runs starts at once; one attached after the shutdown began hears of it at once.
"""

from __future__ import annotations

from typing import Literal, Protocol, TypeAlias, TypeVar

import trio

__all__ = ["Attachment", "Attachments", "ShutdownMode"]

ShutdownMode: TypeAlias = Literal["drain", "cancel"]

_T = TypeVar("_T")


class Attachment(Protocol):
    """A service attached to an executor (see the module docstring).

    Its lifecycle, in order: ``run`` starts before the first job does; ``shutdown`` is called,
    synchronously, when the executor stops taking jobs; ``drain`` is awaited once every
    accepted job has finished; then ``run``'s task is cancelled.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; call ``task_status.started()`` once ready for work."""

    def shutdown(self, mode: ShutdownMode) -> None:
        """The executor stops taking jobs (``cancel``: it cancels them too). Must not raise."""

    async def drain(self) -> None:
        """Every job has finished: end pending work (bounded in time), then return."""


class Attachments:
    """The services attached to one executor, and where their tasks run."""

    def __init__(self) -> None:
        self._services: list[Attachment] = []
        self._nursery: trio.Nursery | None = None  # the executor's, while `run` runs
        self._stopping: ShutdownMode | None = None  # the shutdown already begun, if any

    def add(self, service: Attachment) -> None:
        """Attach ``service``; it catches up on a run or a shutdown already under way."""
        self._services.append(service)
        if self._nursery is not None:
            self._nursery.start_soon(service.run)
        if self._stopping is not None:
            service.shutdown(self._stopping)

    def find(self, kind: type[_T]) -> _T | None:
        """The first attached service of class ``kind``, if any."""
        for service in self._services:
            if isinstance(service, kind):
                return service
        return None

    async def start(self, nursery: trio.Nursery) -> None:
        """Start every service in ``nursery`` (the executor's), each ready before the next."""
        self._nursery = nursery
        for service in list(self._services):
            await nursery.start(service.run)

    def shutdown(self, mode: ShutdownMode) -> None:
        """Tell every service that the shutdown began (``cancel`` overrides an earlier drain)."""
        if self._stopping != "cancel":
            self._stopping = mode
        for service in list(self._services):
            service.shutdown(mode)

    async def drain(self) -> None:
        """Every job has finished: let each service end its pending work, one after another."""
        for service in list(self._services):
            await service.drain()

    def ended(self) -> None:
        """The executor's run is over: a service attached from now on never starts."""
        self._nursery = None
