"""``stepline demo --cluster``: three real nodes on one PostgreSQL; one is killed, the others
rescue its jobs, and the narration says what happens as the driver sees it.

A throwaway PostgreSQL is started from the machine's binaries (``--state URL`` names a database
to use instead); one ``stepline serve`` node is driven through :class:`stepline.Client` (the
wire lines are shown as in ``stepline demo``) and two ``stepline worker`` nodes run beside it.
Like the single-process demo, each scene checks what it shows and the exit status says whether
everything went as narrated (1 if not; 2 when there is no PostgreSQL to run on).
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO, TypeAlias

from .. import steps as s
from ..client._session import SERVE
from ..client._sync import Client
from ..wire._events import Event
from ._demo import Mismatch, Narrator, expect
from ._term import is_tty

__all__ = ["main"]

LEASE = 2.0
WORKER = [sys.executable, "-m", "stepline", "worker"]

_INTRO = """\
stepline on PostgreSQL: several nodes, one queue.
   A `stepline serve` node (driven below: `>` commands, `<` events) and two `stepline worker`
   nodes share one database, each with a lease of {lease:g} seconds."""

Scene: TypeAlias = tuple[str, Callable[[], None]]
"""A scene's title, and the scene: it raises ``Mismatch`` or ``TimeoutError`` if it goes wrong."""

_OUTRO = """\
Every job ended exactly once, whichever node ran it. See docs/cluster.md for running nodes on
   several machines, what is guaranteed, and what to watch in operation."""


class _Nodes:
    """Which node each job started on, read from the driven node's ``started`` events."""

    def __init__(self, narrator: Narrator) -> None:
        self._narrator = narrator
        self._lock = threading.Lock()
        self.started: dict[str, list[int]] = {}

    def tap(self, direction: str, message: Event) -> None:
        if direction == "<" and message.get("event") == "started":
            with self._lock:
                self.started.setdefault(str(message["job"]), []).append(int(message["node"]))
        self._narrator.wire(direction, message)

    def where(self, job: str) -> list[int]:
        with self._lock:
            return list(self.started.get(job, []))


def _spread(client: Client, nodes: _Nodes, narrator: Narrator) -> None:
    narrator.say("Six half-second jobs, submitted on the serve node: every node claims some.")
    jobs = [client.submit(s.job(s.sleep(0.5), name=f"nap{i}")) for i in range(1, 7)]
    for job in jobs:
        job.wait(timeout=30)
    counts = Counter(nodes.where(job.id)[-1] for job in jobs)
    expect(len(counts) >= 2, f"every job ran on one node: {dict(counts)}")
    ran = ", ".join(f"node {n}: {c}" for n, c in sorted(counts.items()))
    narrator.result(f"all six succeeded; {ran}; their events all came to this stdout")


def _rescue(
    client: Client, nodes: _Nodes, narrator: Narrator, workers: dict[int, subprocess.Popen[bytes]]
) -> None:
    narrator.say("Four three-second jobs; once one runs on a worker node, that node is killed.")
    jobs = [client.submit(s.job(s.sleep(3), s.value(i), name=f"long{i}")) for i in range(1, 5)]
    victim = _first_on(nodes, [j.id for j in jobs], set(workers))
    node = nodes.where(victim)[0]
    workers.pop(node).send_signal(signal.SIGKILL)
    killed = time.time()
    narrator.say(f"SIGKILL to node {node} (running {victim}); its lease runs out in {LEASE:g}s.")
    outputs = [job.wait(timeout=60) for job in jobs]
    expect(outputs == [1, 2, 3, 4], f"unexpected outputs {outputs}")
    rescued = next(j for j in jobs if j.id == victim)
    recovered = [e for e in rescued.events(timeout=1) if e["event"] == "recovered"]
    expect(len(recovered) == 1, f"{victim} was not recovered once: {recovered}")
    took = recovered[0]["ts"] - killed
    expect(took <= LEASE + 1.5, f"the rescue took {took:.1f}s (lease {LEASE:g}s)")
    again = nodes.where(victim)
    narrator.result(
        f"{victim} was rescued {took:.1f}s after the kill and ran again on node {again[-1]}; "
        "every job finished once"
    )


def _first_on(nodes: _Nodes, jobs: list[str], candidates: set[int]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for job in jobs:
            where = nodes.where(job)
            if where and where[0] in candidates:
                return job
        time.sleep(0.02)
    raise Mismatch("no job started on a worker node")


@contextlib.contextmanager
def _database(state: str | None, narrator: Narrator) -> Iterator[str]:
    if state is not None:
        yield state
        return
    from ..cluster._throwaway import ThrowawayPostgres

    with ThrowawayPostgres() as server:
        narrator.say(f"A throwaway PostgreSQL in {server.directory} (removed at the end).")
        yield server.url


@contextlib.contextmanager
def _workers(url: str, logs: Path) -> Iterator[dict[int, subprocess.Popen[bytes]]]:
    """Two worker nodes, by node id (read from the line each logs when ready)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in (1, 2):
            log = (logs / f"worker{i}.log").open("wb")
            args = [*WORKER, "--state", url, "--workers", "2", "--lease", str(LEASE)]
            procs.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=log))
            log.close()
        yield {
            _node_id(logs / f"worker{i}.log"): proc for i, proc in zip((1, 2), procs, strict=True)
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _node_id(log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"worker node (\d+) of", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise Mismatch(f"a worker node did not start: {log.read_text(errors='replace')[-500:]}")


def main(state: str | None = None, out: TextIO | None = None, pause: float | None = None) -> int:
    """Run the cluster demo; 0 when every scene went as narrated."""
    from ..cluster._throwaway import PostgresMissing

    stream = out if out is not None else sys.stderr
    narrator = Narrator(stream)
    pause = pause if pause is not None else (0.4 if is_tty(stream) else 0.0)
    narrator.text(_INTRO.format(lease=LEASE))
    nodes = _Nodes(narrator)
    try:
        with (
            _database(state, narrator) as url,
            tempfile.TemporaryDirectory(prefix="stepline-demo-") as logs,
            _workers(url, Path(logs)) as workers,
        ):
            args = ("--state", url, "--workers", "1", "--lease", str(LEASE), "--heartbeat", "0")
            with Client(args, command=SERVE, tap=nodes.tap) as client:
                narrator.say(f"This serve node is node {client.ready['node']}; the workers "
                             f"are nodes {', '.join(map(str, sorted(workers)))}.")  # fmt: skip
                scenes: list[Scene] = [
                    ("Jobs run on every node", lambda: _spread(client, nodes, narrator)),
                    ("A node dies", lambda: _rescue(client, nodes, narrator, workers)),
                ]
                failed = _play(scenes, narrator, pause)
                narrator.heading("Shutdown")
                narrator.say("Closing stdin drains this node; the worker left gets SIGTERM.")
    except PostgresMissing as exc:
        narrator.problem(f"{exc}: install PostgreSQL's server, or give --state postgresql://…")
        return 2
    return narrator.verdict(_OUTRO, failed)


def _play(scenes: list[Scene], narrator: Narrator, pause: float) -> list[str]:
    """Each scene in turn, numbered; returns the titles of those that went wrong."""
    failed = []
    for number, (title, scene) in enumerate(scenes, 1):
        narrator.heading(f"{number}. {title}")
        try:
            scene()
        except (Mismatch, TimeoutError) as exc:
            narrator.problem(f"unexpected: {exc}")
            failed.append(title)
        time.sleep(pause)
    return failed
