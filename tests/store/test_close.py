"""How ``serve --state`` ends: every outcome durable before ``bye``, the housekeeping after it.

Before ``bye`` the last batch is committed and its events written (every ``finished`` a driver
reads is on disk). What follows is housekeeping: the delivery cursor, committed once stdout has
every line (so a restart repeats nothing), and closing the file (SQLite checkpoints its log
then, 10-130 ms measured). It comes after ``bye`` (NOTES.md, "--state throughput", Session 9),
so a server started on the file as soon as ``bye`` is read waits for the lock instead of being
refused as in use.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from stepline import Config
from stepline.server._serve import Server
from stepline.store import Batch, MemoryBackend, Store, _sqlite
from stepline.store._sqlite import SqliteBackend
from stepline.store._store import WRITER_SWITCH_INTERVAL

from ..driver import ENV, SERVE

SRC = str(Path(__file__).resolve().parents[2] / "src")

_SUBMITS = b"".join(
    b'{"op":"submit","id":%d,"job":%s}\n' % (n, job)
    for n, job in enumerate([b'{"value":1}', b'{"sleep":0.01}', b'{"value":2}'] * 3)
)


async def _serve_submits(store: Store, config: Config, out: bytearray) -> None:
    """A server on ``store`` given :data:`_SUBMITS` and the end of its input; it exits 0, its
    stdout collected into ``out`` as it is written."""
    stdin_send, stdin = trio.testing.memory_stream_one_way_pair()
    stdout, stdout_receive = trio.testing.memory_stream_one_way_pair()
    server = Server(config, stdin, stdout, handle_signals=False, store=store)

    async def read() -> None:
        while chunk := await stdout_receive.receive_some():
            out.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await stdin_send.send_all(_SUBMITS)
        await stdin_send.aclose()
        assert await server.run() == 0
        await stdout.aclose()


class Watched(MemoryBackend):
    """A memory backend that notes, at each commit and at its close, whether the server's
    stdout had ``bye`` by then (once every task had its turn: the bytes emitted so far are
    read)."""

    def __init__(self, out: bytearray) -> None:
        super().__init__()
        self.out = out
        self.seen: list[tuple[str, int | None, bool]] = []

    async def commit(self, batch: Batch) -> None:
        await super().commit(batch)
        await trio.testing.wait_all_tasks_blocked()
        self.seen.append(("commit", batch.delivered, b'"bye"' in self.out))

    async def aclose(self) -> None:
        await trio.testing.wait_all_tasks_blocked()
        self.seen.append(("close", None, b'"bye"' in self.out))
        await super().aclose()


async def test_bye_follows_every_outcome_and_precedes_the_housekeeping() -> None:
    out = bytearray()
    backend = Watched(out)
    await _serve_submits(await Store.open(backend), Config(workers=2, heartbeat=0), out)
    events = [orjson.loads(line) for line in bytes(out).splitlines()]
    assert events[-1]["event"] == "bye"
    last_seq = max(e.get("seq", 0) for e in events)
    assert sum(e["event"] == "finished" for e in events) == 9
    # Every commit that carried outcomes came before `bye`; the cursor up to the last event and
    # the close came after it, and nothing is left to repeat after a restart.
    outcomes = [seen for seen in backend.seen if seen[0] == "commit" and seen[1] != last_seq]
    assert outcomes
    assert not any(bye for _, _, bye in outcomes)
    assert backend.seen[-2:] == [("commit", last_seq, True), ("close", None, True)]
    assert backend.delivered == last_seq
    assert backend.events == {}


def test_a_server_started_as_bye_is_read_waits_for_the_file(tmp_path: Path) -> None:
    """The next server, started on the file the moment the first wrote ``bye`` (its exit not
    awaited), opens it once the first has closed it, instead of being refused as in use."""
    state = str(tmp_path / "state.db")
    serve = [*SERVE, "--heartbeat", "0", "--state", state]
    env = {**ENV, "PYTHONPATH": SRC}
    with subprocess.Popen(serve, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env) as first:
        assert first.stdin is not None
        assert first.stdout is not None
        first.stdin.write(_SUBMITS)
        first.stdin.close()
        while b'"bye"' not in first.stdout.readline():
            pass
        second = subprocess.run(
            serve,
            input=b'{"op":"status","id":"s"}\n',
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert first.wait(timeout=60) == 0
    assert second.returncode == 0, second.stderr
    events = [orjson.loads(line) for line in second.stdout.splitlines()]
    assert len(next(e for e in events if e["event"] == "status")["jobs"]) == 9
    assert not any(e["event"] == "recovered" for e in events)


async def test_opening_waits_for_a_file_whose_server_is_closing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file still locked by a server that is closing it (it wrote ``bye``) is opened once the
    lock is released, not refused as in use. The wait is lengthened here so that a slow machine
    cannot make this test fail; the refusal after the wait is tested in test_state_file.py."""
    monkeypatch.setattr(_sqlite, "LOCK_WAIT", 60.0)
    state = tmp_path / "state.db"
    made = SqliteBackend(state)
    await made.open(10)
    await made.aclose()  # a state file
    holder = sqlite3.connect(state, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")  # as a server holds it
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT OR REPLACE INTO meta VALUES ('next_id', 5)")
    holder.execute("COMMIT")
    release = threading.Timer(0.3, holder.close)
    release.start()
    try:
        snapshot = await SqliteBackend(state).open(10)
    finally:
        release.join()  # a thread of its own: it needs nothing of this one
    assert snapshot.next_id == 5


class Timed(MemoryBackend):
    """A memory backend that notes the process's switch interval at each commit."""

    def __init__(self) -> None:
        super().__init__()
        self.intervals: list[float] = []

    async def commit(self, batch: Batch) -> None:
        self.intervals.append(sys.getswitchinterval())
        await super().commit(batch)


async def test_serve_with_state_hands_the_gil_over_quickly_and_restores_it() -> None:
    """While ``serve --state`` runs, the writer thread waits at most WRITER_SWITCH_INTERVAL for
    the GIL (NOTES.md, "--state throughput", Session 9); the interval is set back after."""
    before = sys.getswitchinterval()
    backend = Timed()
    await _serve_submits(await Store.open(backend), Config(heartbeat=0), bytearray())
    assert backend.intervals
    assert backend.intervals == pytest.approx([WRITER_SWITCH_INTERVAL] * len(backend.intervals))
    assert before > WRITER_SWITCH_INTERVAL
    assert sys.getswitchinterval() == pytest.approx(before)
