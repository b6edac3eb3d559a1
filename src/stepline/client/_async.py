"""The trio flavour of the subprocess client: :class:`AsyncClient`.

Everything :mod:`stepline.client._sync` says holds here too (spawning, draining on a normal exit,
cancelling on an exception, the shared :class:`~stepline.client._session.ClientSession`), with trio
in place of threads: the child's stdout is read by a task in the client's own nursery, and a
handle's ``wait``/``events`` sleep on that job's :class:`~stepline.client._feeds.Feed`. Bound any
wait
with ``trio.fail_after`` rather than a ``timeout`` argument, as trio code does. The methods match
the in-process API (:func:`stepline.open_executor`) one for one.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import IO, Any

import trio

from ..wire._events import Event
from ..wire._framing import read_lines
from ._feeds import Feed, FeedEvents
from ._history import DEFAULT_HISTORY, HistoryView
from ._lines import POLL, logs_fields
from ._outcome import result_of
from ._session import (
    DISCONNECTED,
    SERVE,
    ClientError,
    ClientSession,
    Tap,
    call_tap,
    decode_event,
    encode_command,
    exit_reason,
    present,
)

__all__ = ["AsyncClient", "AsyncClientJob"]


class AsyncClient:
    """A ``stepline serve`` child driven from trio: ``async with AsyncClient() as c``."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        command: Sequence[str] = SERVE,
        env: Mapping[str, str] | None = None,
        stderr: IO[Any] | int | None = None,
        history: int = DEFAULT_HISTORY,
        close_timeout: float = 10.0,
        tap: Tap | None = None,
    ) -> None:
        self._argv = [*command, *args]
        self._env = dict(env) if env is not None else None
        self._stderr = stderr
        self._close_timeout = close_timeout
        self._tap = tap
        self._session = ClientSession(lambda job: Feed(job, history))
        self._changed = trio.lowlevel.ParkingLot()  # replies, ready, disconnect
        self._write_lock = trio.Lock()  # one writer at a time, ids sent in order
        self._eof = trio.Event()
        self._stack = AsyncExitStack()
        self._proc: trio.Process | None = None

    # -- lifetime ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self._stack.enter_async_context(self._running())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._stack.__aexit__(exc_type, exc, tb)

    @property
    def ready(self) -> Event:
        """The child's ``ready`` event: ``version``, ``protocol``, ``workers``, ``queue_size``."""
        assert self._session.ready is not None, "the client has not started"
        return self._session.ready

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has exited."""
        return self._proc.returncode if self._proc is not None else None

    def kill(self) -> None:
        """Kill the child at once (SIGKILL)."""
        self._started().kill()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        proc = self._proc = await trio.lowlevel.open_process(
            self._argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self._env,
        )
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, proc)
                try:
                    await self._wait(lambda: self._session.ready is not None)
                    yield
                    await self._close(cancel=False)
                except BaseException as exc:
                    failure = exc  # raised below, outside the nursery: not wrapped in a group
                    await self._close(cancel=True)
                finally:
                    if not self._eof.is_set():
                        proc.kill()  # never leave the shielded reader waiting for EOF
        finally:
            await self._reap(proc)
        if failure is not None:
            raise failure

    async def _close(self, *, cancel: bool) -> None:
        """Drain (wait as long as it takes) or cancel (shielded, bounded): until EOF."""
        with trio.CancelScope(shield=cancel) as scope:
            if cancel:
                scope.deadline = trio.current_time() + self._close_timeout
                await self._ask_to_cancel()
            stdin = self._started().stdin
            assert stdin is not None
            async with self._write_lock:
                await stdin.aclose()
            await self._eof.wait()
        if not self._eof.is_set():
            self._started().kill()  # it did not stop in time: the reader sees EOF now

    async def _ask_to_cancel(self) -> None:
        """``shutdown cancel``; or, once stdin is closed (a drain was under way), SIGTERM, which
        ``serve`` treats the same way. Never SIGKILL first: the jobs' processes would be left."""
        try:
            await self._send("shutdown", {"mode": "cancel"})
        except ClientError:
            proc = self._started()
            if proc.returncode is None:
                proc.terminate()

    async def _reap(self, proc: trio.Process) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._close_timeout):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    await pipe.aclose()

    def _started(self) -> trio.Process:
        if self._proc is None:
            raise RuntimeError("the client has not been started")
        return self._proc

    # -- commands ----------------------------------------------------------------------------

    async def submit(
        self,
        job: Any = None,
        *,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> AsyncClientJob:
        """Submit a job (or a template with params); returns once it is accepted.

        An ``error`` reply (``invalid_job``, ``queue_full``, ...) raises :class:`ClientError`.
        """
        fields = present(job=job, template=template, params=params, name=name)
        reply, feed = await self._request("submit", fields)
        assert feed is not None, reply
        return AsyncClientJob(self, feed)

    async def define(self, name: str, job: Any) -> None:
        """Define a template for ``submit(template=...)`` and ``use`` steps."""
        await self._request("define", {"name": name, "job": job})

    async def status(
        self,
        job: str | AsyncClientJob | None = None,
        *,
        state: str | list[str] | None = None,
        name: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``status`` records: every known job's, or one job's, or those the filters pick
        (``limit``: the most recent first)."""
        job_id = job.id if isinstance(job, AsyncClientJob) else job
        fields = present(job=job_id, state=state, name=name, since=since, limit=limit)
        reply, _ = await self._request("status", fields)
        jobs: list[dict[str, Any]] = reply["jobs"]
        return jobs

    async def logs(self, job: str | AsyncClientJob, after: int = 0) -> dict[str, Any]:
        """A page of the job's output lines after line ``after``: ``lines``, ``next``,
        ``trimmed``, ``done``."""
        job_id = job.id if isinstance(job, AsyncClientJob) else job
        reply, _ = await self._request("logs", {"job": job_id, "after": after})
        return logs_fields(reply)

    async def stats(self) -> dict[str, Any]:
        """Counts: ``queued``, ``running``, ``finished`` by state; ``workers``, ``queue_size``."""
        reply, _ = await self._request("stats", {})
        return {k: v for k, v in reply.items() if k not in ("event", "ts", "id")}

    async def request(self, op: str, **fields: Any) -> Event:
        """Send any command; returns its reply event (an ``error`` raises ClientError)."""
        return (await self._request(op, fields))[0]

    # -- the wire ----------------------------------------------------------------------------

    async def _request(self, op: str, fields: dict[str, Any]) -> tuple[Event, Feed | None]:
        request_id = await self._send(op, fields)
        try:
            await self._wait(lambda: self._session.answered(request_id))
            return self._session.take_reply(request_id)
        finally:
            self._session.forget(request_id)

    async def _send(self, op: str, fields: dict[str, Any]) -> int:
        # The lock spans numbering and writing, so ids reach the child in order.
        async with self._write_lock:
            request_id, command = self._session.command(op, fields)
            line = encode_command(command)
            if self._tap is not None:
                call_tap(self._tap, ">", command)
            stdin = self._started().stdin
            assert stdin is not None
            try:
                await stdin.send_all(line)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._session.forget(request_id)
                raise ClientError(DISCONNECTED, "stepline serve is not reading commands") from None
        return request_id

    async def _read(self, proc: trio.Process) -> None:
        """The reader task: every event into the session, until the child's stdout ends.

        Shielded: it must go on reading while a cancelled caller shuts the child down (the
        ``finished`` events and ``bye`` come this way). It ends only at EOF, which killing the
        child always brings; :meth:`_running` makes sure that happens.
        """
        assert proc.stdout is not None
        with trio.CancelScope(shield=True):
            async for lines in read_lines(proc.stdout, sys.maxsize):
                for line in lines:
                    ev = decode_event(line) if isinstance(line, bytes) else None
                    if ev is not None:
                        self._deliver(ev)
            with trio.move_on_after(self._close_timeout):
                await proc.wait()  # for the exit status in the `disconnected` message
        self._disconnect(exit_reason(self._session.said_bye, proc.returncode))

    def _deliver(self, ev: Event) -> None:
        if self._tap is not None:
            call_tap(self._tap, "<", ev)
        self._session.receive(ev)
        self._changed.unpark_all()

    def _disconnect(self, reason: str) -> None:
        for feed in self._session.disconnect(reason):
            feed.close(lambda: ClientError(DISCONNECTED, reason))
        self._eof.set()
        self._changed.unpark_all()

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        await trio.lowlevel.checkpoint()
        while not predicate():
            if self._session.gone is not None:
                raise ClientError(DISCONNECTED, self._session.gone)
            await self._changed.park()


class AsyncClientJob(HistoryView):
    """A job submitted through an :class:`AsyncClient`."""

    def __init__(self, client: AsyncClient, feed: Feed) -> None:
        super().__init__(feed)
        self._client = client
        self._feed = feed  # the same history, typed as a Feed: it can be awaited

    async def wait(self) -> Any:
        """The job's output; raises :class:`~stepline.JobFailed` if it did not succeed,
        :class:`ClientError` (``disconnected``) if the child died first."""
        return result_of(await self._feed.wait_done())

    async def cancel(self, *, force: bool = False, grace: float | None = None) -> bool:
        """Cancel the job and wait until it has finished; False if it had finished already.
        Its processes get ``grace`` seconds after SIGTERM (None: their steps' own), none with
        ``force``."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return False
        options = present(grace=grace, force=force or None)
        try:
            await self._client.request("cancel", job=self.id, **options)
        except ClientError as exc:
            if exc.code == "already_finished":
                return False
            raise
        await self._feed.wait_done()
        return True

    def events(self) -> AsyncIterator[Event]:
        """This job's events from ``accepted`` to ``finished``; each call starts over."""
        return FeedEvents(self._feed)

    async def output_lines(self, after: int = 0) -> AsyncIterator[dict[str, Any]]:
        """The job's output lines after line ``after``, to the end of the job (``_lines.py``)."""
        while True:
            reply = await self._client.logs(self.id, after)
            for line in reply["lines"]:
                yield line
            if reply["done"]:
                return
            if reply["next"] == after:
                await trio.sleep(POLL)
            after = reply["next"]
