"""What a store holds, as values: the snapshot loaded at start and the batch written per commit.

These are the nouns of the store seam (:mod:`stepline.store._backend`): a backend turns a
:class:`Batch` into one all-or-nothing commit, and its stored state back into a
:class:`Snapshot`. They know nothing of how either is kept.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

from attrs import define, field, frozen

__all__ = [
    "DONE_FIELDS",
    "FINAL",
    "UNFINISHED",
    "Batch",
    "JobUpdate",
    "LoggedEvent",
    "NewJob",
    "Snapshot",
    "StoreError",
    "StoredJob",
]

UNFINISHED: Final = frozenset(("queued", "running", "cancelling"))
"""``cancelling``: a running job whose cancel was requested; recovery finishes it ``cancelled``."""
FINAL: Final = frozenset(("succeeded", "failed", "cancelled", "timed_out"))


class StoreError(Exception):
    """The store cannot be used: foreign, corrupt, newer, locked, unreadable.

    Raised at start only (by :meth:`Backend.open`), never once jobs run: the CLI prints it and
    exits with status 2, and nothing is reset.
    """


@frozen
class StoredJob:
    """One job, as loaded at start."""

    id: str
    name: str | None
    state: str
    request: Any = None  # unfinished jobs only: {"job", "params", "templates"?, "id"?}, checked
    elapsed: float = 0.0
    result: Any = None  # finished jobs only: output if succeeded, else the error object


@frozen
class Snapshot:
    """Everything a previous run left, as loaded at start."""

    next_id: int = 1
    templates: dict[str, Any] = field(factory=dict)
    unfinished: list[StoredJob] = field(factory=list)  # acceptance order
    finished: list[StoredJob] = field(factory=list)  # finish order, the newest ``keep`` only
    objects: dict[str, dict[str, Any]] = field(factory=dict)  # kind -> key -> body
    last_fin: int = 0  # the finish number of the newest finished job
    # The event log: events committed but not known to be written to stdout (seq order), and
    # the newest sequence number ever used (the next event gets last_seq + 1).
    undelivered: list[LoggedEvent] = field(factory=list)
    last_seq: int = 0


LoggedEvent: TypeAlias = tuple[int, bytes]
"""Entries of the event log: (seq, events as consecutive encoded JSON lines, each ending in a
newline), ``seq`` the number of the last line (the ones before it are seq - 1, seq - 2, ...).
A snapshot's are one line each; a batch's are one run per commit. Sequence numbers start at 1
and only grow, across restarts."""

DONE_FIELDS: Final = 5
"""Items per job in :attr:`Batch.done`: id, name (0: none), request (JSON text), output (JSON
text), fin. Flat, not a tuple per job: a trivial job is one of these, and every tuple kept until
the commit counts towards the next cycle collection."""

NewJob: TypeAlias = tuple[str, "str | None", bytes]
"""A job accepted in this batch: (id, name, request), the request as :func:`encode_request`
made it. It is stored as ``queued``."""

JobUpdate: TypeAlias = tuple[str, "float | None", Any, "int | None"]
"""A job's new state: (state, elapsed, result, fin). ``elapsed``, ``result`` and ``fin`` (its
finish number, 1, 2, ...: ``--keep`` keeps the highest) are set for final states only."""


@define
class Batch:
    """Writes that become durable together, in one commit (all or nothing).

    Filled by the store on the trio thread; a backend only reads it. Within a batch a job's later
    state replaces an earlier one (started, then finished: one update), and a job inserted in
    this batch may also be updated in it. A job in ``done`` is inserted final, never updated.
    """

    gen: int  # 1, 2, ...: batches commit in this order, one at a time
    dirty: bool = False  # anything to write at all
    inserts: list[NewJob] = field(factory=list)
    # Jobs accepted and succeeded at once (bare values): final rows, :data:`DONE_FIELDS` each.
    done: list[Any] = field(factory=list)
    updates: dict[str, JobUpdate] = field(factory=dict)  # job id -> its newest state
    templates: list[tuple[str, bytes]] = field(factory=list)  # (name, job as JSON), upserts
    objects: list[tuple[str, str, bytes | None]] = field(factory=list)  # (kind, key, body|None)
    next_id: int = 0  # the job id counter (the number in the next id ``j<n>``)
    prune_to: int | None = None  # delete finished jobs with a finish number up to this
    # The event log (the transactional outbox): events appended in this commit, in seq order,
    # and the delivery cursor: every event up to this seq was written to stdout, so the backend
    # may forget them (0: the cursor did not move).
    events: list[LoggedEvent] = field(factory=list)
    delivered: int = 0
