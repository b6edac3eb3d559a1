"""Starting a child: pipes, a new session, the program found on PATH, and a pidfd to wait on.

The child never inherits our fd 0 or fd 1 (stepline's stdout is the protocol stream): stdin is a
pipe carrying the given text, or ``/dev/null``; stdout and stderr are pipes. Every child leads
its own process group (``start_new_session=True``), so a stop can signal all it started.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Final

import attrs
import trio

from . import _forkexec
from ._base import ProcessStartError
from ._capture import ReadEnd

try:  # built from _briefc.c at install where a C compiler is at hand (hatch_build.py)
    from . import _briefc
except ImportError:
    _briefc = None  # type: ignore[assignment]

__all__ = [
    "BRIEF_IN_C",
    "Child",
    "brief_child",
    "brief_start",
    "devnull",
    "forget_program",
    "spawn",
]

BRIEF_IN_C: Final = (
    _briefc is not None
    and _briefc.API == 4
    and _forkexec.AVAILABLE
    and not os.environ.get("STEPLINE_NO_C")
)
"""Whether the C start (:mod:`._pool`) is built here, matches this source (``API``), and is
not turned off (``STEPLINE_NO_C=1``: every start the Python way)."""


class Child:
    """A started child: its pid, a pidfd to wait on, and our ends of its pipes.

    Waiting uses a Linux pidfd (``pidfd_open``, Linux 5.3): it turns readable when the child
    exits, while the unreaped zombie keeps its pid, and so its process group id, reserved. Where
    there is none we poll ``waitpid`` with a backoff up to 50 ms, which reaps as it goes. A child
    started by ``Popen`` (where :mod:`._forkexec` is not available) is reaped through its
    ``Popen``, which would otherwise reap it behind our back later.
    """

    __slots__ = ("_pidfd", "_popen", "pid", "returncode", "stderr", "stdin", "stdout")

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None, pipes: _Pipes) -> None:
        self._popen = popen
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = None if pipes.stdin is None else trio.lowlevel.FdStream(pipes.stdin)
        self.stdout = ReadEnd(pipes.stdout)
        self.stderr = ReadEnd(pipes.stderr)
        self._pidfd: int | None = None  # opened on the first wait: most children are gone by then

    def poll(self) -> int | None:
        """Reap the child if it has exited: its exit status (negative: the signal that ended
        it), or None while it runs. As ``Popen.poll``, a child reaped elsewhere counts as 0."""
        if self._popen is not None:
            return self._popen.poll()
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def pidfd(self) -> int | None:
        """The child's pidfd, opened now if need be; None where there is none. Safe while the
        child is unreaped (we alone reap it): then the pid is still this child's."""
        if self._pidfd is None:
            self._pidfd = _open_pidfd(self.pid)
        return self._pidfd

    async def wait_exited(self) -> None:
        """Until the child has exited; not reaped where a pidfd exists (see the class doc)."""
        pidfd = self.pidfd()
        if pidfd is not None:
            await trio.lowlevel.wait_readable(pidfd)
            return
        delay = 0.001
        while self.poll() is None:
            await trio.sleep(delay)
            delay = min(2 * delay, 0.05)

    async def wait(self) -> int:
        """Reap the child and return its exit status (negative: the signal that ended it)."""
        while (returncode := self.poll()) is None:
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


def spawn(
    argv: Sequence[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    *,
    piped_stdin: bool,
    launcher: Sequence[str] = (),
) -> Child:
    """Start the child in a new session with piped output; returns once it has exec'd.

    A ``launcher`` (``prlimit ... --``, :mod:`._rlimits`) is put before the program, found
    first, so a program that is missing is still reported here, as any other.

    Synchronous and free of trio calls, so that it can run on a spawner thread
    (:class:`~stepline.runners._local.LocalProcess`): ``Popen`` forks with ``vfork`` and returns
    only once the child has exec'd, a few hundred microseconds for a small program and longer
    for a big one, which on the event loop held every other job's events (NOTES.md,
    Performance).
    """
    if not argv:
        raise ProcessStartError("empty command: nothing to run")
    try:
        pipes = _Pipes.open(piped_stdin)
    except OSError as exc:
        raise ProcessStartError(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
    _ENVIRONMENT.refresh()
    path = env.get("PATH") if env is not None else None
    if path is None:
        path = _ENVIRONMENT.path
    if launcher:
        argv = _launched(argv, launcher, path, cwd)
    try:
        pid, popen = _start(argv, pipes, env, cwd, path)
    except (OSError, ValueError) as exc:
        pipes.close_all()
        raise ProcessStartError(_start_error_message(exc, argv[0], cwd)) from exc
    pipes.close_child_ends()
    return Child(pid, popen, pipes)


def brief_start(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: str | None
) -> tuple[tuple[bytes, ...], list[bytes] | None] | None:
    """What the C start (:mod:`._pool`) takes beside ``argv`` and ``cwd``: the program's paths
    to try and the child's whole environment (None: ours); the audit event ``Popen`` raises,
    raised. Why C: on a spawner thread each system call gives up the GIL and waits to take it
    back from the event loop, about nine of them a ``{"run": ["true"]}`` step, and the thread
    takes it again to take the request and hand the result back (NOTES.md, Performance,
    "Session 11"). None: the C start cannot make this one (not built, a start here may not be
    a ``vfork``, whose failures it tells in shared memory; the program not in
    :data:`_PROGRAMS`; a name with ``=`` in ``env``): the Python start makes it, and says what
    is wrong."""
    if not (BRIEF_IN_C and argv and _forkexec.vfork_holds()):
        return None
    _ENVIRONMENT.refresh()
    path = env.get("PATH") if env is not None else None
    found = _PROGRAMS.candidates(argv[0], _ENVIRONMENT.path if path is None else path)
    if found is None:
        return None
    try:
        env_list = None if env is None else _ENVIRONMENT.entries(env)
    except ValueError:  # a name with "="
        return None
    sys.audit("subprocess.Popen", found[0], argv, cwd, env_list)
    return found[1], env_list


def brief_child(pid: int, stdout: int, stderr: int) -> Child:
    """The :class:`Child` of a C start: no stdin pipe; its output pipes (-1: closed, as after
    a silent end)."""
    return Child(pid, None, _Pipes(None, stdout, stderr, []))


def forget_program(program: str) -> None:
    """A start from the remembered path failed: search ``PATH`` again next time."""
    _PROGRAMS.forget(program)


def _launched(
    argv: Sequence[str], launcher: Sequence[str], path: str, cwd: str | None
) -> Sequence[str]:
    """``argv`` behind ``launcher`` with its program's full path; ``argv`` itself when the
    program is not found here (its start then fails as usual, or, for a search the child's cwd
    decides, the rlimits come right after the start)."""
    found = _program_path(argv[0], path, cwd)
    return argv if found is None else [*launcher, found, *argv[1:]]


def _program_path(program: str, path: str, cwd: str | None) -> str | None:
    if "/" in program:
        full = os.path.join(cwd or os.getcwd(), program)
        return full if os.access(full, os.X_OK) else None
    if not all(os.path.isabs(d) for d in path.split(os.pathsep)):
        return None  # a relative PATH entry means the child's cwd
    return shutil.which(program, path=path)


def _child_environ(env: Mapping[str, str]) -> dict[bytes, bytes]:
    """stepline's environment with ``env`` over it, encoded as the child gets it.

    Copying ``os.environ`` decodes every variable and ``Popen`` encodes them all again: about a
    tenth of a ``{"run": ["true"]}`` step's CPU, paid by every step since each carries its tree's
    marker (NOTES.md, Containment). CPython keeps the encoded environment, always current, in
    ``os.environ._data``: copying that is a plain dict copy, and ``Popen`` passes bytes through.
    """
    base = _encoded_environ()
    return {**base, **{os.fsencode(k): os.fsencode(v) for k, v in env.items()}}


def _start(
    argv: Sequence[str],
    pipes: _Pipes,
    env: Mapping[str, str] | None,
    cwd: str | None,
    path: str,
) -> tuple[int, subprocess.Popen[bytes] | None]:
    """Start the child with the program found on ``path`` through :data:`_PROGRAMS` (once more
    without, if the remembered path fails: the program may have moved); by
    :func:`._forkexec.fork_exec` where it is available, else by ``Popen`` (which is returned
    too: it reaps the child). ``env``: the step's variables over stepline's own (None: none),
    :data:`_ENVIRONMENT` refreshed by the caller."""
    program = argv[0]
    stdin = devnull() if pipes.stdin is None else pipes.child_ends[2]
    fds = (stdin, pipes.child_ends[0], pipes.child_ends[1])
    if not _forkexec.AVAILABLE:
        return _popen(argv, _PROGRAMS.find(program, path), env, cwd, fds)
    env_list = None if env is None else _ENVIRONMENT.entries(env)
    found = _PROGRAMS.candidates(program, path)
    if found is not None:
        try:
            return _forkexec.fork_exec(argv, found[0], found[1], cwd, env_list, fds), None
        except OSError:
            _PROGRAMS.forget(program)
    candidates = _forkexec.candidates(program, path)
    return _forkexec.fork_exec(argv, program, candidates, cwd, env_list, fds), None


def _popen(
    argv: Sequence[str],
    executable: str | None,
    env: Mapping[str, str] | None,
    cwd: str | None,
    fds: tuple[int, int, int],
) -> tuple[int, subprocess.Popen[bytes] | None]:
    """The start where :mod:`._forkexec` is not available: ``Popen`` (once more searching
    ``PATH`` itself if the remembered path fails)."""
    while True:
        try:
            popen = subprocess.Popen(
                list(argv),
                executable=executable,
                stdin=fds[0],
                stdout=fds[1],
                stderr=fds[2],
                env=None if env is None else _child_environ(env),
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError:
            if executable is None:
                raise
            _PROGRAMS.forget(argv[0])
            executable = None
        else:
            return popen.pid, popen


class _Environment:
    """stepline's environment as ``execve`` takes it (``b"NAME=value"``), and its ``PATH``,
    built once and again only when it changed.

    Encoding every variable for every start was a fifth of a spawner thread's work per
    ``{"run": ["true"]}`` step (NOTES.md, Performance). Each start calls :meth:`refresh`, which
    checks the environment is still the one the entries were built from with one dict
    comparison (C, about a microsecond), so a program embedding stepline that changes
    ``os.environ`` is seen at the next start.
    """

    _LIMIT = 16  # sets of overridden names kept; then it starts over

    def __init__(self) -> None:
        self._snapshot: dict[bytes, bytes] | None = None
        self._kept: dict[frozenset[str], list[bytes]] = {}
        self.path = os.defpath
        """stepline's ``PATH`` (``os.defpath`` without one), as of the last :meth:`refresh`."""

    def refresh(self) -> None:
        """Catch up with ``os.environ`` if it changed since the last start."""
        base = _encoded_environ()
        if base != self._snapshot:
            self._snapshot, self._kept = dict(base), {}
            path = base.get(b"PATH")
            self.path = os.defpath if path is None else os.fsdecode(path)

    def entries(self, env: Mapping[str, str]) -> list[bytes]:
        """stepline's environment (as of the last :meth:`refresh`) with ``env`` over it; a name
        with ``=`` is refused, as ``Popen`` refuses it.

        Why not ``os.fsencode`` name and value apart: two Python calls each, paid per start on
        the spawner thread; ``str.encode`` of ``NAME=value`` with the file-system codec gives
        the same bytes (UTF-8 and ``surrogateescape`` encode character by character)."""
        names = frozenset(env)
        kept = self._kept.get(names)
        if kept is None:
            if any("=" in name for name in names):
                raise ValueError("illegal environment variable name")
            assert self._snapshot is not None
            if len(self._kept) >= self._LIMIT:
                self._kept.clear()
            over = {os.fsencode(name) for name in names}
            kept = [k + b"=" + v for k, v in self._snapshot.items() if k not in over]
            self._kept[names] = kept
        entries = kept.copy()
        for name, value in env.items():
            entries.append(f"{name}={value}".encode(_FS_ENCODING, _FS_ERRORS))
        return entries


_ENVIRONMENT = _Environment()
_FS_ENCODING: Final = sys.getfilesystemencoding()
_FS_ERRORS: Final = sys.getfilesystemencodeerrors()


def _encoded_environ() -> Mapping[bytes, bytes]:
    """The environment, encoded: CPython's own store (see :func:`_child_environ`), else a copy."""
    encoded = getattr(os.environ, "_data", None)
    return encoded if isinstance(encoded, dict) else dict(os.environb)


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
        # (program, PATH) -> the program's path, and that path encoded for fork_exec (encoding
        # it is two Python calls per start)
        self._found: dict[tuple[str, str], tuple[str, tuple[bytes]]] = {}

    def find(self, program: str, path: str) -> str | None:
        """The program's path on ``path`` (a PATH value), or None to let ``Popen`` search (or
        report it missing)."""
        found = self.candidates(program, path)
        return None if found is None else found[0]

    def candidates(self, program: str, path: str) -> tuple[str, tuple[bytes]] | None:
        """:meth:`find`'s answer with its encoding, as :func:`._forkexec.fork_exec` takes it
        (what to name in an error, the paths to try); None: not found here."""
        found = self._found.get((program, path))
        if found is None:
            if "/" in program or not all(os.path.isabs(d) for d in path.split(os.pathsep)):
                return None
            executable = shutil.which(program, path=path)
            if executable is None:
                return None
            if len(self._found) >= self._LIMIT:
                self._found.clear()
            found = self._found[program, path] = executable, (os.fsencode(executable),)
        return found

    def forget(self, program: str) -> None:
        for key in [key for key in self._found if key[0] == program]:
            del self._found[key]


_PROGRAMS = _ProgramPaths()


@functools.cache
def devnull() -> int:
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
