"""Durable state as the engine sees it: the one hook through which ``--state`` plugs in.

The engine keeps every job in memory and knows nothing of files or databases. A store
(:mod:`stepline.store`) sits a layer above and attaches itself with
:meth:`Executor.use_durable_state <stepline.engine._executor.Executor.use_durable_state>`. From
then on the executor asks it, through this protocol only:

* to see every transition of the job table as it happens (:class:`TableObserver`);
* to admit every submit (``submit``): the store makes the job durable before it is accepted,
  using the executor's small public primitives (``validate``, ``reserve_slot``,
  ``accept_reserved``, ``release_slot``);
* to record a template (``record_template``), and to wait until what happened so far is durable
  (``sync``);
* with ``write_ahead_start``, to let a job's steps begin only once its start is durable
  (``wait_recorded``), so that a job which had begun is never run a second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..wire._events import RequestId
from ._jobs import Job, TableObserver

if TYPE_CHECKING:
    from ._executor import Executor

__all__ = ["DurableState"]


class DurableState(TableObserver, Protocol):
    """What an executor with durable state asks of it (see the module docstring)."""

    @property
    def write_ahead_start(self) -> bool:
        """Whether a job's steps wait for its start to be durable (``--on-restart fail``)."""
        ...

    async def submit(
        self,
        executor: Executor,
        job: Any,
        *,
        template: str | None,
        params: Mapping[str, Any] | None,
        name: str | None,
        request_id: RequestId,
        extra: dict[str, Any],
    ) -> Job:
        """Make a submit durable, then accept it; raises the submit's ``CommandError``."""
        ...

    def record_template(self, name: str, job: Any) -> None:
        """Record a template definition (durable once :meth:`sync` returns)."""
        ...

    async def sync(self) -> None:
        """Return once every change so far is durable; raise ``StoreFailed`` if it cannot be."""
        ...

    async def wait_recorded(self) -> None:
        """Like :meth:`sync`, but never raises: a job waits, it is not refused."""
        ...
