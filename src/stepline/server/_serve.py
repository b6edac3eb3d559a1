"""``stepline serve``: the executor driven by JSON lines on a pair of streams.

A thin shell over :class:`~stepline.engine._executor.Executor`. Four tasks::

    reader ──decode──▶ dispatch ──▶ Executor ──emit──▶ StreamOutbox ──▶ writer ──▶ stdout
    signal watcher ──▶ Executor.shutdown / kill
    broken-pipe watcher ──▶ Executor.shutdown("cancel")

A :class:`Front` (``--http``) is a second way in to the same executor: it sees every event as it
is written to stdout, runs beside the workers as an attachment, and adds its fields to ``ready``.
The server knows only this protocol, so it imports nothing of the HTTP package.

Shutdown always runs the same way: the executor stops taking jobs, its workers finish (or cancel)
every accepted job, ``run`` returns, the reader and watchers are cancelled, ``bye`` is emitted as
the last event, and the writer flushes and returns. The signal receiver stays open until then,
so a late signal cannot kill the process before its last events are written.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Protocol

import trio
from trio.lowlevel import FdStream

from .._version import __version__
from ..engine._attach import Attachment
from ..engine._executor import Config, Executor
from ..triggers._attach import Triggers
from ..wire._events import Event, error, event
from ..wire._framing import TooLong, read_lines
from ..wire._outbox import Outbox, StreamOutbox, TappedOutbox
from ..wire._plain import PlainSubmit, decode_plain_submit
from ._dispatch import dispatch, submit_nowait
from ._input import SettleBeforeWaiting

if TYPE_CHECKING:
    from ..cluster._commands import ClusterCommands
    from ..cluster._node import ClusterNode
    from ..store._pipeline import SubmitPipeline
    from ..store._recovery import Recovered, RestartPolicy
    from ..store._store import Store

__all__ = ["DEFAULT_MAX_LINE", "HARD_STOP_FLUSH", "Front", "Server"]

log = logging.getLogger("stepline")

DEFAULT_MAX_LINE = 1 << 20
HARD_STOP_FLUSH = 1.0  # seconds a hard stop waits for the last events to be written
_FAIRNESS = 64  # the reader yields to the scheduler at least once every this many commands


class ValueRun(Protocol):
    """Consecutive bare value jobs of one chunk, completed (with ``--state``, staged) together:
    ``engine/_values.py``'s ``ValueRun``, ``store/_values.py``'s ``StagedValueRun``."""

    def add(self, submit: PlainSubmit) -> bool: ...

    def close(self) -> None: ...


class Front(Protocol):
    """Another way in to the executor (the HTTP front), wired in by :class:`Server`."""

    def observe(self, event: Event, line: bytes) -> None:
        """An event written to stdout, with its encoded line; synchronous, must not raise."""

    def observe_lines(self, data: bytes, count: int) -> None:
        """``count`` events written to stdout as lines already encoded (no dicts made for them);
        synchronous, must not raise. With :meth:`observe`, every event once, in order."""

    def ready_fields(self) -> dict[str, Any]:
        """Fields added to the ``ready`` event (say, the URL it listens on)."""
        ...

    def open(self, executor: Executor) -> Attachment:
        """The service to attach to ``executor``: it serves until the executor's run ends."""
        ...


class Server:
    """Serves the protocol on ``stdin``/``stdout`` until shutdown; :meth:`run` returns the exit
    status."""

    def __init__(
        self,
        config: Config,
        stdin: trio.abc.ReceiveStream,
        stdout: trio.abc.SendStream,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        handle_signals: bool = True,
        store: Store | None = None,
        on_restart: RestartPolicy = "rerun",
        cluster: ClusterNode | None = None,
        front: Front | None = None,
    ) -> None:
        self.outbox = (
            StreamOutbox(stdout)
            if front is None
            else TappedOutbox(stdout, front.observe, front.observe_lines)
        )
        # A cluster node (--state postgresql://...) routes the events of jobs submitted on
        # other nodes to them through the database (cluster/_writer.py). --state PATH: the
        # executor writes through the store's event log, which writes each lifecycle event
        # after its commit and keeps every other event in order behind them.
        outbox: Outbox = self.outbox
        if cluster is not None:
            outbox = cluster.route(self.outbox)
        elif store is not None:
            outbox = store.sequence(self.outbox)
        self.executor = Executor(config, outbox)
        Triggers.attach(self.executor)  # callbacks, alerts, schedules: each made on first use
        self._cluster = cluster
        self._front = front
        # --state: the previous run's jobs, restored now, announced after `ready`; submits
        # pipelined so that they share commits (see store/_pipeline.py).
        self._store = store
        self._recovered: list[Recovered] = []
        self._pipeline: SubmitPipeline | ClusterCommands | None = None
        self._stage_nowait: Callable[[PlainSubmit], bool] | None = None  # --state's hot path
        self._settle_reading: Callable[[], Awaitable[None]] | None = None
        # Consecutive value jobs complete together (engine/_values.py), or with --state are
        # staged together (store/_values.py); a cluster stages every submit instead.
        self._values: ValueRun | None = None
        if cluster is not None:
            self._attach_cluster(cluster)
        if store is not None:
            self._attach_store(store, on_restart)
        if self._pipeline is None:
            self._values = self.executor.value_run()
        if front is not None:  # after the store: a restored job is known before HTTP asks
            self.executor.attach(front.open(self.executor))
        self._stdin = stdin
        self._max_line = max_line
        self._handle_signals = handle_signals
        self._exit_status = 0
        self._signals_seen = 0

    def _attach_cluster(self, cluster: ClusterNode) -> None:
        """A node of a cluster: its commands go through the database (cluster/_commands.py)."""
        cluster.attach(self.executor)
        self._pipeline = commands = cluster.commands()
        self._settle_reading = commands.settle

    def _attach_store(self, store: Store, on_restart: RestartPolicy) -> None:
        """--state FILE: the last run's jobs restored (announced after `ready`), and submits
        staged through the pipeline that makes them share commits."""
        from ..store._pipeline import SubmitPipeline  # start-up time: --state only
        from ..store._recovery import restore

        store.attach(self.executor)
        self._recovered = restore(self.executor, store.snapshot, on_restart)
        self._pipeline = pipeline = SubmitPipeline(self.executor, store)
        self._stage_nowait = pipeline.offer_nowait
        self._settle_reading = pipeline.settle_before_reading
        self._values = pipeline.value_run()

    async def run(self) -> int:
        with ExitStack() as stack:
            signals = None
            if self._handle_signals:
                receiver = trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM)
                signals = stack.enter_context(receiver)
            if self._store is not None:  # the writer thread gets the GIL back quickly
                from ..store._store import quick_gil_handoffs

                stack.enter_context(quick_gil_handoffs())
            async with trio.open_nursery() as outer:
                self._outer = outer.cancel_scope
                outer.start_soon(self.outbox.run)
                if self._store is not None:
                    await outer.start(self._store.run)
                self.outbox.emit(self._ready())
                if self._store is not None:
                    self._store.redeliver()  # what the last run committed but had not written
                await self._serve(signals)
                if self._store is not None:
                    await self._store.flush()  # the last outcomes are durable before `bye`
                self.outbox.emit(event("bye"))
                self.outbox.close()
                if self._store is not None:
                    # Housekeeping, after `bye`: the delivery cursor once stdout has every line,
                    # and the file closed (SQLite's checkpoint); the exit waits for it, and a
                    # server started on the file meanwhile waits for the lock (store/_sqlite.py).
                    await self._store.aclose()
        self.executor.workspaces.remove_abandoned()  # by a hard stop: after the last event
        if self.outbox.broken:
            return 1
        return self._exit_status

    async def _serve(self, signals: AsyncIterator[int] | None) -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(self._watch_broken_pipe)
            if signals is not None:
                inner.start_soon(self._watch_signals, signals)
            # Commands are read once the workers are up: a job that finds them idle may run at
            # once (Executor.submit_nowait), and input already waiting must not miss that.
            await inner.start(self._run_executor, inner.cancel_scope)
            inner.start_soon(self._read_commands)

    async def _run_executor(
        self, tasks: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run the executor (started: its workers are up); once it has ended, end ``tasks``."""
        await self.executor.run(task_status=task_status)
        tasks.cancel()

    def _ready(self) -> dict[str, object]:
        config = self.executor.config
        return event(
            "ready",
            version=__version__,
            protocol=1,
            workers=config.workers,
            queue_size=config.queue_size,
            **({} if self._cluster is None else {"node": self._cluster.id}),
            **(self._front.ready_fields() if self._front is not None else {}),
        )

    # -- tasks -------------------------------------------------------------------------------

    async def _read_commands(self) -> None:
        if self._recovered:
            from ..store._recovery import resume  # start-up time: --state only

            assert self._store is not None
            await resume(self.executor, self._store, self._recovered)  # before the first command
        # Never hold staged submits while waiting for input: they are settled before every
        # read that would wait (and at the end of each chunk where that cannot be known).
        stdin = self._stdin
        settle_each_chunk = self._pipeline is not None and not isinstance(stdin, FdStream)
        if self._pipeline is not None and isinstance(stdin, FdStream):
            stdin = SettleBeforeWaiting(stdin, self._settle_before_reading)
        try:
            async with stdin:
                handled = 0
                async for lines in read_lines(stdin, self._max_line):
                    handled = await self._handle_lines(lines, handled)
                    if settle_each_chunk:
                        await self._settle_before_reading()
        finally:
            with trio.CancelScope(shield=True):  # staged records must end accepted, even now
                await self._settle()
        if self._cluster is not None:
            await self._cluster.wait_submitted()  # this node may be the one that runs them
        self.executor.shutdown("drain")  # EOF: no new commands; what was accepted finishes

    async def _settle(self) -> None:
        """Accept the staged submits (--state) before anything else is answered."""
        if self._pipeline is not None:
            await self._pipeline.settle()

    async def _settle_before_reading(self) -> None:
        """Before a read that may wait: accept what must not wait for more input (--state)."""
        if self._settle_reading is not None:
            await self._settle_reading()

    async def _handle_lines(self, lines: list[bytes | TooLong], handled: int) -> int:
        """One chunk's commands, in order; ``handled``: how many came before (the count goes on).

        Only a congested outbox makes the reader wait. Yielding per line cost a full scheduler
        pass per command (4x the passes of the bare trio loop); receive_some, a full queue and
        every _FAIRNESS commands are the reader's yield points instead (jobs run at once run in
        the reader: without that last one, a chunk of them would hold the writer, the workers
        and the heartbeats for as long as they all take).

        Consecutive bare value jobs go into the ``ValueRun`` (engine/_values.py; with
        ``--state``, store/_values.py), which completes them together; it is closed (its jobs
        completed) before every ``await`` and before any other command is handled, so every
        command sees the jobs before it done.
        """
        run = self._values
        for line in lines:
            if self.outbox.congested:
                if run is not None:
                    run.close()
                await self.outbox.wait_writable()
            plain = decode_plain_submit(line) if type(line) is bytes else None
            if plain is None:
                if run is not None:
                    run.close()
                await self._handle_line(line)
            elif run is not None:
                if not run.add(plain):
                    run.close()
                    if not self._submit_now(plain):
                        await self._handle_line(line)
            elif not self._stage_now(plain):
                await self._handle_line(line)
            handled += 1
            if not handled % _FAIRNESS:
                if run is not None:
                    run.close()
                await trio.lowlevel.checkpoint()
        if run is not None:
            run.close()
        return handled

    def _submit_now(self, plain: PlainSubmit) -> bool:
        """A plain submit accepted now (staged, with ``--state``), if it needs no waiting;
        False, with nothing done, leaves its line to :meth:`_handle_line`."""
        if self._stage_nowait is not None:
            return self._stage_nowait(plain)
        return submit_nowait(self.executor, plain)

    def _stage_now(self, plain: PlainSubmit) -> bool:
        """``--state``: a plain submit staged in order (store/_pipeline.py), if it needs no
        waiting; False, with nothing done, leaves its line to :meth:`_handle_line`, which
        parses it again: twice only for a submit that must wait (rare, or waiting anyway)."""
        return self._stage_nowait is not None and self._stage_nowait(plain)

    async def _handle_line(self, line: bytes | TooLong) -> None:
        if isinstance(line, TooLong):
            await self._settle()
            message = f"line of {line.length} bytes exceeds --max-line {self._max_line}"
            self.executor.outbox.emit(error("line_too_long", message))
            return
        from ..wire._commands import CommandRefused, decode_command  # start-up: wire/_plain.py

        try:
            command, request_id = decode_command(line)
        except CommandRefused as refused:
            await self._settle()
            refusal = error(refused.error.code, refused.error.message, refused.request_id)
            self.executor.outbox.emit(refusal)
            return
        if self._pipeline is not None and await self._pipeline.offer(command, request_id):
            return  # a submit, staged (or refused in order)
        await self._settle()
        await dispatch(self.executor, command, request_id)

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self._signals_seen += 1
            name = signal.Signals(signum).name
            if self._signals_seen == 1:
                log.warning("%s: cancelling every job and shutting down", name)
                self.executor.shutdown("cancel")
            else:
                log.warning("second %s: killing every child and stopping now", name)
                self._exit_status = 128 + signum
                self.executor.kill()
                self._outer.deadline = trio.current_time() + HARD_STOP_FLUSH

    async def _watch_broken_pipe(self) -> None:
        await self.outbox.broken_event.wait()
        self.executor.shutdown("cancel")
