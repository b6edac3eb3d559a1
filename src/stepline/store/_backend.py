"""The store seam: where durable state is kept, behind three calls.

A :class:`~stepline.store._store.Store` does everything that is the same whatever keeps the
state: it fills a :class:`~stepline.store._model.Batch` from the job table's transitions, commits
one batch at a time while the next fills (group commit), wakes what waits for durability, and
turns a snapshot back into work at start. A :class:`Backend` only keeps the state::

    snapshot = await backend.open(keep)     # once: load (and create) the state, or StoreError
    await backend.commit(batch)             # any number of times, one at a time, in gen order
    await backend.aclose()                  # once, after the last commit

Two backends ship: :class:`~stepline.store._sqlite.SqliteBackend` (``--state PATH``, the
embedded default) and :class:`~stepline.store._memory.MemoryBackend` (in this process only: the
tests of the seam, and a reference for what a backend must do). A new backend (PostgreSQL, say)
implements these three calls, passes the same contract tests (``tests/store/test_backends.py``),
and is picked by :func:`~stepline.store._store.backend_for` from the ``--state`` value.
"""

from __future__ import annotations

from typing import Protocol

from ._model import Batch, Snapshot

__all__ = ["Backend"]


class Backend(Protocol):
    """Keeps a store's state: loads it as a :class:`Snapshot`, writes :class:`Batch` es.

    The contract, which the store relies on and the contract tests check:

    * ``open(keep)`` is called once, before anything else. It creates the state if there is
      none, checks that what exists is this format and intact, and returns it, with at most the
      ``keep`` most recently finished jobs. It **never writes before every row is checked**: a
      refused state stays exactly as it was. A crash while creating leaves either nothing or a
      complete empty state. Every problem is a :class:`~stepline.store._model.StoreError`
      saying what is wrong, never another exception.
    * ``commit(batch)`` makes the whole batch durable, or nothing of it, and raises if it could
      not (a full disk, say). Commits never overlap. After a failed commit the backend must
      accept the next one: the store retries what failed (merged into a later batch).
    * The event log: ``commit`` appends ``batch.events`` (each ``(seq, line)``: an event as
      the one JSON line it is written as) in the same transaction as the rest of the batch, and
      moves the delivery cursor to ``batch.delivered`` when that is not 0; events up to the
      cursor may then be forgotten. ``open`` returns the events above the cursor, in ``seq``
      order (``Snapshot.undelivered``), and the highest ``seq`` ever committed or the cursor,
      whichever is higher (``Snapshot.last_seq``), so sequence numbers never repeat. A ``seq``
      committed twice fails the commit, as a duplicate job id does, and so do a batch's events
      not numbered one after another (the store numbers each commit's events without a gap, so
      a backend may keep them together, as the SQLite one keeps one row per commit).
    * ``aclose()`` releases the state (a second process may then open it).

    Calls may block on I/O; a backend runs them off the event loop (a worker thread) and must
    not let a cancellation abandon a commit half made.
    """

    @property
    def description(self) -> str:
        """What this is, for messages: ``state file /var/lib/jobs.db``."""
        ...

    async def open(self, keep: int) -> Snapshot:
        """Load (creating if needed) and check the state; raises ``StoreError``."""
        ...

    async def commit(self, batch: Batch) -> None:
        """Write one batch, all or nothing; raises if it could not."""
        ...

    async def aclose(self) -> None:
        """Release the state. Called once, after the last commit."""
        ...
