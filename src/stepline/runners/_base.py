"""The Runner seam: how a ``run`` step (or a ``run`` callback) gets a process, whatever starts it.

The engine never starts a process itself. It describes one (:class:`Launch`: argv, env, cwd,
stdin text, grace, limits, output cap) and hands it to the executor's :class:`Runner`, then
drives what comes back through :func:`run_process`, which holds the one lifecycle every runner
shares::

    process = runner.start(launch)         # ProcessStartError if it cannot start
    try:
        result = await process.wait()      # exit status or signal, captured output
    except BaseException:                  # a cancel above all: stop it, then let it go on
        with trio.CancelScope(shield=True):
            await process.stop(launch.grace)
        raise
    finally:
        process.close()

Implementations: :class:`~stepline.runners._local.LocalRunner` (each child leads its own process
group on this machine), :class:`~stepline.runners._sandbox.SandboxRunner` (launches that ask for
``runner: "sandbox"`` in bubblewrap, on a local runner; the executor's default is the two
together) and :class:`~stepline.runners._fake.FakeRunner` (no processes at all: scripted
results, for tests of the code above the seam). A runner that starts processes elsewhere (a
container engine, a remote machine) implements the same two protocols; the engine picks it up
through ``Executor(runner=...)`` (docs/runners.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal, Protocol, TypeAlias

import attrs
import trio

from .._record import ValueRecord
from ..spec._limits import NO_LIMITS, Limits

__all__ = [
    "OUTPUT_CAP",
    "Launch",
    "Limits",
    "OutputSink",
    "Process",
    "ProcessResult",
    "ProcessStartError",
    "Runner",
    "StreamName",
    "drive_process",
    "run_process",
]

OUTPUT_CAP: Final = 1 << 20
"""Bytes kept per stream: 1 MiB of stdout and 1 MiB of stderr; the rest is drained and dropped."""


StreamName: TypeAlias = Literal["stdout", "stderr"]


class OutputSink(Protocol):
    """Where a process's output goes *as it is read*, besides the bounded capture in its result.

    A runner hands every chunk it reads to :meth:`write`, in the order it read them per stream,
    then calls :meth:`eof` once per stream. Whenever :attr:`congested` is true after a write, the
    runner awaits :meth:`wait_writable` before reading more of either stream: the child's writes
    then block on its full pipe, so output that nobody reads waits in the child, not in memory.
    Splitting chunks into lines is the sink's business (:mod:`stepline.engine._output`).
    """

    def write(self, stream: StreamName, data: bytes) -> None:
        """Bytes the process wrote to ``stream``, as read (any size, lines cut anywhere)."""
        ...

    def eof(self, stream: StreamName) -> None:
        """``stream`` ended: a final line without a newline is complete now."""
        ...

    @property
    def congested(self) -> bool:
        """Whether the runner must :meth:`wait_writable` before reading more."""
        ...

    async def wait_writable(self) -> None:
        """Until the sink can take more output."""
        ...


@attrs.frozen(repr=False, eq=False)
class Launch(ValueRecord):
    """One process to start: what it runs, where, what it reads, and how it may be stopped.

    ``env`` is merged over the runner's own environment (None: that environment as is); ``cwd``
    None is the runner's working directory; ``stdin`` None gives the process an empty stdin
    (``/dev/null``), text is written to it and then closed. ``grace`` is how long a stop waits
    between asking and forcing. ``output_cap`` bounds what is kept of each of stdout and stderr.
    ``output`` (None: nobody) also gets every chunk of output as it is read, and may hold the
    process back by being congested (:class:`OutputSink`). ``limits.output``, when set, replaces
    the cap and makes more output a failure. ``runner`` names the runner meant to start it
    (``local`` or ``sandbox``); ``network`` lets a sandboxed process reach the network, and
    ``workspace`` is the directory it may write (the job's workspace; None: none).
    """

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stdin: str | None = None
    grace: float = 5.0
    limits: Limits = NO_LIMITS
    output_cap: int = OUTPUT_CAP
    output: OutputSink | None = attrs.field(default=None, eq=False)  # a live object, not a value
    runner: str = "local"
    network: bool = False
    workspace: str | None = None


@attrs.frozen(repr=False, eq=False)
class ProcessResult(ValueRecord):
    """How a process ended and what it wrote.

    ``returncode`` is negative when a signal ended the process (-15 SIGTERM, -9 SIGKILL); note a
    shell reports its own child's signal death as 128+N instead. ``stdout``/``stderr`` are
    decoded as UTF-8 with invalid bytes replaced. ``truncated`` is True when either stream
    exceeded the cap and was cut. ``pid`` is the id of the local process group the process led
    (the workspace checks it is empty before reusing a directory), or 0 when the runner started
    no local process group. ``limit`` names the limit the process ran into (``memory`` for an
    OOM kill at the step's own memory limit), or is None. ``group_gone``: the runner saw that
    group empty before it returned (the local runner ends the step's whole tree), so the
    workspace need not look again: an empty process group can never be joined. ``oom``: the
    kernel's OOM killer killed a process of the step for memory that ran out elsewhere (the
    machine's, or a cgroup's above stepline's); a runner that cannot tell leaves it False.
    """

    returncode: int
    stdout: str
    stderr: str
    truncated: bool
    pid: int = attrs.field(default=0, eq=False)  # identifies, not part of the result's value
    limit: str | None = None
    group_gone: bool = attrs.field(default=False, eq=False)  # how it ended, not what it gave
    oom: bool = False


class ProcessStartError(Exception):
    """The process could not be started: no such program, not executable, bad cwd, bad argv.

    The message is meant for humans and names the program or the cwd at fault.
    """


class Process(Protocol):
    """A started process, as a runner hands it out. Driven by :func:`run_process` only."""

    async def wait(self) -> ProcessResult:
        """Feed its stdin, capture its output to the end, and return how it ended.

        May raise :class:`ProcessStartError` (a runner that starts lazily finds out here).
        Cancellable at any checkpoint: the caller then stops the process with :meth:`stop`.
        """
        ...

    async def stop(self, grace: float) -> None:
        """End the process and everything it started: ask it to stop, wait up to ``grace``
        seconds, then force it (``grace`` 0: force it at once). Called in a shielded scope;
        returns once nothing of it is left running."""
        ...

    def hurry(self) -> None:
        """End the grace of a :meth:`stop` under way: force the process now (a no-op when no
        stop waits). Synchronous: a ``cancel`` with ``force`` calls it."""
        ...

    def close(self) -> None:
        """Release what the process held (descriptors, registrations). Idempotent."""
        ...


class StopOrders:
    """How a job's processes are stopped when it is cancelled: a ``cancel``'s ``grace`` (None:
    each step's own), read when a stop begins, and ``force``, which also cuts short the grace
    of stops already under way (a first cancel's SIGTERM being waited out)."""

    __slots__ = ("_stopping", "grace")

    def __init__(self) -> None:
        self.grace: float | None = None
        self._stopping: set[Process] = set()

    def force(self) -> None:
        """SIGKILL now: every process being stopped, and every stop that begins later."""
        self.grace = 0.0
        for process in list(self._stopping):
            process.hurry()

    async def stop(self, process: Process, grace: float) -> None:
        """``process.stop`` with this order's grace (if set), hurried by a later :meth:`force`."""
        self._stopping.add(process)
        try:
            await process.stop(grace if self.grace is None else self.grace)
        finally:
            self._stopping.discard(process)


class Runner(Protocol):
    """Starts processes for ``run`` steps and ``run`` callbacks (see the module docstring)."""

    def start(self, launch: Launch) -> Process:
        """Start ``launch`` and return it; raises :class:`ProcessStartError`.

        Synchronous, so there is no moment at which a started process is not yet the caller's
        to stop; it must not hold the event loop for long. A runner may defer the start itself
        to the first ``wait`` (the local runner forks and execs there, on a spawner thread),
        which then raises :class:`ProcessStartError`; ``stop`` and ``close`` of a process that
        never started do nothing but release what ``start`` took.
        """
        ...

    def kill_all(self) -> None:
        """Hard stop: force every process this runner started and has not finished, at once,
        and from now on stop processes without their grace. Synchronous: a signal handler
        calls it."""
        ...


async def run_process(
    runner: Runner, launch: Launch, orders: StopOrders | None = None
) -> ProcessResult:
    """Run ``launch`` to its end on ``runner``; on cancellation stop it, then let the
    ``Cancelled`` propagate untouched. Raises :class:`ProcessStartError`.

    The stop waits ``launch.grace`` unless ``orders`` (the job's :class:`StopOrders`, which a
    ``cancel`` may set: ``force``, ``grace``) says otherwise when the stop begins or meanwhile.
    """
    return await drive_process(runner.start(launch), launch, orders)


async def drive_process(
    process: Process, launch: Launch, orders: StopOrders | None = None
) -> ProcessResult:
    """:func:`run_process` for a process already started (``runner.start(launch)``)."""
    try:
        return await process.wait()
    except BaseException:  # cancellation above all: stop the process, then let it propagate
        with trio.CancelScope(shield=True):
            if orders is None:
                await process.stop(launch.grace)
            else:
                await orders.stop(process, launch.grace)
        raise
    finally:
        process.close()
