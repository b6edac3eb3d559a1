"""Durable state for ``stepline serve --state PATH``: one SQLite file, written in batches.

What is recorded, and when:

* a job, *before* its ``accepted`` is written: its id, its name, and the request that rebuilds it
  (the raw job JSON, the submit's ``params``, and the definitions of the templates it uses, so a
  template redefined later cannot change a job already accepted). State ``queued``.
* each state change, as the job table makes it (:class:`~stepline.engine._jobs.TableObserver`):
  ``running`` when a worker takes the job; the final state with its output or error when it
  finishes. A job's ``finished`` *event* is held back until that record is committed, so a
  ``finished`` a driver has seen is never contradicted by a rerun after a crash. ``started`` is
  not held (its ``progress``/``log`` events follow at once); with ``--on-restart fail`` the worker
  instead waits for the ``running`` record before the steps begin (``write_ahead_start``), so a
  job that had begun is failed as ``interrupted`` after a crash, never run a second time.
* templates, on ``define``; the job id counter, so no id is ever handed out twice.

**Why batches.** A commit in WAL mode with ``synchronous=FULL`` costs one ``fsync`` (about a
millisecond: NOTES.md, "Durable state") whatever it carries; a row costs a few microseconds. So
nothing commits alone: every write goes into the batch being filled, and one writer task commits the
whole batch in one transaction while the next batch fills (group commit). Producers never wait,
except a submit, which must see its job durable before ``accepted`` — and many submits share one
commit.

**Why a trio task plus ``trio.to_thread.run_sync`` with a ``CapacityLimiter(1)``**, rather than a
long-lived thread fed by a queue: the batch is filled by synchronous calls from the job table
(which must not block or take locks: its transitions are atomic because they never ``await``),
and only the trio thread ever touches it — no cross-thread queue, no locks, no ``from_thread``
callbacks to wake waiters. The thread does nothing but blocking SQLite I/O, one hop per batch, so
the event loop never blocks on the disk. The limiter makes "one connection, used by one thread at a
time" a structural fact (open, commits and close all go through it); since trio's thread cache
may hand the work to a different OS thread, the connection is opened with
``check_same_thread=False``, which is safe exactly because of that limiter. Cancellation is
simple too: a commit in flight always completes (``to_thread`` does not abandon it).

**The file.** ``PRAGMA user_version`` holds the format (:data:`SCHEMA_VERSION`); a newer, foreign
or corrupt file is refused with a :class:`StoreError` (the CLI exits with status 2), never reset.
The connection holds SQLite's exclusive lock, so a second ``stepline serve`` on the same file is
refused too. ``--keep N`` bounds the finished rows kept, as it bounds the records in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import orjson
import trio
from attrs import define, field, frozen

from .._errors import InvalidJob, StoreFailed
from ..engine._jobs import Job, JobState
from ..spec._model import JobSpec, Use
from ..wire._events import EmitFn, Event, RequestId

__all__ = [
    "SCHEMA_VERSION",
    "Snapshot",
    "StagedJob",
    "Store",
    "StoreError",
    "StoreFailed",
    "StoredJob",
    "encode_request",
]

log = logging.getLogger("stepline")

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value);
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,        -- j1, j2, ...; rowid order is acceptance order
    name TEXT,
    request BLOB NOT NULL,      -- JSON {{"job", "params", "templates"?}}: enough to validate again
    state TEXT NOT NULL,        -- queued, running, or a final state
    elapsed REAL,               -- final states only
    result BLOB,                -- final states only: JSON output (succeeded) or error
    fin INTEGER                 -- finish order 1, 2, ...: --keep keeps the highest
);
CREATE INDEX jobs_fin ON jobs (fin) WHERE fin IS NOT NULL;
CREATE TABLE templates (name TEXT PRIMARY KEY, job BLOB NOT NULL);
-- The hook for schedules and alerts: one row per object, its body as JSON.
CREATE TABLE objects (
    kind TEXT NOT NULL, key TEXT NOT NULL, body BLOB NOT NULL, PRIMARY KEY (kind, key)
);
PRAGMA user_version = {SCHEMA_VERSION};
"""

_UNFINISHED: Final = frozenset(("queued", "running"))
_FINAL: Final = frozenset(("succeeded", "failed", "cancelled", "timed_out"))


class StoreError(Exception):
    """The state file cannot be used: foreign, corrupt, newer, locked, unreadable."""


# -- what a state file holds ------------------------------------------------------------------


@frozen
class StoredJob:
    """One job row, as loaded at start."""

    id: str
    name: str | None
    state: str
    request: Any = None  # decoded for unfinished jobs only: finished ones never run again
    elapsed: float = 0.0
    result: Any = None  # output if succeeded, else the error object


@frozen
class Snapshot:
    """Everything a previous run left, as loaded at start."""

    next_id: int = 1
    templates: dict[str, Any] = field(factory=dict)
    unfinished: list[StoredJob] = field(factory=list)  # acceptance order
    finished: list[StoredJob] = field(factory=list)  # finish order, at most ``keep``
    objects: dict[str, dict[str, Any]] = field(factory=dict)  # kind -> key -> body
    last_fin: int = 0  # the finish number of the newest finished row


@frozen
class StagedJob:
    """A submit that passed validation and holds a queue slot and a job id, and whose record is
    being written. It becomes a job once batch ``gen`` is committed (``Executor.settle``)."""

    job_id: str
    spec: JobSpec
    name: str | None
    request_id: RequestId
    extra: dict[str, Any]
    gen: int


def encode_request(
    raw: Any, params: Mapping[str, Any] | None, spec: JobSpec, templates: Mapping[str, Any]
) -> bytes:
    """The stored form of a submit: enough to validate the same job again after a restart.

    Why not the spec itself: re-validating the raw JSON keeps the file independent of the spec
    classes (new step kinds need no codec), at the cost of keeping the templates the job used.
    """
    body: dict[str, Any] = {"job": raw, "params": dict(params or {})}
    try:
        data = orjson.dumps(body)
        if b'"use"' in data:  # cheap pre-check: only then walk the spec for the templates used
            used = sorted(_templates_used(spec))
            body["templates"] = {name: templates[name] for name in used if name in templates}
            data = orjson.dumps(body)
    except TypeError as exc:  # only an embedding program can pass non-JSON values
        raise InvalidJob("", f"the job cannot be recorded in the state file: {exc}") from None
    return data


def _templates_used(node: object) -> set[str]:
    """Names of every template a validated spec expanded, at any depth (generic over attrs)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, Use):
            found.add(item.template)
        if attrs.has(type(item)):
            stack.extend(getattr(item, f.name) for f in attrs.fields(type(item)))  # type: ignore[arg-type]
        elif isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, Mapping):
            stack.extend(v for v in item.values() if attrs.has(type(v)))
    return found


# -- the synchronous side: runs on the worker thread only --------------------------------------


def _open(path: str, keep: int) -> tuple[sqlite3.Connection, Snapshot]:
    """Open (or create) the file, check its format, and load it. Raises :class:`StoreError`."""
    try:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open state file {path}: {exc}") from None
    try:
        _prepare(conn, path)
        return conn, _load(conn, keep)
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc):
            raise StoreError(f"state file {path} is in use by another process") from None
        raise StoreError(f"cannot use state file {path}: {exc}") from None
    except (sqlite3.Error, ValueError, TypeError, KeyError) as exc:
        conn.close()
        raise StoreError(f"state file {path} is corrupt: {exc}") from None
    except BaseException:
        conn.close()
        raise


def _prepare(conn: sqlite3.Connection, path: str) -> None:
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
        conn.executescript(_SCHEMA)


def _load(conn: sqlite3.Connection, keep: int) -> Snapshot:
    conn.execute("BEGIN IMMEDIATE")
    try:
        top = conn.execute("SELECT max(fin) FROM jobs").fetchone()[0] or 0
        conn.execute("DELETE FROM jobs WHERE fin <= ?", (top - keep,))  # --keep may be smaller
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    templates = {name: json.loads(job) for name, job in conn.execute("SELECT * FROM templates")}
    unfinished: list[StoredJob] = []
    finished: list[tuple[int, StoredJob]] = []
    query = "SELECT id, name, state, request, elapsed, result, fin FROM jobs ORDER BY rowid"
    for job_id, name, state, request, elapsed, result, fin in conn.execute(query):
        if state in _UNFINISHED:
            unfinished.append(StoredJob(job_id, name, state, request=json.loads(request)))
        elif state in _FINAL:
            job = StoredJob(job_id, name, state, None, float(elapsed), json.loads(result))
            finished.append((int(fin), job))
        else:
            raise ValueError(f"job {job_id} has unknown state {state!r}")
    finished.sort(key=lambda pair: pair[0])
    objects: dict[str, dict[str, Any]] = {}
    for kind, key, body in conn.execute("SELECT kind, key, body FROM objects"):
        objects.setdefault(kind, {})[key] = json.loads(body)
    next_id = int(meta.get("next_id", 1))
    return Snapshot(next_id, templates, unfinished, [job for _, job in finished], objects, top)


@define
class _Batch:
    """Writes waiting for the next commit; filled on the trio thread, written on the worker."""

    gen: int
    dirty: bool = False
    inserts: list[tuple[str, str | None, bytes]] = field(factory=list)
    # job id -> (state, elapsed, result, fin): a later change of the same job replaces an
    # earlier one in the same batch (started then finished: one UPDATE)
    updates: dict[str, tuple[str, float | None, Any, int | None]] = field(factory=dict)
    templates: list[tuple[str, bytes]] = field(factory=list)
    objects: list[tuple[str, str, bytes | None]] = field(factory=list)
    held: list[Event] = field(factory=list)  # `finished` events, written once this commits
    next_id: int = 0
    prune_to: int | None = None  # delete finished rows with ``fin`` up to this


def _commit(conn: sqlite3.Connection, batch: _Batch) -> None:
    """Write one batch in one transaction (an all-or-nothing group commit)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _apply(conn, batch)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, batch: _Batch) -> None:
    if batch.inserts:
        conn.executemany(
            "INSERT INTO jobs (id, name, request, state) VALUES (?, ?, ?, 'queued')", batch.inserts
        )
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('next_id', ?)", (batch.next_id,))
    if batch.updates:
        conn.executemany(
            "UPDATE jobs SET state = ?, elapsed = ?, result = ?, fin = ? WHERE id = ?",
            [
                (state, elapsed, None if fin is None else _dump(result), fin, job_id)
                for job_id, (state, elapsed, result, fin) in batch.updates.items()
            ],
        )
    if batch.prune_to is not None:
        conn.execute("DELETE FROM jobs WHERE fin <= ?", (batch.prune_to,))
    if batch.templates:
        conn.executemany("INSERT OR REPLACE INTO templates VALUES (?, ?)", batch.templates)
    for kind, key, body in batch.objects:
        if body is None:
            conn.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (kind, key))
        else:
            conn.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?)", (kind, key, body))


def _dump(value: Any) -> bytes:
    """JSON for a job's output or error; like the outbox, repair rather than fail the batch."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, default=str).encode()


# -- the trio side ----------------------------------------------------------------------------


class Store:
    """The state file of one ``stepline serve``: a batching writer and the snapshot loaded at start.

    Create with :meth:`open`, run :meth:`run` in a nursery, :meth:`bind` it to the executor
    (the executor does this when given a store), and :meth:`aclose` it after the last job.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        snapshot: Snapshot,
        *,
        keep: int,
        path: str,
        write_ahead_start: bool = False,
        limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.path = path
        # With --on-restart fail a job's steps begin only once its `running` record is durable,
        # so a job that had begun is never run again after a crash (at most once); with rerun
        # nothing waits, since a job cut off runs again either way (at least once).
        self.write_ahead_start = write_ahead_start
        self.snapshot = snapshot
        self._conn = conn
        self._keep = keep
        self._limiter = limiter or trio.CapacityLimiter(1)  # one connection, one user at a time
        self._batch = _Batch(gen=1)
        self._durable = 0  # every batch up to this one is committed
        self._fin = snapshot.last_fin  # finish numbers continue above the loaded rows
        self._emit: EmitFn = _unbound
        self._next_number: Callable[[], int] = lambda: snapshot.next_id
        self._wake = trio.lowlevel.ParkingLot()  # the writer, waiting for a dirty batch
        self._committed = trio.lowlevel.ParkingLot()  # submits waiting for their commit
        self._closing = False
        self.commits = 0  # transactions committed: many writes each (see the module docstring)
        self._failure: str | None = None  # set once: no more writes are attempted
        self.closed = trio.Event()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], *, keep: int = 1000, write_ahead_start: bool = False
    ) -> Store:
        """Open or create the state file and load it; raises :class:`StoreError`."""
        name = os.fspath(path)
        limiter = trio.CapacityLimiter(1)
        conn, snapshot = await trio.to_thread.run_sync(_open, name, keep, limiter=limiter)
        return cls(
            conn,
            snapshot,
            keep=keep,
            path=name,
            write_ahead_start=write_ahead_start,
            limiter=limiter,
        )

    def bind(self, emit: EmitFn, next_number: Callable[[], int]) -> None:
        """Where held ``finished`` events go, and where the id counter is read from."""
        self._emit = emit
        self._next_number = next_number

    # -- writes: synchronous, never blocking; each returns the batch it joined -------------------

    def add_job(self, job_id: str, name: str | None, request: bytes) -> int:
        """A new job, queued. Its submit awaits :meth:`wait_durable` before ``accepted``."""
        if self._failure is not None:
            raise StoreFailed(self._failure)
        self._batch.inserts.append((job_id, name, request))
        return self._touch()

    def put_template(self, name: str, job: Any) -> int:
        self._batch.templates.append((name, orjson.dumps(job)))
        return self._touch()

    def put_object(self, kind: str, key: str, body: Any) -> int:
        """The hook for schedules and alerts: store (or, with ``None``, delete) one object."""
        data = None if body is None else orjson.dumps(body)
        self._batch.objects.append((kind, key, data))
        return self._touch()

    def requeued(self, job: Job) -> None:
        """A job found running after a crash goes back to the queue to run again."""
        self._set_state(job, "queued")

    # -- the job table's observer ---------------------------------------------------------------

    def on_started(self, job: Job) -> None:
        self._set_state(job, "running")

    def on_finished(self, job: Job, event: Event) -> None:
        """Record the outcome; its ``finished`` event is written once the outcome is durable."""
        if self._failure is not None or self.closed.is_set():
            self._emit(event)  # nothing is recorded any more: at least never lose the event
            return
        self._fin += 1
        result = job.output if job.state is JobState.SUCCEEDED else job.error
        self._batch.updates[job.id] = (job.state.value, job.elapsed, result, self._fin)
        self._batch.prune_to = self._fin - self._keep
        self._batch.held.append(event)
        self._touch()

    # -- durability -------------------------------------------------------------------------------

    def is_durable(self, gen: int) -> bool:
        return gen <= self._durable

    @property
    def failure(self) -> str:
        """Why writes stopped ("" while they work)."""
        return self._failure or ""

    async def wait_durable(self, gen: int) -> None:
        """Return once batch ``gen`` is committed; raise :class:`StoreFailed` if it never will."""
        while gen > self._durable:
            if self._failure is not None:
                raise StoreFailed(self._failure)
            await self._committed.park()

    async def sync(self) -> None:
        """Wait until every write made so far is committed."""
        # A clean current batch may still follow one being written (taken, not yet durable):
        # wait for that one (gen - 1), not just for what is already durable.
        await self.wait_durable(self._batch.gen if self._batch.dirty else self._batch.gen - 1)

    async def wait_recorded(self) -> None:
        """Like :meth:`sync`, but a broken store does not stop jobs (it was logged already)."""
        with contextlib.suppress(StoreFailed):
            await self.sync()

    # -- the writer task ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until closed; then close the connection. Sets :attr:`closed`."""
        task_status.started()
        try:
            while self._batch.dirty or not self._closing:
                if not self._batch.dirty:
                    await self._wake.park()
                    continue
                await self._write(self._take())
        finally:
            log.debug("state file %s: %d commits", self.path, self.commits)
            self._stop()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._conn.close, limiter=self._limiter)
            self.closed.set()

    async def aclose(self) -> None:
        """Commit what is pending, release the held events, and close the file."""
        self._closing = True
        self._wake.unpark_all()
        await self.closed.wait()

    def _take(self) -> _Batch:
        batch = self._batch
        batch.next_id = self._next_number()
        self._batch = _Batch(gen=batch.gen + 1)
        return batch

    async def _write(self, batch: _Batch) -> None:
        if self._failure is None:
            try:
                await trio.to_thread.run_sync(_commit, self._conn, batch, limiter=self._limiter)
            except Exception as exc:  # disk full, I/O error, or a bug: stop writing, say why
                self._failure = f"the state file {self.path} cannot be written: {exc}"
                log.exception("%s; jobs now run without durable state", self._failure)
            else:
                self._durable = batch.gen
                self.commits += 1
        for event in batch.held:  # after a failure too: a finished event is never lost
            self._emit(event)
        self._committed.unpark_all()

    def _stop(self) -> None:
        """The writer ends (closed, or cancelled by a hard stop): release every waiter."""
        if self._failure is None:
            self._failure = "stepline is shutting down"
        self._committed.unpark_all()

    def _set_state(self, job: Job, state: str) -> None:
        if self._failure is None:
            self._batch.updates[job.id] = (state, None, None, None)
            self._touch()

    def _touch(self) -> int:
        batch = self._batch
        if not batch.dirty:
            batch.dirty = True
            self._wake.unpark_all()
        return batch.gen


def _unbound(event: Event) -> None:
    raise RuntimeError("Store.bind was not called: finished events have nowhere to go")
