"""A throwaway PostgreSQL server in a temporary directory: for tests, the benchmark and the demo.

It runs the machine's own binaries (``initdb``, ``pg_ctl``, found on ``PATH`` or in Debian's
``/usr/lib/postgresql/N/bin``), listens on a Unix socket in its directory only (no TCP port, so
parallel runs never collide), and is removed when stopped. ``initdb`` refuses to run as root,
so as root the directory is given to ``nobody`` and the server runs as that user.

Nothing outlives its owner: :meth:`ThrowawayPostgres.stop` runs at exit too (``atexit``), and a
*guardian* (a small shell loop in its own session) stops the server and removes the directory
once the owning process is gone, however it ended (SIGKILL included).

Durability settings are relaxed (``fsync=off``): the data is thrown away, and what is measured
or tested is stepline's behaviour, not the disk. Production servers keep their own settings.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

__all__ = ["PostgresMissing", "ThrowawayPostgres", "find_binaries"]


class PostgresMissing(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; :class:`PostgresMissing` if none."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    raise PostgresMissing("no PostgreSQL server binaries (initdb, pg_ctl) found")


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as pg: pg.url`` — a fresh server, stopped and removed after."""

    def __init__(self, *, max_connections: int = 200) -> None:
        self.bindir = find_binaries()
        self._max_connections = max_connections
        self.directory = Path(tempfile.mkdtemp(prefix="stepline-pg-"))
        self._user: str | None = "nobody" if os.geteuid() == 0 else None
        self.url = f"postgresql:///postgres?host={self.directory}&user=stepline"
        self._guardian: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ThrowawayPostgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", "stepline", "-A", "trust", "--no-sync", "-E",
                  "UTF8")  # fmt: skip
        options = (
            f"-k {self.directory} -c listen_addresses='' -c fsync=off "
            f"-c synchronous_commit=off -c full_page_writes=off "
            f"-c max_connections={self._max_connections}"
        )
        log = self.directory / "server.log"
        atexit.register(self.stop)
        self._guard()
        self._run("pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop the server (if it runs) and remove its directory; idempotent."""
        atexit.unregister(self.stop)
        data = self.directory / "data"
        if (data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
        guardian, self._guardian = self._guardian, None
        if guardian is not None:
            guardian.kill()
            guardian.wait()

    def _guard(self) -> None:
        """Start the guardian: once this process is gone, stop the server, remove the files."""
        stop = " ".join(shlex.quote(a) for a in self._argv(
            "pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w", "stop"
        ))  # fmt: skip
        script = (
            f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; "
            f"{stop}; rm -rf {shlex.quote(str(self.directory))}"
        )
        self._guardian = subprocess.Popen(
            ["sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the owner's process group spares it
        )

    def _argv(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        return argv

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        argv = self._argv(program, *args)
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
