"""The store seam's contract, checked against every backend (SQLite and in-memory).

A new backend joins :data:`BACKENDS` and must pass the same tests: what was committed comes back
at the next open, a failed commit leaves nothing behind and does not stop the next one, damaged
state is refused with a ``StoreError`` and left exactly as it was.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from stepline.store import Backend, Batch, MemoryBackend, Snapshot, StoreError
from stepline.store._sqlite import SCHEMA_VERSION, SqliteBackend


class Backends:
    """Opens one backend's state again and again, as successive runs would."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "state.db"
        self.memory = MemoryBackend()

    def make(self) -> Backend:
        return self.memory if self.kind == "memory" else SqliteBackend(self.path)

    async def reopen(self, keep: int = 100) -> Snapshot:
        backend = self.make()
        snapshot = await backend.open(keep)
        await backend.aclose()
        return snapshot

    def corrupt_request(self, job_id: str, request: bytes) -> None:
        """Replace a stored job's request bytes behind the backend's back."""
        if self.kind == "memory":
            self.memory.jobs[job_id][1] = request
        else:
            with closing(sqlite3.connect(self.path)) as conn:
                conn.execute("UPDATE jobs SET request = ? WHERE id = ?", (request, job_id))
                conn.commit()

    def count_jobs(self) -> int:
        if self.kind == "memory":
            return len(self.memory.jobs)
        with closing(sqlite3.connect(self.path)) as conn:
            return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


@pytest.fixture(params=["sqlite", "memory"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Backends:
    return Backends(request.param, tmp_path)


def request_of(value: Any) -> bytes:
    return orjson.dumps({"job": {"value": value}, "params": {}})


def batch(gen: int, **fields: Any) -> Batch:
    return Batch(gen=gen, dirty=True, **fields)


async def write(backends: Backends, *batches: Batch) -> None:
    backend = backends.make()
    await backend.open(100)
    for item in batches:
        await backend.commit(item)
    await backend.aclose()


async def test_an_empty_state_opens_as_an_empty_snapshot(backends: Backends) -> None:
    assert await backends.reopen() == Snapshot()


async def test_what_was_committed_comes_back(backends: Backends) -> None:
    await write(
        backends,
        batch(
            1,
            inserts=[("j1", "one", request_of(1)), ("j2", None, request_of(2))],
            templates=[("t", b'{"value": 1}')],
            objects=[("schedule", "s1", b'{"every": 1}'), ("alert", "a1", b"{}")],
            next_id=3,
        ),
        batch(
            2,
            updates={"j1": ("succeeded", 0.5, {"out": 1}, 1), "j2": ("running", None, None, None)},
            objects=[("alert", "a1", None)],
        ),
    )
    snapshot = await backends.reopen()
    assert snapshot.next_id == 3
    assert snapshot.templates == {"t": {"value": 1}}
    assert snapshot.objects == {"schedule": {"s1": {"every": 1}}}
    assert [(j.id, j.state, j.request["job"]) for j in snapshot.unfinished] == [
        ("j2", "running", {"value": 2})
    ]
    [done] = snapshot.finished
    assert (done.id, done.name, done.state, done.elapsed, done.result) == (
        "j1",
        "one",
        "succeeded",
        0.5,
        {"out": 1},
    )
    assert snapshot.last_fin == 1


async def test_open_loads_the_newest_keep_finished_and_prune_deletes(backends: Backends) -> None:
    inserts = [(f"j{i}", None, request_of(i)) for i in range(1, 6)]
    updates = {f"j{i}": ("failed", 0.0, {"type": "fail"}, i) for i in range(1, 6)}
    await write(backends, batch(1, inserts=inserts, next_id=6), batch(2, updates=updates))
    snapshot = await backends.reopen(keep=2)
    assert [job.id for job in snapshot.finished] == ["j4", "j5"]
    assert snapshot.last_fin == 5
    assert backends.count_jobs() == 5  # open never writes
    await write(backends, batch(3, prune_to=3))
    assert backends.count_jobs() == 2


async def test_a_failed_commit_leaves_nothing_and_the_next_one_works(backends: Backends) -> None:
    backend = backends.make()
    await backend.open(100)
    await backend.commit(batch(1, inserts=[("j1", None, request_of(1))], next_id=2))
    duplicate = batch(
        2,
        inserts=[("j2", None, request_of(2)), ("j1", None, request_of(1))],  # j1 again: refused
        templates=[("t", b"{}")],
        next_id=3,
    )
    with pytest.raises((sqlite3.IntegrityError, ValueError)):
        await backend.commit(duplicate)
    await backend.commit(batch(3, inserts=[("j3", None, request_of(3))], next_id=4))
    await backend.aclose()
    snapshot = await backends.reopen()
    assert [job.id for job in snapshot.unfinished] == ["j1", "j3"]
    assert snapshot.templates == {}
    assert snapshot.next_id == 4


@pytest.mark.parametrize(
    ("request_bytes", "says"),
    [
        (b"[1]", "not an object with a job"),
        (b"null", "not an object with a job"),
        (b'{"job": {"value": 1}, "params": [1, 2]}', "params"),
        (b'{"job": {"value": 1}, "templates": {"t": 3}}', "templates"),
        (b"{not json", "not valid JSON"),
    ],
)
async def test_a_damaged_request_is_refused_and_nothing_is_written(
    backends: Backends, request_bytes: bytes, says: str
) -> None:
    finished = {f"j{i}": ("succeeded", 0.0, i, i) for i in range(1, 9)}
    inserts = [(f"j{i}", None, request_of(i)) for i in range(1, 10)]
    await write(backends, batch(1, inserts=inserts, next_id=10), batch(2, updates=finished))
    backends.corrupt_request("j9", request_bytes)
    with pytest.raises(StoreError, match=says):
        await backends.reopen(keep=2)
    assert backends.count_jobs() == 9  # refused, so nothing was pruned to --keep


async def test_a_damaged_finished_job_is_refused(backends: Backends) -> None:
    await write(
        backends,
        batch(1, inserts=[("j1", None, request_of(1))], next_id=2),
        batch(2, updates={"j1": ("failed", 0.0, "not an error object", 1)}),
    )
    with pytest.raises(StoreError, match="error of job j1"):
        await backends.reopen()


@pytest.mark.parametrize("count", [1, 3, 4096 + 5])
async def test_jobs_completed_at_once_are_stored_final_once_each(
    backends: Backends, count: int
) -> None:
    """``Batch.done`` rows, however many (SQLite inserts them in chunks, the last one padded),
    each stored once, final, with its name (0: none), request, output and finish number."""
    done: list[Any] = []
    for i in range(1, count + 1):
        done += [f"j{i}", f"n{i}" if i % 2 else 0, request_of(i).decode(), str(i), i]
    await write(backends, batch(1, done=done, next_id=count + 1))
    assert backends.count_jobs() == count
    snapshot = await backends.reopen(keep=count)
    assert (snapshot.next_id, snapshot.last_fin, snapshot.unfinished) == (count + 1, count, [])
    assert [(job.id, job.name, job.state, job.result) for job in snapshot.finished] == [
        (f"j{i}", f"n{i}" if i % 2 else None, "succeeded", i) for i in range(1, count + 1)
    ]


def line(seq: int, kind: str = "finished") -> bytes:
    return orjson.dumps({"event": kind, "ts": 1.0, "job": f"j{seq}", "seq": seq}) + b"\n"


async def test_committed_events_come_back_until_the_cursor_passes_them(backends: Backends) -> None:
    events = [(seq, line(seq)) for seq in (1, 2, 3)]
    await write(backends, batch(1, events=events[:2]), batch(2, events=events[2:], delivered=1))
    snapshot = await backends.reopen()
    assert snapshot.undelivered == events[1:]
    assert snapshot.last_seq == 3
    await write(backends, batch(3, delivered=3))
    snapshot = await backends.reopen()
    assert (snapshot.undelivered, snapshot.last_seq) == ([], 3)  # numbers never repeat


async def test_events_of_a_failed_commit_are_not_logged(backends: Backends) -> None:
    backend = backends.make()
    await backend.open(100)
    await backend.commit(batch(1, events=[(1, line(1))]))
    with pytest.raises((sqlite3.IntegrityError, ValueError)):
        await backend.commit(batch(2, events=[(2, line(2)), (1, line(1))]))  # seq 1 again
    await backend.aclose()
    snapshot = await backends.reopen()
    assert snapshot.undelivered == [(1, line(1))]


async def test_events_numbered_at_or_below_the_cursor_fail_the_commit(backends: Backends) -> None:
    """Even once every stored event was delivered and deleted: the numbers never repeat."""
    backend = backends.make()
    await backend.open(100)
    await backend.commit(batch(1, events=[(2, line(1) + line(2))]))
    await backend.commit(batch(2, delivered=2))  # no event left stored
    with pytest.raises((sqlite3.IntegrityError, ValueError)):
        await backend.commit(batch(3, events=[(2, line(2))]))
    with pytest.raises((sqlite3.IntegrityError, ValueError)):  # nor in the cursor's own batch
        await backend.commit(batch(4, events=[(4, line(3) + line(4))], delivered=3))
    await backend.commit(batch(5, events=[(3, line(3))]))
    await backend.aclose()
    snapshot = await backends.reopen()
    assert (snapshot.undelivered, snapshot.last_seq) == ([(3, line(3))], 3)


async def test_events_not_numbered_one_after_another_fail_the_commit(
    backends: Backends,
) -> None:
    backend = backends.make()
    await backend.open(100)
    with pytest.raises(ValueError, match="one after another"):
        await backend.commit(batch(1, events=[(1, line(1)), (3, line(3))]))
    await backend.commit(batch(2, events=[(1, line(1)), (2, line(2))]))
    await backend.aclose()
    assert (await backends.reopen()).undelivered == [(1, line(1)), (2, line(2))]


async def test_a_commit_s_run_of_events_is_numbered_by_its_lines(backends: Backends) -> None:
    """One run per commit, as the store hands them over: its first number is its last minus
    its lines (counted as lines, whatever the bytes: the SQLite backend counts them in SQL),
    and it must come after every stored event."""
    wide = orjson.dumps({"event": "finished", "output": "é ✓ \U0001f600", "seq": 2}) + b"\n"
    backend = backends.make()
    await backend.open(100)
    await backend.commit(batch(1, events=[(2, line(1) + wide)]))
    with pytest.raises((sqlite3.IntegrityError, ValueError)):
        await backend.commit(batch(2, events=[(4, line(2) + line(3) + line(4))]))  # 2 again
    await backend.commit(batch(3, events=[(4, line(3) + line(4))]))
    await backend.aclose()
    snapshot = await backends.reopen()
    assert snapshot.undelivered == [(1, line(1)), (2, wide), (3, line(3)), (4, line(4))]


async def test_a_cursor_inside_a_commit_s_events_keeps_the_rest(backends: Backends) -> None:
    events = [(seq, line(seq)) for seq in range(1, 6)]
    await write(backends, batch(1, events=events[:3]), batch(2, events=events[3:], delivered=2))
    assert (await backends.reopen()).undelivered == events[2:]
    await write(backends, batch(3, delivered=4))
    snapshot = await backends.reopen()
    assert (snapshot.undelivered, snapshot.last_seq) == (events[4:], 5)


async def test_a_damaged_event_is_refused(backends: Backends) -> None:
    await write(backends, batch(1, events=[(1, b"[1]\n")]))
    with pytest.raises(StoreError, match="event 1 is not an object"):
        await backends.reopen()


async def test_a_cancelling_job_and_its_request_id_come_back(backends: Backends) -> None:
    request = orjson.dumps({"job": {"value": 1}, "params": {}, "id": "r-7"})
    await write(
        backends,
        batch(1, inserts=[("j1", None, request)], next_id=2),
        batch(2, updates={"j1": ("cancelling", None, None, None)}),
    )
    [job] = (await backends.reopen()).unfinished
    assert (job.state, job.request["id"]) == ("cancelling", "r-7")


async def test_a_format_1_file_gets_the_event_log_once_it_was_checked(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as conn:
        for statement in (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, name TEXT, request BLOB NOT NULL, "
            "state TEXT NOT NULL, elapsed REAL, result BLOB, fin INTEGER)",
            "CREATE TABLE templates (name TEXT PRIMARY KEY, job BLOB NOT NULL)",
            "CREATE TABLE objects (kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, "
            "PRIMARY KEY (kind, key))",
            "PRAGMA user_version = 1",
        ):
            conn.execute(statement)
        conn.execute("INSERT INTO jobs VALUES ('j1', NULL, ?, 'queued', NULL, NULL, NULL)",
                     (request_of(1),))  # fmt: skip
        conn.commit()
    backend = SqliteBackend(path)
    snapshot = await backend.open(10)
    assert [job.id for job in snapshot.unfinished] == ["j1"]
    await backend.commit(batch(1, events=[(1, line(1))]))
    await backend.aclose()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again = SqliteBackend(path)
    assert (await again.open(10)).undelivered == [(1, line(1))]
    await again.aclose()


def make_format_2(path: Path, events: list[tuple[int, bytes]], delivered: int) -> None:
    """A state file as stepline wrote it before a commit's events shared one row."""
    with closing(sqlite3.connect(path)) as conn:
        for statement in (
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, name TEXT, request BLOB NOT NULL, "
            "state TEXT NOT NULL, elapsed REAL, result BLOB, fin INTEGER)",
            "CREATE INDEX jobs_fin ON jobs (fin) WHERE fin IS NOT NULL",
            "CREATE TABLE templates (name TEXT PRIMARY KEY, job BLOB NOT NULL)",
            "CREATE TABLE objects (kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, "
            "PRIMARY KEY (kind, key))",
            "CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)",
            "PRAGMA user_version = 2",
        ):
            conn.execute(statement)
        conn.execute("INSERT INTO jobs VALUES ('j1', NULL, ?, 'running', NULL, NULL, NULL)",
                     (request_of(1),))  # fmt: skip
        conn.executemany("INSERT INTO events VALUES (?, ?)", events)  # one event a row
        conn.execute("INSERT INTO meta VALUES ('delivered', ?)", (delivered,))
        conn.execute("INSERT INTO meta VALUES ('next_id', 2)")
        conn.commit()


async def test_a_format_2_file_keeps_its_undelivered_events(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    events = [(seq, line(seq)) for seq in (2, 3, 4)]  # 1 was delivered and deleted
    make_format_2(path, events, delivered=2)
    backend = SqliteBackend(path)
    snapshot = await backend.open(10)
    assert (snapshot.undelivered, snapshot.last_seq) == (events[1:], 4)
    assert [job.id for job in snapshot.unfinished] == ["j1"]
    await backend.commit(batch(1, events=[(5, line(5)), (6, line(6))], delivered=3))
    await backend.aclose()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    again = SqliteBackend(path)
    snapshot = await again.open(10)
    assert snapshot.undelivered == [(seq, line(seq)) for seq in (4, 5, 6)]
    assert snapshot.last_seq == 6
    await again.aclose()


async def test_a_commit_s_events_are_one_row(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "state.db")
    await backend.open(10)
    await backend.commit(batch(1, events=[(seq, line(seq)) for seq in range(1, 101)]))
    await backend.aclose()
    with closing(sqlite3.connect(tmp_path / "state.db")) as conn:
        assert conn.execute("SELECT seq FROM events").fetchall() == [(100,)]


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ([(2, line(1) + line(2)), (3, line(2) + line(3))], "the 2 events up to 3 overlap event 2"),
        ([(1, line(1) + line(2))], "the 2 events up to 1 overlap event 0"),
        ([(2, line(1) + b"[2]\n")], "event 2 is not an object"),
        ([(2, line(1) + line(2)[:-1])], "event 2 is not a JSON line"),
    ],
)
async def test_a_damaged_event_row_is_refused_and_left_as_it_was(
    tmp_path: Path, rows: list[tuple[int, bytes]], says: str
) -> None:
    path = tmp_path / "state.db"
    make_format_2(path, rows, delivered=0)
    with pytest.raises(StoreError, match=says):
        await SqliteBackend(path).open(10)
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT seq, body FROM events").fetchall() == rows
