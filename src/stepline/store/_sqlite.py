"""The SQLite backend (``stepline serve --state PATH``): one file, one connection, one thread.

**Why a trio task plus ``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``**, rather than a
long-lived thread fed by a queue: the store fills its batch on the trio thread with synchronous
calls from the job table (which must not block or take locks), and hands the whole batch over in
one thread hop per commit. No cross-thread queue, no locks, no ``from_thread`` callbacks. The
limiter makes "one connection, used by one thread at a time" a structural fact (open, commits
and close all go through it); trio's thread cache may hand the work to a different OS thread,
so the connection is opened with ``check_same_thread=False``, which is safe exactly because of
that limiter. A commit in flight always completes: ``to_thread`` does not abandon it.

**The file.** ``PRAGMA user_version`` holds the format (:data:`SCHEMA_VERSION`). A newer, foreign
or corrupt file is refused with a :class:`~stepline.store._model.StoreError`, never reset, and
every row is checked (:mod:`stepline.store._decode`) before anything is written: pruning to
``--keep`` happens in the first commit, after the load succeeded. The schema is created in one
transaction, so a crash while creating it leaves an empty file, which the next start creates
again. WAL mode with ``synchronous=FULL``: a commit survives power loss, not just a crash. The
connection holds SQLite's exclusive lock, so a second ``stepline serve`` on the file is refused.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any, Final

import trio

from ._decode import (
    Corrupt,
    decode_cursor,
    decode_event_run,
    decode_job,
    decode_json,
    decode_next_id,
    decode_template,
    encode_json,
)
from ._model import (
    DONE_FIELDS,
    Batch,
    JobUpdate,
    LoggedEvent,
    NewJob,
    Snapshot,
    StoredJob,
    StoreError,
)

__all__ = ["SCHEMA_VERSION", "SqliteBackend"]

SCHEMA_VERSION: Final = 3

LOCK_WAIT: Final = 2.0
"""Seconds an opening server waits for the file's lock before refusing it as in use: a
``serve`` that wrote ``bye`` still records its events' delivery and closes the file (SQLite
checkpoints its log then, 10-130 ms measured), so a driver that starts the next server as soon
as it reads ``bye`` must not be refused meanwhile (NOTES.md, "--state throughput", Session 9)."""

# The event log (transactional outbox): every event the driver must get, committed with the
# change it reports; rows up to meta's 'delivered' cursor are deleted as the cursor moves.
# One row per commit: body holds that commit's events as consecutive JSON lines, and seq is the
# sequence number of the last of them (the lines before it are seq - 1, seq - 2, ...), so
# "delete what was delivered" stays one range delete on the key. A row per event cost three
# inserts per trivial job (NOTES.md, Durable state). Format 2 stored one event per row, which
# is the same thing with one line, so a format 2 file is format 3 as it is; format 1 lacked the
# table. Either is upgraded at open, once every row was checked.
_EVENTS: Final = "CREATE TABLE events (seq INTEGER PRIMARY KEY, body BLOB NOT NULL)"

_SCHEMA: Final = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value)",
    # id: j1, j2, ...; rowid order is acceptance order. request: JSON {"job", "params",
    # "templates"?}, enough to validate the job again. state: queued, running, or final.
    # elapsed, result (JSON output or error) and fin (finish order: --keep keeps the highest)
    # are set for final states only.
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, name TEXT, request BLOB NOT NULL, state TEXT NOT NULL,
        elapsed REAL, result BLOB, fin INTEGER
    )""",
    "CREATE INDEX jobs_fin ON jobs (fin) WHERE fin IS NOT NULL",
    "CREATE TABLE templates (name TEXT PRIMARY KEY, job BLOB NOT NULL)",
    # Named objects of other services (schedules, alerts): one row each, its body as JSON.
    """CREATE TABLE objects (
        kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, key)
    )""",
    _EVENTS,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class SqliteBackend:
    """A :class:`~stepline.store._backend.Backend` on one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._conn: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)  # one connection, one user at a time

    @property
    def description(self) -> str:
        return f"state file {self.path}"

    async def open(self, keep: int) -> Snapshot:
        opened: tuple[sqlite3.Connection, Snapshot] = await self._run(_open, self.path, keep)
        self._conn, snapshot = opened
        return snapshot

    async def commit(self, batch: Batch) -> None:
        assert self._conn is not None, "open() first"
        await self._run(_commit, self._conn, batch)

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with trio.CancelScope(shield=True):
                await self._run(conn.close)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)


# -- the synchronous side: runs on a worker thread only ----------------------------------------


def _open(path: str, keep: int) -> tuple[sqlite3.Connection, Snapshot]:
    """Open (or create) the file, check its format and every row, and load it."""
    try:
        conn = sqlite3.connect(
            path, timeout=LOCK_WAIT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open state file {path}: {exc}{_os_reason(path)}") from None
    try:
        return conn, _prepare_and_load(conn, path, keep)
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc):
            raise StoreError(f"state file {path} is in use by another process") from None
        raise StoreError(f"cannot use state file {path}: {exc}{_os_reason(path)}") from None
    except (sqlite3.Error, Corrupt) as exc:
        conn.close()
        raise StoreError(f"state file {path} is corrupt: {exc}") from None
    except BaseException:
        conn.close()
        raise


def _os_reason(path: str) -> str:
    """Why the system would not open the file, as far as opening its directory tells: SQLite's
    "unable to open database file" is the same for a missing directory, no permission and no
    file descriptor left (EMFILE), and each has its own remedy."""
    try:
        os.close(os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY))
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0)
        return f": {exc.strerror}" + (f" ({name})" if name else "")
    return ""


def _prepare_and_load(conn: sqlite3.Connection, path: str, keep: int) -> Snapshot:
    version = _prepare(conn, path)
    snapshot = _load(conn, keep, version)
    if version < SCHEMA_VERSION:  # checked and loaded: only now may the file change
        _transaction(conn, lambda: _upgrade(conn, version))
    return snapshot


def _prepare(conn: sqlite3.Connection, path: str) -> int:
    """Check the file's format and set it up; returns the format it had (0: it was empty)."""
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # one stepline per file
    version = conn.execute("PRAGMA user_version").fetchone()[0]  # "file is not a database"
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"state file {path} has format {version}, newer than this stepline reads "
            f"({SCHEMA_VERSION}): use a newer stepline, or another file"
        )
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if version == 0 and tables:
        raise StoreError(f"{path} is an SQLite database but not a stepline state file")
    check = conn.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        raise StoreError(f"state file {path} is corrupt: {check}")
    if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] != "wal":
        raise StoreError(f"state file {path}: cannot switch to WAL mode")
    conn.execute("PRAGMA synchronous = FULL")  # a commit survives power loss, not just a crash
    if version == 0:
        _transaction(conn, lambda: [conn.execute(statement) for statement in _SCHEMA])
        return SCHEMA_VERSION
    return int(version)


def _upgrade(conn: sqlite3.Connection, version: int) -> None:
    if version == 1:
        conn.execute(_EVENTS)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _load(conn: sqlite3.Connection, keep: int, version: int) -> Snapshot:
    """Read and check everything; writes nothing (the store prunes in its first commit)."""
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    cursor = decode_cursor(meta.get("delivered"))
    undelivered: list[LoggedEvent] = []
    newest = 0  # the last event of the rows read so far
    if version >= 2:
        for row in conn.execute("SELECT seq, body FROM events ORDER BY seq"):
            run = decode_event_run(*row, after=newest)
            newest = run[-1][0]
            undelivered += [(seq, data) for seq, data in run if seq > cursor]
    last_seq = max(cursor, newest)
    templates = dict(decode_template(*row) for row in conn.execute("SELECT * FROM templates"))
    unfinished: list[StoredJob] = []
    query = "SELECT id, name, state, request, elapsed, result FROM jobs WHERE fin IS NULL"
    for row in conn.execute(query + " ORDER BY rowid"):
        job = decode_job(*row)
        if job.request is None:
            raise Corrupt(f"job {job.id} is {job.state} but has no finish number")
        unfinished.append(job)
    top = conn.execute("SELECT max(fin) FROM jobs").fetchone()[0] or 0
    finished = []
    query = "SELECT id, name, state, request, elapsed, result FROM jobs WHERE fin > ?"
    for row in conn.execute(query + " ORDER BY fin", (top - keep,)):
        job = decode_job(*row)
        if job.request is not None:
            raise Corrupt(f"job {job.id} is {job.state} but has a finish number")
        finished.append(job)
    objects: dict[str, dict[str, Any]] = {}
    for kind, key, body in conn.execute("SELECT kind, key, body FROM objects"):
        objects.setdefault(str(kind), {})[str(key)] = decode_json(body, f"object {kind}/{key}")
    next_id = decode_next_id(meta.get("next_id"))
    return Snapshot(
        next_id, templates, unfinished, finished, objects, int(top), undelivered, last_seq
    )


def _commit(conn: sqlite3.Connection, batch: Batch) -> None:
    """Write one batch in one transaction (an all-or-nothing group commit).

    It begins with one ``executescript`` (:func:`_opening`): the ``BEGIN``, the counters and
    the delete of delivered events, which take no parameter but integers. CPython's sqlite3
    gives up the GIL and takes it back five times for each ``execute`` (statement, step, last
    row id, reset) and once per statement of a script; each taking back waits for the event
    loop to let go of the GIL, up to the switch interval (5 ms) while it runs (NOTES.md,
    "--state throughput", Session 9). A script must not run inside our transaction: it commits
    a pending one first, hence only at the start.
    """
    _transaction(conn, lambda: _apply(conn, batch), _opening(batch))


def _opening(batch: Batch) -> str:
    """``BEGIN IMMEDIATE``, then the batch's statements whose values are only integers, written
    into the script with ``:d`` (integers only: no text from outside, nothing to quote): the
    counters that moved, and the delete of the events up to the delivery cursor (written
    before this batch, so before its own events are appended; :data:`_APPEND_EVENTS` also
    checks them against the cursor)."""
    statements = ["BEGIN IMMEDIATE"]
    counters = [("next_id", batch.next_id), ("delivered", batch.delivered)]
    rows = ", ".join(f"('{key}', {value:d})" for key, value in counters if value)
    if rows:
        statements.append("INSERT OR REPLACE INTO meta VALUES " + rows)
    if batch.delivered:
        statements.append(f"DELETE FROM events WHERE seq <= {batch.delivered:d}")
    return ";".join(statements)


def _transaction(conn: sqlite3.Connection, body: Any, opening: str = "BEGIN IMMEDIATE") -> None:
    """Run ``body`` in one transaction, begun by the script ``opening`` (``BEGIN IMMEDIATE``,
    then any statements to run first: see :func:`_commit`); rolled back on any error."""
    try:
        conn.executescript(opening)
        body()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, batch: Batch) -> None:
    """The batch's writes, in as few statements as they take: each one gives up the GIL and
    takes it back from the event loop, which cost milliseconds of a commit's latency whatever
    the statement did (NOTES.md, "--state throughput")."""
    if batch.inserts:
        _insert_jobs(conn, batch.inserts)
    if batch.done:
        _insert_done(conn, batch.done)
    if batch.updates:
        _update_jobs(conn, batch.updates)
    if batch.prune_to is not None and batch.prune_to > 0:  # else no finish number is that low
        conn.execute("DELETE FROM jobs WHERE fin <= ?", (batch.prune_to,))
    if batch.events:
        _append_events(conn, batch.events)
    if batch.templates:
        conn.executemany("INSERT OR REPLACE INTO templates VALUES (?, ?)", batch.templates)
    for kind, key, body in batch.objects:
        if body is None:
            conn.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (kind, key))
        else:
            conn.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)", (kind, key, body))


def _append_events(conn: sqlite3.Connection, events: list[LoggedEvent]) -> None:
    """A commit's events as one row, keyed by the last ``seq``; they must follow every stored
    event and each other without a gap (the store numbers each commit's events so).

    Each run's lines are counted once (its first ``seq`` is its last minus its lines, plus
    one): the count is a pass over every byte of every event, made with the GIL held, which
    the event loop then waits for (NOTES.md, "--state throughput", Session 8).
    """
    starts = [last - lines.count(b"\n") + 1 for last, lines in events]
    first = expected = starts[0]
    for start, (last, lines) in zip(starts, events, strict=True):
        if start != expected or not lines.endswith(b"\n"):
            raise ValueError(f"the events {first}..{last} are not numbered one after another")
        expected = last + 1
    last = expected - 1
    body = events[0][1] if len(events) == 1 else b"".join(lines for _, lines in events)
    if conn.execute(_APPEND_EVENTS, (last, body, first)).rowcount != 1:
        raise ValueError(f"event {first} is not after the stored events")


_APPEND_EVENTS: Final = """
    INSERT INTO events SELECT ?1, ?2 WHERE ?3 > max(
        (SELECT coalesce(max(seq), 0) FROM events),
        (SELECT coalesce(max(value), 0) FROM meta WHERE key = 'delivered')
    )
"""
"""A commit's events row, if its first event follows every stored one and the delivery cursor
(the events up to the cursor were deleted already, at the transaction's start)."""


# Rows are bound without None and with JSON as text: Python's sqlite3 binds int, float and str
# directly but looks every other value (None, bytes) up in its adapter registry first, which
# cost more than the insert itself (NOTES.md, Durable state). Readers take either type.


def _insert_jobs(conn: sqlite3.Connection, inserts: Sequence[NewJob]) -> None:
    """New jobs, queued, in acceptance order (their rowid order)."""
    for named, run in groupby(inserts, key=lambda row: row[1] is not None):
        if named:
            conn.executemany(
                "INSERT INTO jobs (id, name, request, state) VALUES (?, ?, ?, 'queued')",
                [(job_id, name, request.decode()) for job_id, name, request in run],
            )
        else:
            conn.executemany(
                "INSERT INTO jobs (id, request, state) VALUES (?, ?, 'queued')",
                [(job_id, request.decode()) for job_id, _, request in run],
            )


_DONE_CHUNKS: Final = tuple(2**k for k in range(10, -1, -1))
_INSERT_DONE: Final = {
    rows: "INSERT INTO jobs (id, name, request, state, elapsed, result, fin)"
    " SELECT column1, nullif(column2, 0), column3, 'succeeded', 0.0, column4, column5"
    " FROM (VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * rows) + ") WHERE column5 > 0"
    for rows in _DONE_CHUNKS
}
"""Statements inserting up to 1024, 512, ..., 1 finished rows at once: a row whose finish
number (the fifth value) is 0 is padding and not inserted. Those with more parameters than
the SQLite library takes (32,766 since 3.32, 999 before) are not used. Each is prepared once
per process, at its first use, for about 3.3k instructions a row (SQLite parses every
``(?, ?, ?, ?, ?)``): the statements up to 4,096 rows cost 27M instructions on the writer
thread, a third of its work in a run of 20,000 jobs; those up to 1,024, 6.7M."""


def _insert_done(conn: sqlite3.Connection, done: list[Any]) -> None:
    """Jobs that succeeded at once, final from the start, as :data:`DONE_FIELDS` items each.

    Many rows per statement, and few statements per commit: every statement gives up the GIL
    (around each ``sqlite3_step``) and must take it back from the event loop, which costs up to
    the switch interval (5 ms) whenever the loop is busy (NOTES.md, "--state throughput",
    Session 8). So the rows go in chunks of the largest statement, and what is left in one
    statement of the next power of two, padded with rows of zeros that its ``WHERE`` skips
    (zeros bind as cheaply as any integer; one statement per commit, not one per bit of the
    row count). The parameters are bound straight from the flat list: no object per row on
    this thread. A name of 0 is none (``nullif``: a name is text, never the integer 0), since
    binding ``None`` looks it up in the adapter registry first.
    """
    rows, start = len(done) // DONE_FIELDS, 0
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // DONE_FIELDS
    largest = next(chunk for chunk in _DONE_CHUNKS if chunk <= most)
    while rows >= largest:
        end = start + largest * DONE_FIELDS
        conn.execute(_INSERT_DONE[largest], done[start:end] if start or end < len(done) else done)
        start, rows = end, rows - largest
    if rows:
        chunk = 1 << (rows - 1).bit_length()  # the smallest statement that takes them all
        padding = [0] * ((chunk - rows) * DONE_FIELDS)
        conn.execute(_INSERT_DONE[chunk], (done[start:] if start else done) + padding)


def _update_jobs(conn: sqlite3.Connection, updates: Mapping[str, JobUpdate]) -> None:
    """New states. An unfinished job's elapsed, result and finish number are NULL already: no
    state goes back from final, and final rows are only ever deleted."""
    final, unfinished = [], []
    for job_id, (state, elapsed, result, fin) in updates.items():
        if fin is None:
            unfinished.append((state, job_id))
        else:
            final.append((state, elapsed, encode_json(result).decode(), fin, job_id))
    if unfinished:
        conn.executemany("UPDATE jobs SET state = ? WHERE id = ?", unfinished)
    if final:
        conn.executemany(
            "UPDATE jobs SET state = ?, elapsed = ?, result = ?, fin = ? WHERE id = ?", final
        )
