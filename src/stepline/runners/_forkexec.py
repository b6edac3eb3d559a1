"""Starting a program the way ``subprocess.Popen`` does, without ``Popen``'s Python around it.

``Popen.__init__`` and ``_execute_child`` are about 130 µs of Python per start on this VM
(argument checks, the environment re-encoded variable by variable, the error-pipe protocol),
more than the ``vfork`` and ``exec`` they wrap (NOTES.md, Performance). Here the same C
function ``Popen`` ends in, ``_posixsubprocess.fork_exec``, is called directly with the same
arguments ``Popen`` gives it for a ``run`` step (close every other fd, new session, signals
restored, vfork), and the child's exec error comes back the same way, through an error pipe.

Which pipe: ``Popen`` makes one per start and reads it to its EOF (the exec closes the child's
end). That is three system calls more per start than reading a pipe the thread keeps, and on a
spawner thread each system call gives up the interpreter lock, which the event loop then often
holds for a while: per ``{"run": ["true"]}`` job the kept pipe saved about a tenth of the
spawners' context switches and 1.04x the wall time (NOTES.md, Performance, "Session 10"). A kept
pipe has no EOF to wait for, so it is read as it is when ``fork_exec`` returns, which holds only
where the start is a ``vfork``: the parent resumes once the child has exec'd (nothing written)
or written its report and exited. Where that is not known (another kernel, a build without
``vfork``, valgrind's ``vfork``, which is a ``fork``), a report could arrive after the read and
be taken for the next start's; so a probe (:func:`_probe_vfork`) decides once per process, and
without its yes every start makes its own pipe, as ``Popen`` does.

``fork_exec`` is CPython's private function; its arguments are the same from 3.11 to 3.13 (the
versions checked). Elsewhere :data:`AVAILABLE` is False and the caller uses ``Popen``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["AVAILABLE", "candidates", "fork_exec", "vfork_holds"]

try:
    import _posixsubprocess
except ImportError:  # not POSIX
    _FORK_EXEC: Any = None
else:
    _FORK_EXEC = getattr(_posixsubprocess, "fork_exec", None)

AVAILABLE: Final = _FORK_EXEC is not None and (3, 11) <= sys.version_info[:2] <= (3, 13)
"""Whether :func:`fork_exec` may be used (a CPython whose ``fork_exec`` arguments are known)."""

_ERROR_LIMIT: Final = 50_000  # what Popen reads of the error pipe at most
_PROBE_PATHS: Final = 500  # the vfork probe's missing paths (_probe_vfork)

_THREAD = threading.local()  # .pipe: this thread's kept error pipe (_kept_pipe)
_KEPT: list[tuple[int, int]] = []  # every thread's kept pipe, closed in a forked child
_VFORK: bool | None = None  # vfork_holds' answer, once probed
_PROBING = threading.Lock()


def _forget_kept_pipes() -> None:
    """In a forked child: the kept pipes are shared with the parent, whose spawns read them;
    close them, so the child's spawns make their own (and the probe's lock may have been held
    by a thread the child does not have)."""
    global _THREAD, _PROBING
    _THREAD = threading.local()
    _PROBING = threading.Lock()
    for pipe in _KEPT:
        for fd in pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
    _KEPT.clear()


os.register_at_fork(after_in_child=_forget_kept_pipes)


def fork_exec(
    argv: Sequence[str],
    program: str,
    candidates: tuple[bytes, ...],
    cwd: str | None,
    env: list[bytes] | None,
    fds: tuple[int, int, int],
) -> int:
    """Start ``argv`` in a new session and return its pid once it has exec'd.

    ``candidates`` are the paths to try in turn (:func:`candidates`), ``program`` what to name
    in an error (the program's path, or ``argv[0]``); ``env`` the child's whole environment
    as ``b"NAME=value"`` (None: ours); ``fds`` its stdin, stdout and stderr. Raises what
    ``Popen`` raises: the ``OSError`` of a failed exec or ``chdir`` (with ``filename`` set as
    ``Popen`` sets it), a ``ValueError`` for an embedded NUL byte.
    """
    sys.audit("subprocess.Popen", program, argv, cwd, env)
    kept = _kept_pipe()
    if kept is None:
        pid, report = _with_own_pipe(argv, candidates, cwd, env, fds)
    else:
        pid = _call(argv, candidates, cwd, env, fds, kept)
        report = _drain(kept[0])
    if report:
        _reap(pid)
        raise _child_error(report, program, cwd)
    return pid


def _call(
    argv: Sequence[str],
    candidates: tuple[bytes, ...],
    cwd: str | None,
    env: list[bytes] | None,
    fds: tuple[int, int, int],
    error_pipe: tuple[int, int],
) -> int:
    """``_posixsubprocess.fork_exec`` with the arguments ``Popen`` gives it for a ``run`` step."""
    error_read, error_write = error_pipe
    pid: int = _FORK_EXEC(
        list(argv),
        candidates,
        True,  # close_fds
        (error_write,),
        cwd,
        env,
        fds[0],  # p2cread
        -1,  # p2cwrite
        -1,  # c2pread
        fds[1],  # c2pwrite
        -1,  # errread
        fds[2],  # errwrite
        error_read,
        error_write,
        True,  # restore_signals
        True,  # call_setsid
        -1,  # pgid_to_set
        None,  # gid
        None,  # extra_groups
        None,  # uid
        -1,  # child_umask
        None,  # preexec_fn
        True,  # allow_vfork
    )
    return pid


def _with_own_pipe(
    argv: Sequence[str],
    candidates: tuple[bytes, ...],
    cwd: str | None,
    env: list[bytes] | None,
    fds: tuple[int, int, int],
) -> tuple[int, bytes]:
    """The start as ``Popen`` makes it: a new error pipe, read to its EOF (the exec closed the
    child's end, close-on-exec), which holds the child's report if the exec failed."""
    error_read, error_write = os.pipe()
    try:
        try:
            pid = _call(argv, candidates, cwd, env, fds, (error_read, error_write))
        finally:
            os.close(error_write)
        report = os.read(error_read, _ERROR_LIMIT)  # the common case: EOF, one read
        if report:
            report = _read_rest(error_read, report)
    finally:
        os.close(error_read)
    return pid, report


def _kept_pipe() -> tuple[int, int] | None:
    """This thread's kept error pipe (non-blocking, close-on-exec), or None where the start
    must make one of its own (:func:`vfork_holds`: module docstring)."""
    pipe: tuple[int, int] | None = getattr(_THREAD, "pipe", None)
    if pipe is None and vfork_holds():
        pipe = _THREAD.pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _KEPT.append(pipe)
    return pipe


def _drain(fd: int) -> bytes:
    """Everything in the non-blocking pipe ``fd`` now (b"": nothing)."""
    whole = b""
    with contextlib.suppress(BlockingIOError):
        while part := os.read(fd, _ERROR_LIMIT):
            whole += part
    return whole


def vfork_holds() -> bool:
    """Whether a start here returns only once its child has exec'd or exited (``vfork``), so
    that a failed exec's report is in the error pipe when ``fork_exec`` returns: probed once per
    process (:func:`_probe_vfork`). Never under valgrind, whose ``vfork`` is a ``fork``. A probe
    that could not start (no process or descriptor to spare) says no for this start only."""
    global _VFORK
    with _PROBING:
        if _VFORK is None:
            try:
                _VFORK = not _under_valgrind() and _probe_vfork()
            except OSError:
                return False
        return _VFORK


def _probe_vfork() -> bool:
    """Start a child whose exec fails only after :data:`_PROBE_PATHS` missing paths (about half
    a millisecond of the child's time), and look at once for its report. With ``vfork`` the
    report is there on return; with a plain ``fork`` (a kernel refusing ``vfork``, a build
    without it) the parent is back some hundred times sooner than the child could have
    written it. The probe's child is reaped and its report read either way."""
    probe = tuple(b"/nonexistent-stepline-vfork-probe/%d" % i for i in range(_PROBE_PATHS))
    error_read, error_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        pid = _call([probe[0].decode()], probe, None, None, (-1, -1, -1), (error_read, error_write))
        report = _drain(error_read)
        _reap(pid)
    finally:
        os.close(error_read)
        os.close(error_write)
    return report.startswith(b"OSError:")


def _under_valgrind() -> bool:
    try:
        with open("/proc/self/maps", "rb") as maps:
            return b"vgpreload" in maps.read()
    except OSError:
        return False


def candidates(program: str, path: str) -> tuple[bytes, ...]:
    """Where to look for ``program``: itself if it names a directory, else each ``path`` entry
    (``Popen``'s ``executable_list``)."""
    encoded = os.fsencode(program)
    if os.path.dirname(encoded):
        return (encoded,)
    return tuple(os.path.join(os.fsencode(d), encoded) for d in path.split(os.pathsep))


def _read_rest(fd: int, report: bytes) -> bytes:
    """The rest of a child's error report, up to what ``Popen`` reads of it."""
    whole = bytearray(report)
    while len(whole) <= _ERROR_LIMIT and (part := os.read(fd, _ERROR_LIMIT)):
        whole += part
    return bytes(whole)


def _reap(pid: int) -> None:
    """The child that failed to exec has exited (or is about to): reap it."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _child_error(report: bytes, program: str, cwd: str | None) -> BaseException:
    """The exception ``Popen`` raises for the child's report ``Name:hex-errno:message``."""
    try:
        name, hex_errno, message_bytes = report.split(b":", 2)
        message = message_bytes.decode()
    except ValueError:
        return subprocess.SubprocessError(f"bad exception data from child: {report!r}")
    kind = getattr(builtins, name.decode("ascii"), subprocess.SubprocessError)
    if not (isinstance(kind, type) and issubclass(kind, BaseException)):
        kind = subprocess.SubprocessError
    if not (issubclass(kind, OSError) and hex_errno):
        return kind(message)
    errno = int(hex_errno, 16)
    filename: str | None = program
    if message == "noexec:chdir" or (message == "noexec" and sys.version_info < (3, 12)):
        message, filename = "", cwd  # 3.11 says only "noexec", and Popen then blames the cwd
    elif message == "noexec":
        message, filename = "", None
    return kind(errno, os.strerror(errno) if errno != 0 else message, filename)
