"""Subprocess clients: drive a ``stepline serve`` child from any Python program.

::

    with stepline.Client() as c:                   # threads; no event loop needed
        job = c.submit({"run": ["make"]})
        print(job.wait(timeout=60))

    async with stepline.AsyncClient() as c:        # the same on trio
        job = await c.submit({"run": ["make"]})
        print(await job.wait())

Both spawn ``python -m stepline serve [args]`` and speak the wire protocol to it, with the
protocol logic shared in :class:`~stepline.client._session.ClientSession`. The child's stdout is
always
being read (a reader thread, or a trio task), whatever the caller is doing, so neither pipe can
fill up and deadlock the pair. Its stderr is left to the parent's stderr by default.

Leaving the ``with`` block normally closes the child's stdin: the child drains (every submitted
job runs to its end), says ``bye`` and exits. Leaving it with an exception first sends
``shutdown`` ``cancel``: every unfinished job ends ``cancelled`` and its processes are stopped.
Either way the child is waited for; one that does not exit within ``close_timeout`` seconds of a
cancel is killed.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import IO, Any

from attrs import frozen

from ..wire._events import Event
from ._history import DEFAULT_HISTORY, EventHistory, HistoryReader, HistoryView
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

__all__ = ["Client", "ClientJob"]

NOT_STARTED = (
    "the client has not been started: use `with stepline.Client() as c:`, or call c.start() "
    "first and c.close() when done"
)


@frozen
class _Child:
    """The spawned ``stepline serve`` and its two pipes (never None, unlike Popen's)."""

    proc: subprocess.Popen[bytes]
    stdin: IO[bytes]
    stdout: IO[bytes]

    @classmethod
    def spawn(
        cls, argv: list[str], env: dict[str, str] | None, stderr: IO[Any] | int | None
    ) -> _Child:
        pipe = subprocess.PIPE
        proc = subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=stderr, env=env)
        assert proc.stdin is not None
        assert proc.stdout is not None
        return cls(proc, proc.stdin, proc.stdout)


class Client:
    """A ``stepline serve`` child driven from plain (threaded) Python; see the module doc."""

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
        self._session = ClientSession(lambda job: EventHistory(job, history))
        self._changed = threading.Condition()  # guards the session; notified on every event
        self._write_lock = threading.Lock()  # one writer at a time, ids sent in order
        self._child: _Child | None = None
        self._reader = threading.Thread(target=self._read, name="stepline-client", daemon=True)

    # -- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> Client:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(cancel=exc_type is not None)

    @property
    def ready(self) -> Event:
        """The child's ``ready`` event: ``version``, ``protocol``, ``workers``, ``queue_size``."""
        if self._session.ready is None:
            raise RuntimeError(NOT_STARTED)
        return self._session.ready

    def start(self, timeout: float | None = 30.0) -> None:
        """Spawn the child and wait for its ``ready`` (what ``with Client() as c:`` does; a
        client started this way is ended with :meth:`close`)."""
        self._child = _Child.spawn(self._argv, self._env, self._stderr)
        self._reader.start()
        try:
            with self._changed:
                self._wait(lambda: self._session.ready is not None, timeout)
        except BaseException:
            self.close(cancel=True)
            raise

    def close(self, *, cancel: bool = False) -> int:
        """Shut the child down (drain, or ``cancel`` every job) and return its exit status."""
        child = self._started()
        if cancel:
            self._ask_to_cancel(child)
        with self._write_lock, contextlib.suppress(BrokenPipeError):  # close flushes
            child.stdin.close()
        self._reader.join(self._close_timeout if cancel else None)
        if self._reader.is_alive():
            child.proc.kill()
            self._reader.join()
        return child.proc.wait()

    def _ask_to_cancel(self, child: _Child) -> None:
        """``shutdown cancel``; or, once stdin is closed (a drain was under way), SIGTERM, which
        ``serve`` treats the same way. Never SIGKILL first: the jobs' processes would be left."""
        try:
            self._send("shutdown", {"mode": "cancel"})
        except ClientError:
            if child.proc.poll() is None:
                child.proc.terminate()

    def kill(self) -> None:
        """Kill the child at once (SIGKILL); its jobs' processes are left to it."""
        self._started().proc.kill()

    def _started(self) -> _Child:
        if self._child is None:
            raise RuntimeError(NOT_STARTED)
        return self._child

    # -- commands ----------------------------------------------------------------------------

    def submit(
        self,
        job: Any = None,
        *,
        template: str | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
        timeout: float | None = None,
    ) -> ClientJob:
        """Submit a job (or a template with params); returns once it is accepted.

        An ``error`` reply (``invalid_job``, ``queue_full``, ...) raises :class:`ClientError`.
        """
        fields = present(job=job, template=template, params=params, name=name)
        reply, history = self._request("submit", fields, timeout)
        assert history is not None, reply
        return ClientJob(self, history)

    def define(self, name: str, job: Any, timeout: float | None = None) -> None:
        """Define a template for ``submit(template=...)`` and ``use`` steps."""
        self._request("define", {"name": name, "job": job}, timeout)

    def status(
        self,
        job: str | ClientJob | None = None,
        timeout: float | None = None,
        *,
        state: str | list[str] | None = None,
        name: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """``status`` records: every known job's, or one job's, or those the filters pick
        (``limit``: the most recent first)."""
        job_id = job.id if isinstance(job, ClientJob) else job
        fields = present(job=job_id, state=state, name=name, since=since, limit=limit)
        reply, _ = self._request("status", fields, timeout)
        jobs: list[dict[str, Any]] = reply["jobs"]
        return jobs

    def logs(
        self, job: str | ClientJob, after: int = 0, timeout: float | None = None
    ) -> dict[str, Any]:
        """A page of the job's output lines after line ``after``: ``lines``, ``next``,
        ``trimmed``, ``done``."""
        job_id = job.id if isinstance(job, ClientJob) else job
        reply, _ = self._request("logs", {"job": job_id, "after": after}, timeout)
        return logs_fields(reply)

    def stats(self, timeout: float | None = None) -> dict[str, Any]:
        """Counts: ``queued``, ``running``, ``finished`` by state; ``workers``, ``queue_size``."""
        reply, _ = self._request("stats", {}, timeout)
        return {k: v for k, v in reply.items() if k not in ("event", "ts", "id")}

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> Event:
        """Send any command; returns its reply event (an ``error`` raises ClientError)."""
        return self._request(op, fields, timeout)[0]

    # -- the wire ----------------------------------------------------------------------------

    def _request(
        self, op: str, fields: dict[str, Any], timeout: float | None
    ) -> tuple[Event, EventHistory | None]:
        request_id = self._send(op, fields)
        with self._changed:
            try:
                self._wait(lambda: self._session.answered(request_id), timeout)
                return self._session.take_reply(request_id)
            finally:
                self._session.forget(request_id)

    def _send(self, op: str, fields: dict[str, Any]) -> int:
        # The write lock spans numbering and writing, so ids reach the child in order.
        with self._write_lock:
            with self._changed:
                request_id, command = self._session.command(op, fields)
            try:
                self._write(command)
            except BaseException:
                with self._changed:
                    self._session.forget(request_id)
                raise
        return request_id

    def _write(self, command: dict[str, Any]) -> None:
        line = encode_command(command)
        if self._tap is not None:
            call_tap(self._tap, ">", command)
        stdin = self._started().stdin
        try:
            stdin.write(line)
            stdin.flush()
        except (BrokenPipeError, ValueError):  # ValueError: stdin already closed
            raise ClientError(DISCONNECTED, "stepline serve is not reading commands") from None

    def _read(self) -> None:
        """The reader thread: every event into the session, until the child's stdout ends."""
        child = self._started()
        try:
            with child.stdout:
                for line in child.stdout:
                    ev = decode_event(line)
                    if ev is not None:
                        self._deliver(ev)
        finally:
            status = child.proc.wait()
            with self._changed:
                self._session.disconnect(exit_reason(self._session.said_bye, status))
                self._changed.notify_all()

    def _deliver(self, ev: Event) -> None:
        if self._tap is not None:
            call_tap(self._tap, "<", ev)
        with self._changed:
            self._session.receive(ev)
            self._changed.notify_all()

    def _wait(self, predicate: Callable[[], bool], timeout: float | None) -> None:
        """Wait (holding ``_changed``) until ``predicate``; raises on timeout or disconnect."""
        if not self._changed.wait_for(
            lambda: predicate() or self._session.gone is not None, timeout
        ):
            raise TimeoutError(f"no answer from stepline serve within {timeout}s")
        if not predicate():
            raise ClientError(DISCONNECTED, self._session.gone or "disconnected")

    def _next_event(self, reader: HistoryReader, timeout: float | None) -> Event | None:
        with self._changed:
            while (ev := reader.pop()) is None and not reader.ended:
                if self._session.gone is not None:
                    raise ClientError(DISCONNECTED, self._session.gone)
                if not self._changed.wait(timeout):
                    raise TimeoutError(f"no event from stepline serve within {timeout}s")
            return ev

    def _wait_done(self, history: EventHistory, timeout: float | None) -> Event:
        with self._changed:
            self._wait(lambda: history.done, timeout)
        assert history.finished is not None
        return history.finished


class ClientJob(HistoryView):
    """A job submitted through a :class:`Client`.

    It waits through its client's private ``_wait_done`` and ``_next_event`` (``noqa: SLF001``):
    the two classes are one unit in this module, and those waits are not the client's API.
    """

    def __init__(self, client: Client, history: EventHistory) -> None:
        super().__init__(history)
        self._client = client

    def wait(self, timeout: float | None = None) -> Any:
        """The job's output; raises :class:`~stepline.JobFailed` if it did not succeed,
        :class:`TimeoutError` after ``timeout`` seconds, :class:`ClientError` if the child died."""
        return result_of(self._client._wait_done(self._history, timeout))  # noqa: SLF001 (class doc)

    def cancel(
        self, timeout: float | None = None, *, force: bool = False, grace: float | None = None
    ) -> bool:
        """Cancel the job and wait until it has finished; False if it had finished already.
        Its processes get ``grace`` seconds after SIGTERM (None: their steps' own), none with
        ``force``."""
        if self.done:
            return False
        options = present(grace=grace, force=force or None)
        try:
            self._client.request("cancel", timeout, job=self.id, **options)
        except ClientError as exc:
            if exc.code == "already_finished":
                return False
            raise
        self._client._wait_done(self._history, timeout)  # noqa: SLF001 (class doc)
        return True

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """This job's events from ``accepted`` to ``finished`` (each call starts over);
        ``timeout`` bounds the wait for each next event."""
        reader = HistoryReader(self._history)
        while (ev := self._client._next_event(reader, timeout)) is not None:  # noqa: SLF001 (class doc)
            yield ev

    def output_lines(
        self, after: int = 0, timeout: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """The job's output lines after line ``after``, to the end of the job (``_lines.py``);
        ``timeout`` bounds each ``logs`` request."""
        while True:
            reply = self._client.logs(self.id, after, timeout)
            yield from reply["lines"]
            if reply["done"]:
                return
            if reply["next"] == after:
                time.sleep(POLL)
            after = reply["next"]
