"""Starting a program the way ``subprocess.Popen`` does, without ``Popen``'s Python around it.

``Popen.__init__`` and ``_execute_child`` are about 130 µs of Python per start on this VM
(argument checks, the environment re-encoded variable by variable, the error-pipe protocol),
more than the ``vfork`` and ``exec`` they wrap (NOTES.md, Performance). Here the same C
function ``Popen`` ends in, ``_posixsubprocess.fork_exec``, is called directly with the same
arguments ``Popen`` gives it for a ``run`` step (close every other fd, new session, signals
restored, vfork), and the child's exec error comes back through the same error pipe.

``fork_exec`` is CPython's private function; its arguments are the same from 3.11 to 3.13 (the
versions checked). Elsewhere :data:`AVAILABLE` is False and the caller uses ``Popen``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Final

__all__ = ["AVAILABLE", "candidates", "fork_exec"]

try:
    import _posixsubprocess
except ImportError:  # not POSIX
    _FORK_EXEC: Any = None
else:
    _FORK_EXEC = getattr(_posixsubprocess, "fork_exec", None)

AVAILABLE: Final = _FORK_EXEC is not None and (3, 11) <= sys.version_info[:2] <= (3, 13)
"""Whether :func:`fork_exec` may be used (a CPython whose ``fork_exec`` arguments are known)."""

_ERROR_LIMIT: Final = 50_000  # what Popen reads of the error pipe at most


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
    error_read, error_write = os.pipe()
    try:
        try:
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
        finally:
            os.close(error_write)
        # The child's exec error, if any; EOF (b"") once the exec closed the pipe
        # (close-on-exec): the common case is one read.
        report = os.read(error_read, _ERROR_LIMIT)
        if report:
            report = _read_rest(error_read, report)
    finally:
        os.close(error_read)
    if report:
        _reap(pid)
        raise _child_error(report, program, cwd)
    return pid


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
