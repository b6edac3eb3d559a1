"""The lifecycle of one child process: start, feed, capture, wait, and stop it properly.

This module knows nothing about jobs or steps; the ``run`` step interpreter builds on it.

Why not :func:`trio.run_process`? Its default stop signals only the direct child and then waits
five seconds, which leaves grandchildren orphaned (``sh -c 'sleep 31; true'`` left a ``sleep``
behind, trio issue #3237), and it buffers output without a bound. Here:

* Every child leads its own process group (``start_new_session=True``), and a stop signals the
  whole group: SIGTERM, up to ``grace`` seconds for the leader to exit, then SIGKILL. Once the
  leader has exited the group is SIGKILLed once more, so stray grandchildren go too. The stop runs
  in a shielded cancel scope, so it completes although we are being cancelled, and the
  ``Cancelled`` then propagates untouched.
* The child never inherits our fd 0 or fd 1 (stepline's stdout is the protocol stream): stdin is a
  pipe carrying the given text, or ``/dev/null``; stdout and stderr are pipes.
* At most ``output_cap`` bytes (:data:`OUTPUT_CAP`, 1 MiB) of each of stdout and stderr are kept.
  The rest is read and thrown away, so a chatty child never blocks on a full pipe and memory stays
  bounded; ``truncated`` says it happened. A cut may split a UTF-8 sequence: the partial character
  at the end then decodes as U+FFFD.
* Like :func:`subprocess.run`, capture lasts until EOF on both pipes: a grandchild that keeps
  them open (``sh -c 'sleep 3 & echo hi'``) makes us wait for it. That is accepted; it is what a
  shell user expects, and a step ``timeout`` bounds it.
* A normal exit does not kill the group: a grandchild that closed its copies of the pipes and
  outlived its parent is left alone, as a shell would. Only a stop (cancellation, error) reaps.
  A grandchild that starts its own session (``setsid``) leaves the group and is out of reach.
* A :class:`ProcessGroups` registry holds the live groups so that a hard stop (a second SIGINT)
  can SIGKILL them all at once, whatever their grace.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence

import attrs
import trio

__all__ = [
    "OUTPUT_CAP",
    "ProcessGroups",
    "ProcessResult",
    "ProcessStartError",
    "run_process",
]

OUTPUT_CAP = 1 << 20
"""Bytes kept per stream: 1 MiB of stdout and 1 MiB of stderr; the rest is drained and dropped."""

_CHUNK = 1 << 16


@attrs.frozen
class ProcessResult:
    """How a child ended and what it wrote.

    ``returncode`` is negative when a signal ended the child (-15 SIGTERM, -9 SIGKILL); note a
    shell reports its own child's signal death as 128+N instead. ``stdout``/``stderr`` are
    decoded as UTF-8 with invalid bytes replaced. ``truncated`` is True when either stream
    exceeded the cap and was cut. ``pid`` was the child's, and is its process group's id.
    """

    returncode: int
    stdout: str
    stderr: str
    truncated: bool
    pid: int = attrs.field(default=0, eq=False)  # identifies, not part of the result's value


class ProcessStartError(Exception):
    """The child could not be started: no such program, not executable, bad cwd, bad argv.

    The message is meant for humans and names the program or the cwd at fault.
    """


class ProcessGroups:
    """Registry of live child process groups, so a hard stop can SIGKILL them all at once.

    :func:`run_process` adds a group when its child starts and removes it once the child is
    reaped. After :meth:`kill_all` the registry stays "killing": a group added later (a child
    that was starting at that very moment) is SIGKILLed on arrival, and stops skip the grace.
    """

    def __init__(self) -> None:
        self._pgids: set[int] = set()
        self.killing = False

    def add(self, pgid: int) -> None:
        """Register a live group; SIGKILL it at once if :meth:`kill_all` was already called."""
        self._pgids.add(pgid)
        if self.killing:
            _killpg(pgid, signal.SIGKILL)

    def discard(self, pgid: int) -> None:
        """Forget a group (its leader was reaped); unknown ids are ignored."""
        self._pgids.discard(pgid)

    def kill_all(self) -> None:
        """SIGKILL every registered group now.

        Synchronous, so a signal handler task can call it without awaiting. A run_process that
        is waiting out its grace then finishes promptly: its child dies, so its wait returns.
        """
        self.killing = True
        for pgid in list(self._pgids):
            _killpg(pgid, signal.SIGKILL)

    def __len__(self) -> int:
        return len(self._pgids)

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._pgids))


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdin: str | None = None,
    grace: float = 5.0,
    groups: ProcessGroups | None = None,
    output_cap: int = OUTPUT_CAP,
) -> ProcessResult:
    """Run ``argv`` to completion and capture its output (rules: see the module docstring).

    ``env`` is merged over ``os.environ``. On cancellation the child's process group is stopped
    (SIGTERM, ``grace`` s, SIGKILL) before ``Cancelled`` propagates. Raises ProcessStartError.
    """
    child = _spawn(argv, env, cwd, piped_stdin=stdin is not None)
    if groups is not None:
        groups.add(child.pid)  # start_new_session=True: the group id is the leader's pid
    try:
        out, err = await _communicate(child, stdin, output_cap)
        returncode = await child.wait()
    except BaseException:  # cancellation above all: stop the group, then let it propagate
        with trio.CancelScope(shield=True):
            await _stop_group(child, grace, groups)
        raise
    finally:
        child.close()
        if groups is not None:
            groups.discard(child.pid)
    truncated = out.truncated or err.truncated
    return ProcessResult(returncode, out.text(), err.text(), truncated, child.pid)


class _Child:
    """A started child: the Popen that reaps it, a pidfd to wait on, and our ends of its pipes.

    Waiting uses a Linux pidfd (``pidfd_open``, Linux 5.3): it turns readable when the child
    exits, while the unreaped zombie keeps its pid, and so its process group id, reserved. Where
    there is none we poll ``waitpid`` with a backoff up to 50 ms, which reaps as it goes.
    """

    __slots__ = ("_pidfd", "_popen", "pid", "stderr", "stdin", "stdout")

    def __init__(self, popen: subprocess.Popen[bytes], pipes: _Pipes) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = None if pipes.stdin is None else trio.lowlevel.FdStream(pipes.stdin)
        self.stdout = _ReadEnd(pipes.stdout)
        self.stderr = _ReadEnd(pipes.stderr)
        self._pidfd: int | None = None  # opened on the first wait: most children are gone by then

    async def wait_exited(self) -> None:
        """Until the child has exited; not reaped where a pidfd exists (see the class doc)."""
        if self._pidfd is None:
            self._pidfd = _open_pidfd(self.pid)  # safe while unreaped: we alone reap it
        if self._pidfd is not None:
            await trio.lowlevel.wait_readable(self._pidfd)
            return
        delay = 0.001
        while self._popen.poll() is None:
            await trio.sleep(delay)
            delay = min(2 * delay, 0.05)

    async def wait(self) -> int:
        """Reap the child and return its exit status (negative: the signal that ended it)."""
        while (returncode := self._popen.poll()) is None:
            await self.wait_exited()
        return returncode

    def close(self) -> None:
        """Release the pidfd and any pipe a cancelled capture left open. Idempotent."""
        if self._pidfd is not None:
            os.close(self._pidfd)  # nothing waits on it any more: our waits are over
            self._pidfd = None
        if self.stdin is not None and self.stdin.fileno() >= 0:
            self.stdin.close()
        self.stdout.close()
        self.stderr.close()


class _ReadEnd:
    """Our end of a child's stdout or stderr pipe (non-blocking), read until EOF.

    Not trio's ``FdStream``: :func:`_drain_outputs` reads both pipes of a child as epoll reports
    them ready, so it needs a read that never waits; and without the stream object and its
    conflict detector a ``true`` job costs less (NOTES.md, Performance).
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd

    def read_ready(self) -> bytes | None:
        """The next chunk (at most 64 KiB) without waiting; b"" at EOF, None if none is there."""
        try:
            return os.read(self.fd, _CHUNK)
        except BlockingIOError:
            return None

    async def read(self) -> bytes:
        """The next chunk, waiting for it if need be; b"" at EOF. Always a checkpoint: the wait,
        or one of its own when the chunk was there already."""
        chunk = self.read_ready()
        if chunk is not None:
            await trio.lowlevel.checkpoint()  # others run, and a cancel lands, between chunks
            return chunk
        while chunk is None:
            await trio.lowlevel.wait_readable(self.fd)  # a checkpoint too
            chunk = self.read_ready()
        return chunk

    def close(self) -> None:
        """Close the pipe; idempotent. Only its one reader ever waits on it, and not now."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or a kernel before 5.3
        return None


@attrs.define
class _Pipes:
    """The pipes for one child: our ends (``stdin`` write, ``stdout``/``stderr`` read) and the
    child's ends, which are closed in the parent once the child holds them. All close-on-exec:
    the child gets its ends as fds 0-2 through ``dup2``, which clears the flag on the copy."""

    stdin: int | None
    stdout: int
    stderr: int
    child_ends: list[int]

    @classmethod
    def open(cls, piped_stdin: bool) -> _Pipes:
        """Three pipes (two without stdin); none is left open if one cannot be made."""
        fds: list[int] = []
        try:
            for _ in range(3 if piped_stdin else 2):
                fds.extend(os.pipe())
        except OSError:  # out of descriptors
            for fd in fds:
                os.close(fd)
            raise
        stdin, child_ends = (fds[5], [fds[1], fds[3], fds[4]]) if piped_stdin else (None, fds[1::2])
        return cls(stdin, fds[0], fds[2], child_ends)

    def close_child_ends(self) -> None:
        for fd in self.child_ends:
            os.close(fd)
        self.child_ends = []

    def close_all(self) -> None:
        self.close_child_ends()
        for fd in (self.stdin, self.stdout, self.stderr):
            if fd is not None:
                os.close(fd)


def _spawn(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None, *, piped_stdin: bool
) -> _Child:
    """Start the child in a new session with piped output, on the event loop, synchronously.

    Why not in a worker thread, as :func:`trio.lowlevel.open_process` does? The thread hops
    (and the GIL traffic they bring) doubled our CPU per process and cut throughput by a third
    (NOTES.md, Performance). ``Popen`` forks with
    ``vfork`` and returns once the child has exec'd, a few hundred microseconds for a small
    program: that is how long the loop is held, the same serial spawn ``xargs`` does. Being
    synchronous also means there is no moment at which a started child is not yet ours to stop.
    """
    if not argv:
        raise ProcessStartError("empty command: nothing to run")
    try:
        pipes = _Pipes.open(piped_stdin)
    except OSError as exc:
        raise ProcessStartError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    full_env = None if env is None else {**os.environ, **env}
    try:
        popen = _popen(argv, pipes, full_env, cwd)
    except (OSError, ValueError) as exc:
        pipes.close_all()
        raise ProcessStartError(_start_error_message(exc, argv[0], cwd)) from exc
    pipes.close_child_ends()
    return _Child(popen, pipes)


def _popen(
    argv: Sequence[str], pipes: _Pipes, env: Mapping[str, str] | None, cwd: str | None
) -> subprocess.Popen[bytes]:
    """``Popen`` with the program found through :data:`_PROGRAMS` (once more without, if the
    remembered path fails: the program may have moved)."""
    executable = _PROGRAMS.find(argv[0], env)
    stdin = _devnull() if pipes.stdin is None else pipes.child_ends[2]
    while True:
        try:
            return subprocess.Popen(
                list(argv),
                executable=executable,
                stdin=stdin,
                stdout=pipes.child_ends[0],
                stderr=pipes.child_ends[1],
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            if executable is None:
                raise
            _PROGRAMS.forget(argv[0])
            executable = None


class _ProgramPaths:
    """Where programs were found on PATH, as a shell's command hash remembers them.

    ``Popen`` given a bare name joins and encodes every PATH entry on every start, on the event
    loop: a tenth of a ``{"run": ["true"]}`` job's time there. Like a shell's hash, a program
    installed later in an earlier PATH directory is not seen; one that is gone is searched for
    again (:func:`_popen`). Only PATHs of absolute directories are remembered: a relative entry
    means the child's cwd, which differs per job.
    """

    _LIMIT = 256  # distinct (program, PATH) pairs kept; then it starts over

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], str] = {}

    def find(self, program: str, env: Mapping[str, str] | None) -> str | None:
        """The program's path, or None to let ``Popen`` search (or report it missing)."""
        if "/" in program:
            return None
        path = (os.environ if env is None else env).get("PATH", os.defpath)
        found = self._found.get((program, path))
        if found is None:
            if not all(os.path.isabs(d) for d in path.split(os.pathsep)):
                return None
            found = shutil.which(program, path=path)
            if found is None:
                return None
            if len(self._found) >= self._LIMIT:
                self._found.clear()
            self._found[program, path] = found
        return found

    def forget(self, program: str) -> None:
        for key in [key for key in self._found if key[0] == program]:
            del self._found[key]


_PROGRAMS = _ProgramPaths()


@functools.cache
def _devnull() -> int:
    """One ``/dev/null`` for every child's stdin (``subprocess.DEVNULL`` opens one per start)."""
    return os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)


def _start_error_message(exc: OSError | ValueError, program: str, cwd: str | None) -> str:
    """A human message for a failed start. ``subprocess`` sets ``filename`` to the culprit."""
    if isinstance(exc, ValueError):  # e.g. an embedded NUL byte in argv, env or cwd
        return f"cannot start {program!r}: {exc}"
    if cwd is not None and exc.filename == cwd:
        if isinstance(exc, FileNotFoundError):
            return f"cwd does not exist: {cwd!r}"
        if isinstance(exc, NotADirectoryError):
            return f"cwd is not a directory: {cwd!r}"
        return f"cannot enter cwd {cwd!r}: {exc.strerror}"
    if isinstance(exc, FileNotFoundError):
        return f"no such program: {program!r}"
    if isinstance(exc, PermissionError):
        return f"not executable: {program!r} (permission denied)"
    return f"cannot start {program!r}: {exc.strerror or exc}"


@attrs.define
class _Capture:
    """One output stream, bounded: keeps the first ``cap`` bytes and drops the rest."""

    cap: int
    data: bytearray = attrs.field(factory=bytearray)
    truncated: bool = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.data += chunk

    async def drain(self, pipe: _ReadEnd) -> None:
        """Read to EOF. Discarding beyond the cap keeps the child from blocking on a full pipe."""
        try:
            while chunk := await pipe.read():
                self.add(chunk)
        finally:
            pipe.close()

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _communicate(child: _Child, stdin: str | None, cap: int) -> tuple[_Capture, _Capture]:
    """Feed stdin and drain stdout and stderr concurrently, so no pipe can fill up and deadlock.

    The calling task drains both outputs (:func:`_drain_outputs`); only feeding stdin, which
    few steps do, takes a task of its own.
    """
    out, err = _Capture(cap), _Capture(cap)
    if child.stdin is None or stdin is None:
        await _drain_outputs(child, out, err)
        return out, err
    async with _open_nursery() as nursery:
        nursery.start_soon(_feed, child.stdin, stdin.encode("utf-8"))
        await _drain_outputs(child, out, err)
    return out, err


# Linux; elsewhere a second task drains stderr
_EPOLL: Callable[[int], select.epoll] | None = getattr(select, "epoll", None)


async def _drain_outputs(child: _Child, out: _Capture, err: _Capture) -> None:
    """Read stdout and stderr to EOF, both at once, in this one task where Linux allows.

    Both must be read concurrently: a child blocked on a full stderr pipe never closes stdout.
    A second task for stderr (a nursery per process) was a quarter of a ``{"run": ["true"]}``
    job's cost (NOTES.md, Performance). So both pipes go into a private epoll instead, the way
    :meth:`subprocess.Popen.communicate` selects over both in one thread, and trio waits on that
    epoll's one fd like on any other. Each wait is a checkpoint, so a child that never stops
    writing still lets others run and a cancel land.
    """
    poller = _open_poller()
    if poller is None:
        await _drain_in_two_tasks(child, out, err)
        return
    pending = {child.stdout.fd: (child.stdout, out), child.stderr.fd: (child.stderr, err)}
    with poller:
        for fd in pending:
            poller.register(fd, select.EPOLLIN)
        while pending:
            await trio.lowlevel.wait_readable(poller.fileno())
            for fd, _events in poller.poll(0):
                pipe, capture = pending[fd]
                chunk = pipe.read_ready()
                if chunk:
                    capture.add(chunk)
                elif chunk is not None:  # EOF: every writer (the child, its children) closed
                    poller.unregister(fd)
                    pipe.close()
                    del pending[fd]


def _open_poller() -> select.epoll | None:
    """A private epoll for one child's pipes; None where there is no epoll (not Linux) or no
    descriptor left for one: then the second task does it, which needs none."""
    if _EPOLL is None:
        return None
    try:
        return _EPOLL(2)
    except OSError:
        return None


async def _drain_in_two_tasks(child: _Child, out: _Capture, err: _Capture) -> None:
    async with _open_nursery() as nursery:
        nursery.start_soon(err.drain, child.stderr)
        await out.drain(child.stdout)


@contextlib.asynccontextmanager
async def _open_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery whose group of nothing but ``Cancelled`` comes out as one bare ``Cancelled``.

    A cancelled nursery wraps its tasks' ``Cancelled`` in a group; callers of run_process should
    see a plain cancellation, as from any other checkpoint, so ``except trio.Cancelled`` works.
    """
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        _raise_if_only_cancelled(group)
        raise


def _raise_if_only_cancelled(group: BaseExceptionGroup[BaseException]) -> None:
    cancelled, rest = group.split(trio.Cancelled)
    if cancelled is None or rest is not None:
        return
    leaf: BaseException = cancelled
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    raise leaf from None


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    """Write the stdin text, then close the pipe so the child sees EOF.

    A child that exits or closes its stdin without reading makes the write fail with a broken
    pipe; that is the child's business, not an error of ours, so it is swallowed.
    """
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)


async def _stop_group(child: _Child, grace: float, groups: ProcessGroups | None) -> None:
    """Stop the child's whole process group: SIGTERM, up to ``grace`` s, SIGKILL, reap.

    Called inside a shielded scope. The SIGKILL goes to the group whether or not the leader
    exited within its grace: it ends a leader that ignored SIGTERM and also stray grandchildren
    that outlived it. It is sent while the leader is still unreaped (a zombie at worst), so the
    group id cannot have been reused by an unrelated process meanwhile. A group member cannot
    fork past a pending group SIGKILL, so no new stray escapes it.
    """
    if groups is None or not groups.killing:
        _killpg(child.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await child.wait_exited()
    _killpg(child.pid, signal.SIGKILL)
    await child.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    """Signal a process group; a group that is already gone is not an error."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
