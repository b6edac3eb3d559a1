"""A runner that starts no processes: a handler scripts each launch's outcome (for tests).

What httpx's ``MockTransport`` is to its transports and dramatiq's ``StubBroker`` to its
brokers: the code above the seam (the ``run`` step interpreter, ``run`` callbacks, cancellation,
the hard stop) can be tested on trio's mock clock, exactly and without real children::

    async def handler(launch: Launch) -> ProcessResult:
        await trio.sleep(10)                      # "runs" for ten seconds of trio time
        return ProcessResult(0, "done\\n", "", False)

    runner = FakeRunner(handler)
    executor = Executor(config, outbox, runner=runner)
    ...
    assert runner.launches[0].argv == ("make",)

The handler is called in :meth:`FakeRunner.start` with the :class:`Launch`. It returns a
:class:`ProcessResult`, or an awaitable of one (awaited in ``wait``: it may sleep, and is
cancelled like a real wait), or raises :class:`ProcessStartError` for a process that cannot
start. The default handler behaves like ``cat``: exit 0, stdout is the stdin text. Whatever the
handler returns is held to the seam's contract: each stream is cut to ``launch.output_cap``
bytes (``truncated`` then set), and ``pid`` is 0 (no local process group to check).

Output as it is written: a launch with an ``output`` sink gets the result's stdout, then its
stderr, when the process ends, as a real capture would have read them. A handler that wants to
script output *during* the run writes to ``launch.output`` itself (the launch it is given
carries a sink whenever the real one did), e.g. ``await write(launch, "stdout", "line\n")``
between sleeps; the result's text is then not written again. Both honour the sink's
congestion, as a real reader does.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ._base import Launch, OutputSink, ProcessResult, StreamName

__all__ = ["FakeProcess", "FakeRunner", "Handler", "Stop", "write"]

Handler = Callable[[Launch], ProcessResult | Awaitable[ProcessResult]]


async def write(launch: Launch, stream: StreamName, text: str) -> None:
    """For a handler: the process writes ``text`` to ``stream`` now (waits while the sink is
    congested, as a child blocks on a full pipe). Nothing happens without a sink."""
    sink = launch.output
    if sink is not None and text:
        sink.write(stream, text.encode("utf-8"))
        if sink.congested:
            await sink.wait_writable()


@attrs.define(eq=False)
class _Feed:
    """The sink a handler sees: the real one, noting whether the handler wrote to it."""

    sink: OutputSink
    written: bool = False

    def write(self, stream: StreamName, data: bytes) -> None:
        self.written = True
        self.sink.write(stream, data)

    def eof(self, stream: StreamName) -> None:
        self.sink.eof(stream)

    @property
    def congested(self) -> bool:
        return self.sink.congested

    async def wait_writable(self) -> None:
        await self.sink.wait_writable()


def _cat(launch: Launch) -> ProcessResult:
    return ProcessResult(0, launch.stdin or "", "", False)


@attrs.frozen
class Stop:
    """A stop the fake was asked for: which launch, with what grace, and whether it was forced
    at once because :meth:`FakeRunner.kill_all` had been called."""

    launch: Launch
    grace: float
    forced: bool


class FakeRunner:
    """A :class:`~stepline.runners._base.Runner` whose processes are a handler's answers.

    It records what happened, for tests to assert on: ``launches`` (every start, in order, a
    refused start included), ``stops``, and ``live`` (processes started and not yet closed).
    ``stop_takes`` is how long a stop takes, in trio time, at most the grace: a process that
    ignores its SIGTERM takes the whole grace (``math.inf``), a polite one 0 (the default).
    """

    def __init__(self, handler: Handler = _cat, *, stop_takes: float = 0.0) -> None:
        self._handler = handler
        self.stop_takes = stop_takes
        self.launches: list[Launch] = []
        self.stops: list[Stop] = []
        self.live: list[FakeProcess] = []
        self.killing = False

    def start(self, launch: Launch) -> FakeProcess:
        self.launches.append(launch)
        feed = None if launch.output is None else _Feed(launch.output)
        # ProcessStartError propagates: nothing started
        answer = self._handler(launch if feed is None else attrs.evolve(launch, output=feed))
        process = FakeProcess(self, launch, answer, feed)
        self.live.append(process)
        if self.killing:
            process.kill()  # as a local group started after a hard stop is SIGKILLed
        return process

    def kill_all(self) -> None:
        """Hard stop: every live process ends as if SIGKILLed (a pending wait returns -9, a stop
        waiting out its grace returns), and so does every process started later."""
        self.killing = True
        for process in list(self.live):
            process.kill()

    # -- for FakeProcess ---------------------------------------------------------------------

    def closed(self, process: FakeProcess) -> None:
        if process in self.live:
            self.live.remove(process)


class FakeProcess:
    """One scripted process; see :class:`FakeRunner`."""

    def __init__(
        self, runner: FakeRunner, launch: Launch, answer: Any, feed: _Feed | None = None
    ) -> None:
        self._runner = runner
        self.launch = launch
        self._answer = answer
        self._feed = feed
        self.killed = trio.Event()  # kill_all, or a stop's SIGKILL
        self._waiting = trio.CancelScope()  # around the pending wait: a kill cancels it
        self.closed = False

    def hurry(self) -> None:
        """A forced cancel during a stop: the grace ends, the process is killed."""
        self.kill()

    def kill(self) -> None:
        """As SIGKILL: a pending wait returns -9 at once, a stop's grace ends."""
        self.killed.set()
        self._waiting.cancel()

    async def wait(self) -> ProcessResult:
        result = await self._result()
        feed = self._feed
        if feed is not None:
            launch = attrs.evolve(self.launch, output=feed)
            written = feed.written  # the handler wrote its output itself: not again
            streams: tuple[tuple[StreamName, str], ...] = (
                ("stdout", result.stdout),
                ("stderr", result.stderr),
            )
            for stream, text in streams:
                if not written:  # as a real capture would have read it, stdout first
                    await write(launch, stream, text)
                feed.eof(stream)
        return result

    async def _result(self) -> ProcessResult:
        answer = self._answer
        if self.killed.is_set() or not inspect.isawaitable(answer):
            await trio.lowlevel.checkpoint()
            if self.killed.is_set():  # killed on arrival (started after kill_all)
                return ProcessResult(-9, "", "", False)
            return _capped(answer, self.launch.output_cap)
        with self._waiting:
            return _capped(await answer, self.launch.output_cap)
        return ProcessResult(-9, "", "", False)  # killed before the handler answered

    async def stop(self, grace: float) -> None:
        runner = self._runner
        forced = runner.killing
        runner.stops.append(Stop(self.launch, grace, forced))
        if not forced:
            with trio.move_on_after(min(grace, runner.stop_takes)):
                await self.killed.wait()  # a kill_all meanwhile ends the grace at once
        self.kill()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if inspect.iscoroutine(self._answer):
            self._answer.close()  # never awaited (stopped before its wait): no warning
        self.closed = True
        self._runner.closed(self)


def _capped(result: ProcessResult, cap: int) -> ProcessResult:
    """The result as a real capture would have kept it: at most ``cap`` bytes per stream."""
    out, out_cut = _cut(result.stdout, cap)
    err, err_cut = _cut(result.stderr, cap)
    truncated = result.truncated or out_cut or err_cut
    return ProcessResult(result.returncode, out, err, truncated, 0)


def _cut(text: str, cap: int) -> tuple[str, bool]:
    data = text.encode("utf-8")
    if len(data) <= cap:
        return text, False
    return data[:cap].decode("utf-8", errors="replace"), True
