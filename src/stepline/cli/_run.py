"""``stepline run FILE...``: run job files in-process and report, for humans and for scripts.

Every job of every file is read and validated before anything runs (:mod:`._jobfiles`): a typo
in the tenth file must not surface after the first nine have deployed something. Then all jobs
are submitted to one in-process executor (:func:`stepline.open_executor`, ``--workers`` at a
time) and a :class:`Session` follows them through their events into a view
(:mod:`stepline.cli._progress`).

It stops the way ``stepline serve`` does. The first SIGINT or SIGTERM cancels every job — their
processes get SIGTERM, then SIGKILL after their grace, their workspaces are removed — while the
display goes on and says what is happening; a second signal SIGKILLs every process at once. The
exit status is then 130 (SIGINT) or 143 (SIGTERM). A reader of stdout that goes away (``| head
-1``) cancels every job the same way, with a one-line note on stderr and exit status 1. With
``--halt`` the first job that does not succeed cancels the others.

Exit status: 0 when every job succeeded, 1 when any did not, 2 when a file could not be read or
holds an invalid job (nothing was run), 128+N after signal N.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from attrs import frozen

from .._errors import ShuttingDown
from ..client._api import open_executor
from ..engine._executor import Executor
from ..engine._jobs import JobState
from ..server._serve import HARD_STOP_FLUSH
from ..store._model import StoreError
from ._jobfiles import BadFile, Entry, load_entries, load_templates, parse_params
from ._progress import JsonView, LiveView, PlainView, View
from ._quick import QuickView, quick_entries
from ._report import Track
from ._signals import SIGNALS, exit_status, with_late_signals
from ._term import Output, is_tty, use_color, wait_reader_gone

if TYPE_CHECKING:
    from ._state import Batch

__all__ = [
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "Options",
    "Session",
    "main",
    "make_view",
    "with_timeout",
]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


@frozen(kw_only=True)
class Options:
    """How to run the jobs (the flags of ``stepline run``)."""

    workers: int = 4
    params: Mapping[str, Any] | None = None  # --params: submitted with every job
    timeout: float | None = None  # --timeout: bounds every job
    halt: bool = False  # --halt: the first job that does not succeed cancels the others
    artifacts: str = "stepline-artifacts"  # --artifacts: where jobs' artifacts are copied
    state: str | None = None  # --state: the batch resumes from this file (cli/_state.py)


def with_timeout(job: Any, seconds: float) -> Any:
    """``job`` bounded by ``seconds`` (a job-level ``timeout``; its own, if shorter, stays)."""
    if not (isinstance(job, dict) and ("steps" in job or "tasks" in job)):
        return {"steps": [job], "timeout": seconds}  # a bare step: its modifiers stay on it
    own = job.get("timeout")
    if isinstance(own, int | float) and not isinstance(own, bool) and own <= seconds:
        return job
    return {**job, "timeout": seconds}


class Session:
    """One ``stepline run``: submits the jobs, follows them into a view, and stops in order on
    a signal, a closed stdout or (``--halt``) the first failure. :meth:`run` returns the exit
    status."""

    def __init__(
        self,
        entries: Sequence[Entry],
        templates: Mapping[str, Any],
        view: View,
        options: Options,
        *,
        out: Output | None = None,
    ) -> None:
        self.tracks: list[Track] = []
        self._out = out  # watched for a reader that goes away
        self._entries = entries
        self._templates = templates
        self._view = view
        self._options = options
        self._executor: Executor | None = None
        self._status: int | None = None  # decided by a stop: a signal, a closed stdout
        self._stopping = False
        self._signals_seen = 0
        self._outer = trio.CancelScope()

    @property
    def succeeded(self) -> bool:
        return all(t.handle.state is JobState.SUCCEEDED for t in self.tracks)

    async def run(self, *, handle_signals: bool = True) -> int:
        if not handle_signals:
            await self._run_jobs()
            return self._exit_status()
        with trio.open_signal_receiver(*SIGNALS) as signals, self._outer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals)
                if self._out is not None:
                    nursery.start_soon(self._watch_stdout, self._out)
                await self._run_jobs()
                nursery.cancel_scope.cancel()
        return self._exit_status()

    def _exit_status(self) -> int:
        if self._status is not None:
            return self._status
        return EXIT_OK if self.succeeded else EXIT_FAILED

    # -- running -------------------------------------------------------------------------------

    async def _run_jobs(self) -> None:
        async with AsyncExitStack() as stack:
            try:
                ex, batch = await stack.enter_async_context(self._open_executor())
            except StoreError as exc:  # foreign, corrupt, newer, locked: never a silent reset
                _to_stderr(f"--state: {exc}")
                self._status = EXIT_INVALID
                return
            try:
                self._executor = ex.executor
                if self._options.halt:
                    ex.executor.on_finish(self._halt_on_failure)
                for name, template in self._templates.items():
                    await ex.define(name, template)
                await self._submit_all(ex, batch)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._view.animate, self.tracks)
                    async with trio.open_nursery() as followers:
                        for track in self.tracks:
                            followers.start_soon(self._follow, track)
                    nursery.cancel_scope.cancel()
            finally:
                self._view.close(self.tracks)
                self._last_word()

    @asynccontextmanager
    async def _open_executor(self) -> AsyncIterator[tuple[Any, Batch | None]]:
        """The in-process executor, over the ``--state`` file when there is one."""
        options = self._options
        settings: dict[str, Any] = {
            "workers": options.workers,
            "queue_size": max(len(self._entries), 1),  # everything is submitted up front
            "heartbeat": 0,
            "artifacts": options.artifacts,
        }
        if options.state is None:
            async with open_executor(**settings) as ex:
                yield ex, None
            return
        from ._state import open_batch  # start-up time: --state only

        async with open_batch(options.state, self._keys(), **settings) as opened:
            yield opened

    def _keys(self) -> list[str]:
        from ._state import job_key

        extra = {
            "params": self._options.params,
            "timeout": self._options.timeout,
            "templates": self._templates,
        }
        return [job_key(entry, extra) for entry in self._entries]

    async def _submit_all(self, ex: Any, batch: Batch | None) -> None:
        keys = self._keys() if batch is not None else [None] * len(self._entries)
        for entry, key in zip(self._entries, keys, strict=True):
            job = entry.job
            if self._options.timeout is not None:
                job = with_timeout(job, self._options.timeout)
            try:
                if batch is None or key is None:
                    handle = await ex.submit(job, params=self._options.params)
                else:
                    handle = batch.earlier(key) or await batch.submit(
                        key, job, self._options.params
                    )
            except ShuttingDown:
                return  # a signal arrived between two submits: the rest never ran
            self.tracks.append(Track(entry.label, handle, entry.job, self._options.artifacts))

    async def _follow(self, track: Track) -> None:
        async for ev in track.handle.events():
            track.take(ev, trio.current_time())
            self._view.event(track, ev)
            kind = ev.get("event")
            if kind == "started":
                self._view.started(track)
            elif kind == "finished":
                self._view.finished(track)

    def _halt_on_failure(self, job: Any, finished: Mapping[str, Any]) -> None:
        """``--halt``: called inside the job's transition to its final state, so the other jobs
        are cancelled before a worker can take the next one from the queue."""
        if finished.get("state") != "succeeded" and not self._stopping:
            label = next((t.label for t in self.tracks if t.handle.id == job.id), job.id)
            self._cancel_all(f"--halt: {label} {finished.get('state')}")

    # -- stopping --------------------------------------------------------------------------------

    def _unfinished(self) -> int:
        return sum(1 for t in self.tracks if not t.handle.done)

    def _cancel_all(self, why: str, note: Any = None) -> None:
        """Cancel every job once (later stops only escalate or say nothing)."""
        if self._stopping:
            return
        self._stopping = True
        count = self._unfinished()
        noun = "job" if count == 1 else "jobs"
        (note or self._view.note)(f"{why}: cancelling {count} {noun}…")
        if self._executor is not None:
            self._executor.shutdown("cancel")
        else:
            self._outer.cancel()  # nothing submitted yet

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self._signals_seen += 1
            name = signal.Signals(signum).name
            self._status = exit_status(signum)
            if self._signals_seen == 1:
                self._cancel_all(f"{name}", None)
                if self._stopping and self._unfinished():
                    self._view.note(f"({name} again to stop at once)")
            else:
                self._view.note(f"second {name}: killing every process now")
                if self._executor is not None:
                    self._executor.kill()
                self._outer.deadline = trio.current_time() + HARD_STOP_FLUSH

    @staticmethod
    async def _watch_stdout(out: Output) -> None:
        await wait_reader_gone(out.stream)
        out.close_broken()

    def on_broken_stdout(self) -> None:
        """The view's output lost its reader: stop as ``serve`` does, saying so on stderr."""
        if self._status is None:
            self._status = EXIT_FAILED
        self._cancel_all("stdout was closed by its reader", _to_stderr)

    def _last_word(self) -> None:
        if self._signals_seen:
            cancelled = sum(1 for t in self.tracks if t.handle.state is JobState.CANCELLED)
            _to_stderr(f"interrupted; {cancelled} of {len(self.tracks)} jobs were cancelled")


def _to_stderr(text: str) -> None:
    print(f"stepline run: {text}", file=sys.stderr, flush=True)


def make_view(args: Any, out: Output) -> View:
    """``--json``: events; quick mode: tagged output; a terminal: the live view; anything else:
    plain lines."""
    if args.json:
        return JsonView(out)
    if args.quick is not None:
        return QuickView(out, quiet=args.quiet)
    if is_tty(out.stream):
        return LiveView(out, color=use_color(out.stream), verbose=args.verbose, quiet=args.quiet)
    return PlainView(out, verbose=args.verbose, quiet=args.quiet)


def _entries(args: Any, templates: Mapping[str, Any], params: Any) -> list[Entry]:
    if args.quick is not None:
        if args.files:
            raise BadFile("give job files or -- COMMAND..., not both")
        return quick_entries(args.quick, sys.stdin)
    if not args.files:
        raise BadFile("give job files (FILE..., - for stdin) or a command (-- COMMAND...)")
    return load_entries(args.files, templates, params)


def main(args: Any) -> int:
    """The ``run`` subcommand (``args`` from its parser, ``args.quick`` the words after
    ``--``); returns the exit status."""
    try:
        templates = load_templates(args.template)
        params = parse_params(args.params)
        entries = _entries(args, templates, params)
    except BadFile as exc:
        _to_stderr(str(exc))
        return EXIT_INVALID
    out = Output(sys.stdout)
    options = Options(
        workers=args.workers,
        params=params,
        timeout=args.timeout,
        halt=args.halt,
        artifacts=args.artifacts,
        state=args.state,
    )
    session = Session(entries, templates, make_view(args, out), options, out=out)
    out.on_broken = session.on_broken_stdout
    return with_late_signals(lambda: trio.run(session.run))
