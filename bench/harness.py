"""Plumbing shared by the scenarios: spawning children, feeding and reading pipes, sampling RSS.

The benchmark measures other processes, so everything here tries to stay out of their way: the
input is built before the clock starts and written by a thread in large blocks, output is read
in 1 MiB chunks and only newlines are counted while the clock runs (parsing, when a scenario
verifies events, happens afterwards), and every child has a watchdog so a hung executor fails
the benchmark instead of hanging it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SRC = REPO / "src"
BASELINE = BENCH / "baseline_trio.py"
PYCACHE = Path(tempfile.gettempdir()) / "stepline-bench-pycache"

Event = dict[str, Any]


class BenchError(Exception):
    """A scenario could not produce a trustworthy number (a child failed, output was wrong)."""


def child_env(*, bytecode_cache: bool = True) -> dict[str, str]:
    """The environment for children: the repository's ``src`` first on ``PYTHONPATH``.

    Always first, even when stepline is installed: the benchmark is about the code in this
    checkout, not whatever version happens to be installed in the environment.

    With ``bytecode_cache`` (the default) compiled bytecode is cached under :data:`PYCACHE`, even
    where ``PYTHONDONTWRITEBYTECODE`` is set: otherwise every start recompiles every stepline
    module from source (measured: about 40% of the time to ``ready``), which an installed
    package never does. The cache lives outside the repository, so ``src/`` stays untouched.
    """
    env = dict(os.environ)
    paths = [str(SRC), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def serve_argv(*flags: str) -> list[str]:
    return [sys.executable, "-m", "stepline", "serve", *flags]


def baseline_argv(*flags: str) -> list[str]:
    return [sys.executable, str(BASELINE), *flags]


def peer_argv(script: str, *args: str) -> list[str]:
    """A floor or peer script in ``bench/`` (``floor_pool.py``, ``peer_huey.py``)."""
    return [sys.executable, str(BENCH / script), *args]


def submit_lines(jobs: Iterable[Any]) -> bytes:
    """``submit`` commands, one per job, as protocol lines."""
    option = orjson.OPT_APPEND_NEWLINE
    return b"".join([orjson.dumps({"op": "submit", "job": job}, option=option) for job in jobs])


def trivial_jobs(start: int, stop: int) -> Iterator[dict[str, int]]:
    return ({"value": i} for i in range(start, stop))


def command(op: str, **fields: Any) -> bytes:
    return orjson.dumps({"op": op, **fields}, option=orjson.OPT_APPEND_NEWLINE)


def proc_status(pid: int, key: str = "VmRSS") -> int:
    """A ``/proc/PID/status`` memory figure (``VmRSS``, ``VmHWM``) in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {key} in /proc/{pid}/status")
    return int(match.group(1)) * 1024


def children_named(pid: int, name: str) -> list[int]:
    """Live child processes of ``pid`` whose command name is ``name`` (scans ``/proc``).

    Scanning by parent pid works whatever thread forked the child (trio starts processes from a
    worker thread, so ``/proc/PID/task/PID/children`` would miss them).
    """
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid and comm == name:
            found.append(int(entry.name))
    return found


class OutputReader(threading.Thread):
    """Drains a child's stdout in big chunks, counting lines; optionally keeps the bytes.

    A thread, so the child never blocks on a full pipe while the main thread is busy, and
    so ``wait_lines`` can wait for progress with a timeout. It notes the moment it saw the
    ``bye`` line end the stream: that, not process exit, is where a throughput run ends.
    """

    def __init__(self, stream: IO[bytes], *, keep: bool) -> None:
        super().__init__(daemon=True)
        self._fd = stream.fileno()
        self._keep = keep
        self._chunks: list[bytes] = []
        self._tail = b""
        self._cond = threading.Condition()
        self.lines = 0
        self.eof = False
        self.bye_at: float | None = None

    def run(self) -> None:
        while chunk := os.read(self._fd, 1 << 20):
            now = time.perf_counter()
            if self._keep:
                self._chunks.append(chunk)
            self._tail = (self._tail + chunk[-256:])[-256:]
            if self.bye_at is None and _ends_with_bye(self._tail):
                self.bye_at = now
            with self._cond:
                self.lines += chunk.count(b"\n")
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def wait_lines(self, count: int, timeout: float) -> None:
        """Block until ``count`` lines were read; raise if EOF or the timeout comes first."""
        with self._cond:
            self._cond.wait_for(lambda: self.lines >= count or self.eof, timeout)
            if self.lines < count:
                state = "EOF" if self.eof else f"{timeout:g}s"
                raise BenchError(f"expected {count} output lines, got {self.lines} by {state}")

    def wait_eof(self, timeout: float) -> None:
        self.join(timeout)
        if self.is_alive():
            raise BenchError(f"no EOF on stdout after {timeout:g}s ({self.lines} lines)")

    def events(self) -> list[Event]:
        """Every kept line, parsed (after the run: parsing is not part of any measurement)."""
        return [orjson.loads(line) for line in b"".join(self._chunks).splitlines()]


def _ends_with_bye(tail: bytes) -> bool:
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return tail.endswith(b"\n") and last.startswith(b'{"event":"bye"')


class Child:
    """One benchmarked process: piped stdout, stderr kept in a file, a watchdog.

    With ``reader=True`` an :class:`OutputReader` drains stdout; otherwise the caller reads
    events one by one with :meth:`next_event` (lock-step protocols such as the cancel
    round trips, where a thread hop would only add noise).
    """

    def __init__(
        self,
        argv: list[str],
        *,
        stdin: IO[bytes] | int = subprocess.PIPE,
        reader: bool = True,
        keep: bool = False,
        timeout: float = 600,
        bytecode_cache: bool = True,
    ) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed in __exit__
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(bytecode_cache=bytecode_cache),
        )
        assert self.proc.stdout is not None
        self.out = OutputReader(self.proc.stdout, keep=keep) if reader else None
        if self.out is not None:
            self.out.start()
        self._watchdog = threading.Timer(timeout, self.proc.kill)
        self._watchdog.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def reader(self) -> OutputReader:
        if self.out is None:
            raise BenchError("this child was started without an output reader")
        return self.out

    def send(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)  # a BufferedWriter: writes everything, blocking as needed
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def feed_in_thread(self, data: bytes) -> threading.Thread:
        """Write ``data`` then close stdin, from a thread (the main thread reads or samples)."""

        def feed() -> None:
            try:
                self.send(data)
            except BrokenPipeError:
                pass  # the child died; finish() reports it with its stderr
            finally:
                self.close_stdin()

        thread = threading.Thread(target=feed, daemon=True)
        thread.start()
        return thread

    def next_event(self) -> Event:
        if self.out is not None or self.proc.stdout is None:
            raise BenchError("next_event needs a child started with reader=False")
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"unexpected EOF from child\n{self.stderr()}")
        event: Event = orjson.loads(line)
        return event

    def await_event(self, kind: str, job: str | None = None) -> Event:
        """Read events until one of ``kind`` (for ``job``, if given) arrives."""
        while True:
            event = self.next_event()
            if event["event"] == kind and (job is None or event.get("job") == job):
                return event
            if event["event"] == "error":
                raise BenchError(f"child reported an error: {event}")

    def finish(self, timeout: float = 120) -> int:
        """Close stdin, wait for EOF and exit; raise unless the exit status is 0."""
        self.close_stdin()
        if self.out is not None:
            self.out.wait_eof(timeout)
        returncode = self.proc.wait(timeout)
        if returncode != 0:
            raise BenchError(f"{self.proc.args!r} exited {returncode}\n{self.stderr()}")
        return returncode

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def __enter__(self) -> Child:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._watchdog.cancel()
        self.close_stdin()
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: stepline stops its children before it exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def run_timed(
    argv: list[str],
    stdin: IO[bytes] | None = None,
    timeout: float = 300,
    *,
    bytecode_cache: bool = True,
) -> float:
    """Seconds from spawning ``argv`` to its successful exit."""
    env = child_env(bytecode_cache=bytecode_cache)
    start = time.perf_counter()
    proc = subprocess.run(
        argv, stdin=stdin, capture_output=True, env=env, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    return elapsed


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile: with 20 samples p99 is simply the largest."""
    ranked = sorted(values)
    index = max(0, min(len(ranked) - 1, -(-len(ranked) * fraction // 1) - 1))
    return ranked[int(index)]
