"""The callback runner: a job's ``on_finish`` callbacks, run after its ``finished`` event.

:meth:`CallbackRunner.job_finished` is a hook of the job table, called synchronously right after
``finished`` is emitted. It never awaits, so nothing about callbacks can delay a job's own
``finished`` or a worker:

* ``notify`` writes its ``notification`` event there and then, exactly once;
* ``alert`` opens an alert there and then (see :mod:`stepline.triggers._alerts`);
* ``webhook`` and ``run`` involve I/O: they are handed to the runner's own task nursery, where at
  most ``limit`` run at once (``--callback-limit``). A slow or dead endpoint therefore holds one
  of those slots, never a worker, and never another job.

Every callback that runs gets exactly one ``callback`` event reporting its outcome::

    {"event": "callback", "job": "j3", "callback": 0, "kind": "webhook", "ok": false,
     "attempts": 3, "status": 503, "error": "HTTP 503"}

A callback whose ``when`` does not match the job's final state does not run and gets no event.
A failing callback never changes the job's state: the job had finished before it started.

Shutdown: a draining executor waits for pending callbacks, at most ``drain_timeout`` seconds
(``--callback-drain``), then cancels what is left; a cancelling shutdown cancels them at once,
and a callback of a job that finishes after that is not started. A cancelled callback still
gets its ``callback`` event (``ok: false``, ``error: "cancelled by shutdown"``), and a ``run``
callback's process group is stopped like a ``run`` step's (SIGTERM, grace, SIGKILL).

Pending callbacks are bounded too (:data:`MAX_PENDING`): past that, a new one is reported as
failed at once instead of queueing without limit behind a dead endpoint.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
import trio

from ..engine._http import HttpClient, Progress, deliver_webhook
from ..engine._jobs import Job
from ..runners._base import Launch, ProcessStartError, Runner, run_process
from ..spec._callbacks import Alert, Callback, Notify, RunCallback, Webhook
from ..wire._events import Event, event
from ..wire._outbox import Outbox
from ._alerts import AlertBook

__all__ = ["MAX_PENDING", "CallbackRunner"]

log = logging.getLogger("stepline")

MAX_PENDING: Final = 10_000
"""Webhook and run callbacks waiting or running at most; beyond this they fail at once."""

_TAIL: Final = 4096  # characters of a run callback's stdout/stderr kept in its event
_CANCELLED: Final = "cancelled by shutdown"

# A callback to deliver, or None: every callback of a job whose `finished` is still held back
# until its outcome is durable (--state), to be started once it has been written.
_Work = tuple[Webhook | RunCallback | None, Job, Event]


class CallbackRunner:
    """Runs ``on_finish`` callbacks; see the module docstring for the guarantees."""

    def __init__(
        self,
        outbox: Outbox,
        alerts: AlertBook,
        http: HttpClient,
        runner: Runner,
        *,
        limit: int,
        released: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._outbox = outbox
        self._released = released
        self._alerts = alerts
        self._http = http
        self._runner = runner
        self._limiter = trio.CapacityLimiter(limit)
        self._send, self._receive = trio.open_memory_channel[_Work](math.inf)
        self._pending = 0
        self._idle = trio.lowlevel.ParkingLot()
        self._scope: trio.CancelScope | None = None
        self.cancelled = False

    @property
    def pending(self) -> int:
        """Webhook and run callbacks not yet reported."""
        return self._pending

    # -- the job table hook ------------------------------------------------------------------

    def job_finished(self, job: Job, finished: Event) -> None:
        """Start the job's callbacks that apply to its final state. Never raises, never waits.

        With durable state, the table hands ``finished`` to the store, which writes it only once
        the outcome is committed; the callbacks then wait for ``released`` (the store's commit)
        so that they still follow their job's ``finished`` on the wire.
        """
        if not job.spec.on_finish:
            return
        if self._released is not None and not self.cancelled:
            self._pending += 1
            self._send.send_nowait((None, job, finished))
            return
        self._start_all(job, finished)

    def _start_all(self, job: Job, finished: Event) -> None:
        state = finished["state"]
        for callback in job.spec.on_finish:
            if not callback.applies(state):
                continue
            try:
                self._start(callback, job, finished)
            except Exception as exc:  # a bug here must not break the job table's transition
                log.exception("internal error starting callback %d of %s", callback.index, job.id)
                self._report(callback, job, ok=False, error=f"internal error: {exc}")

    def _start(self, callback: Callback, job: Job, finished: Event) -> None:
        if isinstance(callback, Notify):
            notification = event("notification", **_about(job, finished), text=callback.text)
            self._outbox.emit(job.tag(notification))
            self._report(callback, job, ok=True)
        elif isinstance(callback, Alert):
            detail = _outcome(finished)
            alert = self._alerts.open(job.id, finished["state"], callback.text, detail)
            self._report(callback, job, ok=True, alert=alert)
        elif self.cancelled:
            self._report(callback, job, ok=False, attempts=0, error=_CANCELLED)
        elif self._pending >= MAX_PENDING:
            error = f"not started: {MAX_PENDING} callbacks already pending"
            self._report(callback, job, ok=False, attempts=0, error=error)
        else:
            self._pending += 1
            self._send.send_nowait((callback, job, finished))

    # -- the service -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start each queued webhook/run callback in its own task (``limit`` at once)."""
        async with trio.open_nursery() as nursery:
            self._scope = nursery.cancel_scope
            if self.cancelled:
                nursery.cancel_scope.cancel()
            task_status.started()
            try:
                async for callback, job, finished in self._receive:
                    if callback is None:
                        nursery.start_soon(self._after_release, job, finished)
                    else:
                        nursery.start_soon(self._deliver, callback, job, finished)
            finally:
                self.cancelled = True  # stopped: callbacks of jobs finishing now do not start

    async def drain(self, timeout: float) -> None:
        """Wait for pending callbacks, at most ``timeout`` seconds; then cancel the rest."""
        with trio.move_on_after(timeout):
            while self._pending and not self.cancelled:
                await self._idle.park()
        self.cancel()
        while self._pending:  # cancelled callbacks report themselves as they unwind
            await self._idle.park()

    def cancel(self) -> None:
        """Cancel every pending callback, and refuse new ones (a cancelling shutdown)."""
        self.cancelled = True
        self._idle.unpark_all()
        while True:
            try:
                callback, job, finished = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            if callback is None:
                self._pending -= 1
                self._start_all(job, finished)  # cancelled: only notify and alert happen
            else:
                self._done(callback, job, ok=False, attempts=0, error=_CANCELLED)
        if self._scope is not None:
            self._scope.cancel()

    # -- delivering one callback -------------------------------------------------------------

    async def _after_release(self, job: Job, finished: Event) -> None:
        """Start a job's callbacks once its held ``finished`` has been written (--state)."""
        assert self._released is not None
        try:
            await self._released()
        finally:  # cancelled too: notify and alert happen, the others report "cancelled"
            self._pending -= 1
            self._idle.unpark_all()
            self._start_all(job, finished)

    async def _deliver(self, callback: Webhook | RunCallback, job: Job, finished: Event) -> None:
        progress = Progress()
        fields: dict[str, Any] | None = None
        try:
            async with self._limiter:
                if isinstance(callback, Webhook):
                    fields = await self._webhook(callback, job, finished, progress)
                else:
                    fields = await self._run(callback, finished, progress)
        except Exception as exc:
            log.exception("internal error in callback %d of %s", callback.index, job.id)
            error = f"internal error: {type(exc).__name__}: {exc}"
            fields = {"ok": False, "attempts": progress.attempts, "error": error}
        finally:  # on Cancelled too: a cancelled callback reports itself as it unwinds
            if fields is None:  # cancelled: say how far it got
                fields = {"ok": False, "attempts": progress.attempts, "error": _CANCELLED}
                if progress.status is not None:
                    fields["status"] = progress.status
            self._done(callback, job, **fields)

    async def _webhook(
        self, hook: Webhook, job: Job, finished: Event, progress: Progress
    ) -> dict[str, Any]:
        body = {**_about(job, finished), **hook.payload}
        result = await deliver_webhook(self._http, hook, body, progress)
        fields: dict[str, Any] = {"ok": result.ok, "attempts": result.attempts}
        fields["status"] = result.status
        if result.error is not None:
            fields["error"] = result.error
        return fields

    async def _run(
        self, callback: RunCallback, finished: Event, progress: Progress
    ) -> dict[str, Any]:
        spec = callback.run
        stdin = orjson.dumps(finished, option=orjson.OPT_APPEND_NEWLINE, default=str).decode()
        timeout = callback.timeout if callback.timeout is not None else math.inf
        progress.attempts = 1  # the process is started before run_process first waits
        with trio.move_on_after(timeout):
            try:
                launch = Launch(spec.argv, spec.env, spec.cwd, stdin, spec.grace)
                result = await run_process(self._runner, launch)
            except ProcessStartError as exc:
                return {"ok": False, "attempts": 1, "error": str(exc)}
            fields: dict[str, Any] = {"ok": result.returncode == 0, "attempts": 1}
            fields.update(exit=result.returncode, stdout=result.stdout[-_TAIL:])
            fields["stderr"] = result.stderr[-_TAIL:]
            if result.returncode != 0:
                fields["error"] = f"{spec.argv[0]} exited with status {result.returncode}"
            return fields
        return {"ok": False, "attempts": 1, "error": f"timed out after {timeout:g}s"}

    # -- reporting ---------------------------------------------------------------------------

    def _done(self, callback: Callback, job: Job, **fields: Any) -> None:
        self._pending -= 1
        self._idle.unpark_all()
        self._report(callback, job, **fields)

    def _report(self, callback: Callback, job: Job, **fields: Any) -> None:
        ev = event("callback", job=job.id, callback=callback.index, kind=callback.kind, **fields)
        self._outbox.emit(job.tag(ev))


def _outcome(finished: Event) -> dict[str, Any]:
    """``{"output": ...}`` of a succeeded job, ``{"error": ...}`` of any other."""
    if "output" in finished:
        return {"output": finished["output"]}
    return {"error": finished.get("error")}


def _about(job: Job, finished: Event) -> dict[str, Any]:
    """What a notification and a webhook body say about the job."""
    about: dict[str, Any] = {"job": job.id, "state": finished["state"]}
    if job.name is not None:
        about["name"] = job.name
    about.update(job.extra)  # e.g. `schedule`: which schedule submitted the job
    about["elapsed"] = finished.get("elapsed")
    about.update(_outcome(finished))
    return about
