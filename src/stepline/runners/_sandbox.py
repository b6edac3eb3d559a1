"""The sandbox runner: a ``run`` step with ``"runner": "sandbox"`` runs inside bubblewrap.

bubblewrap (``bwrap``, Debian's ``bubblewrap`` package) is the unprivileged sandbox Flatpak uses:
it builds a fresh mount namespace (and others) and execs the command in it. A sandboxed step sees

* the host's file system **read-only** (``--ro-bind / /``), at the same paths, so programs and
  libraries are found as outside;
* the job's **workspace writable** (``--bind``) and its default cwd; an explicit ``cwd`` elsewhere
  is visible, read-only (bound again where the private ``/tmp`` would hide it);
* a **private** ``/tmp`` (a tmpfs), a minimal ``/dev`` (null, zero, random, tty, shm...), and its
  own ``/proc``;
* its **own PID namespace** (``--unshare-pid``): it sees only its own processes, and when the
  step's command exits the namespace's first process exits and the kernel kills every process
  left in it, ``setsid`` and double-fork escapers included;
* **no network** (``--unshare-net``: only a loopback of its own, so 127.0.0.1 is not the host's)
  unless the step says ``"network": true``;
* **death with stepline** (``--die-with-parent``: bwrap gets SIGKILL when stepline dies, and its
  namespace with it), besides the guardian that holds every step (:mod:`._tree`);
* the environment the step would get outside (``env`` merged over stepline's).

Why a layer over the local runner instead of a runner of its own: ``bwrap`` is a local process
like any other, so its tree is held, limited, captured and stopped exactly as a local step's
(:mod:`._local`, :mod:`._tree`: cgroup, limits, output cap, grace, hard stop). This runner only
turns a launch into the ``bwrap`` command line, and launches that do not ask for the sandbox go
to the host runner untouched (one comparison).

A command that bwrap cannot start (no such program in the sandbox, a cwd it cannot enter, a
namespace the kernel refuses) makes bwrap print ``bwrap: ...`` and exit 1: that is a
``startup_failure`` carrying bwrap's words. Without ``bwrap`` on stepline's PATH a sandboxed step
fails with ``startup_failure`` saying so. A signal that ends the command inside is reported by
bwrap as exit status 128+N, as a shell reports it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from typing import Final

import attrs

from ._base import Launch, Process, ProcessResult, ProcessStartError, Runner

__all__ = ["BWRAP_MISSING", "SandboxProcess", "SandboxRunner", "bwrap_argv"]

BWRAP_MISSING: Final = (
    "the sandbox runner needs bubblewrap: no 'bwrap' on PATH "
    "(Debian and Ubuntu: apt-get install bubblewrap)"
)

SANDBOX_PROCESSES: Final = 2
"""Processes of bwrap's own in a step's tree (the outer bwrap and the namespace's first process):
added to a ``processes`` limit, which counts the step's command and what it starts."""


def bwrap_argv(bwrap: str, launch: Launch) -> list[str]:
    """The ``bwrap`` command line that runs ``launch.argv`` sandboxed (module docstring)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    workspace = launch.workspace
    cwd = None if launch.cwd is None else os.path.abspath(launch.cwd)  # as Popen would see it
    if workspace is not None:
        argv += ["--bind", workspace, workspace]
    if cwd is not None and _inside(cwd, "/tmp") and not _inside(cwd, workspace):
        argv += ["--ro-bind", cwd, cwd]  # the private /tmp would hide it
    if cwd is not None:
        argv += ["--chdir", cwd]
    argv += ["--unshare-pid", "--die-with-parent"]
    if not launch.network:
        argv.append("--unshare-net")
    return [*argv, "--", *launch.argv]


def _inside(path: str, directory: str | None) -> bool:
    if directory is None:
        return False
    path, directory = os.path.abspath(path), os.path.abspath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


class SandboxRunner:
    """Runs ``runner: "sandbox"`` launches in bubblewrap on ``host``; others on ``host`` as is.

    ``bwrap`` is the program's path, or None to look for it on PATH at each sandboxed start
    (found once, it is remembered per PATH).
    """

    def __init__(self, host: Runner, bwrap: str | None = None) -> None:
        self.host = host
        self._bwrap = bwrap
        self._found: dict[str, str] = {}

    def start(self, launch: Launch) -> Process:
        if launch.runner != "sandbox":
            return self.host.start(launch)
        if not launch.argv:
            raise ProcessStartError("empty command: nothing to run")
        limits = launch.limits
        if limits.processes is not None:
            limits = attrs.evolve(limits, processes=limits.processes + SANDBOX_PROCESSES)
        wrapped = attrs.evolve(
            launch, argv=bwrap_argv(self._find(), launch), limits=limits, runner="local"
        )
        return SandboxProcess(self.host.start(wrapped), launch.argv)

    def kill_all(self) -> None:
        self.host.kill_all()

    def _find(self) -> str:
        if self._bwrap is not None:
            return self._bwrap
        path = os.environ.get("PATH", os.defpath)
        found = self._found.get(path)
        if found is None or not os.access(found, os.X_OK):
            found = shutil.which("bwrap", path=path)
            if found is None:
                raise ProcessStartError(BWRAP_MISSING)
            self._found[path] = found
        return found


class SandboxProcess:
    """A sandboxed step's bwrap process: the host's process, with bwrap's own start failures
    turned into :class:`ProcessStartError`."""

    __slots__ = ("_argv", "_inner")

    def __init__(self, inner: Process, argv: Sequence[str]) -> None:
        self._inner = inner
        self._argv = argv

    async def wait(self) -> ProcessResult:
        result = await self._inner.wait()
        if result.returncode == 1 and result.stderr.startswith("bwrap: "):
            raise ProcessStartError(_start_failure(result.stderr, self._argv[0]))
        return result

    async def stop(self, grace: float) -> None:
        await self._inner.stop(grace)

    def hurry(self) -> None:
        self._inner.hurry()

    def close(self) -> None:
        self._inner.close()


def _start_failure(stderr: str, program: str) -> str:
    """A human message from bwrap's complaint (``bwrap: execvp nosuch: No such file...``)."""
    said = stderr.splitlines()[0].removeprefix("bwrap: ")
    if said.startswith("execvp "):
        if said.endswith("No such file or directory"):
            return f"no such program in the sandbox: {program!r}"
        if said.endswith("Permission denied"):
            return f"not executable in the sandbox: {program!r} (permission denied)"
    return f"cannot start {program!r} in the sandbox: {said}"
