"""The in-memory backend: the store seam's reference implementation, for tests.

It keeps what was committed in plain dictionaries, stored as the same JSON bytes the SQLite file
holds and read back through the same checks (:mod:`stepline.store._decode`), so what passes
here behaves the same on disk. A restart is a new :class:`~stepline.store._store.Store` opened
on the same backend: whatever the previous store had not committed is gone, exactly as after a
SIGKILL. :attr:`MemoryBackend.failing` makes commits fail (a full disk) until it is cleared.
"""

from __future__ import annotations

from typing import Any

import trio

from ._decode import (
    Corrupt,
    decode_cursor,
    decode_event,
    decode_job,
    decode_json,
    decode_next_id,
    decode_template,
    encode_json,
)
from ._model import DONE_FIELDS, Batch, Snapshot, StoredJob, StoreError

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """A :class:`~stepline.store._backend.Backend` that lives as long as this object."""

    def __init__(self) -> None:
        # job id -> [name, request, state, elapsed, result, fin]; insertion order = acceptance
        self.jobs: dict[str, list[Any]] = {}
        self.templates: dict[str, bytes] = {}
        self.objects: dict[tuple[str, str], bytes] = {}
        self.next_id: int | None = None
        self.events: dict[int, bytes] = {}  # the event log: seq -> line, above the cursor only
        self.delivered: int | None = None  # the delivery cursor
        self.commits = 0
        self.failing: Exception | None = None  # raised by every commit while set
        self.is_open = False

    @property
    def description(self) -> str:
        return "in-memory state"

    async def open(self, keep: int) -> Snapshot:
        await trio.lowlevel.checkpoint()
        if self.is_open:
            raise StoreError("in-memory state is in use by another store")
        try:
            snapshot = self._load(keep)
        except Corrupt as exc:
            raise StoreError(f"in-memory state is corrupt: {exc}") from None
        self.is_open = True
        return snapshot

    def _load(self, keep: int) -> Snapshot:
        unfinished: list[tuple[int, StoredJob]] = []
        finished: list[tuple[int, StoredJob]] = []
        for job_id, (name, request, state, elapsed, result, fin) in self.jobs.items():
            job = decode_job(job_id, name, state, request, elapsed, result)
            (unfinished if fin is None else finished).append((fin or 0, job))
        top = max((fin for fin, _ in finished), default=0)
        finished.sort(key=lambda pair: pair[0])
        templates = dict(decode_template(name, job) for name, job in self.templates.items())
        objects: dict[str, dict[str, Any]] = {}
        for (kind, key), body in self.objects.items():
            objects.setdefault(kind, {})[key] = decode_json(body, f"object {kind}/{key}")
        cursor = decode_cursor(self.delivered)
        log = [decode_event(seq, data) for seq, data in sorted(self.events.items())]
        return Snapshot(
            decode_next_id(self.next_id),
            templates,
            [job for _, job in unfinished],
            [job for fin, job in finished if fin > top - keep],
            objects,
            top,
            [(seq, data) for seq, data in log if seq > cursor],
            max([cursor, *self.events]),
        )

    async def commit(self, batch: Batch) -> None:
        await trio.lowlevel.checkpoint()
        if self.failing is not None:
            raise self.failing
        jobs = {job_id: list(row) for job_id, row in self.jobs.items()}  # all or nothing
        lines = [line for run in batch.events for line in _lines(*run)]
        if any(seq in self.events for seq, _ in lines):
            raise ValueError("an event with this sequence number exists already")
        if lines and lines[0][0] <= max(self.delivered or 0, batch.delivered):
            raise ValueError("an event with this sequence number was delivered already")
        numbers = [seq for seq, _ in lines]
        if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
            raise ValueError("a commit's events are not numbered one after another")
        for job_id, name, request in batch.inserts:
            if job_id in jobs:
                raise ValueError(f"job {job_id} exists already")  # as a primary key would
            jobs[job_id] = [name, request, "queued", None, None, None]
        for i in range(0, len(batch.done), DONE_FIELDS):
            job_id, name, request, output, fin = batch.done[i : i + DONE_FIELDS]
            if job_id in jobs:
                raise ValueError(f"job {job_id} exists already")
            jobs[job_id] = [
                None if isinstance(name, int) else name,
                request,
                "succeeded",
                0.0,
                output.encode(),
                fin,
            ]
        for job_id, (state, elapsed, result, fin) in batch.updates.items():
            encoded = None if fin is None else encode_json(result)
            jobs[job_id][2:] = [state, elapsed, encoded, fin]
        if batch.prune_to is not None:
            limit = batch.prune_to
            jobs = {k: row for k, row in jobs.items() if row[5] is None or row[5] > limit}
        self.jobs = jobs
        self.templates.update(batch.templates)
        for kind, key, body in batch.objects:
            if body is None:
                self.objects.pop((kind, key), None)
            else:
                self.objects[kind, key] = body
        if batch.next_id:
            self.next_id = batch.next_id
        events = {**self.events, **dict(lines)}
        if batch.delivered:
            self.delivered = batch.delivered
            events = {seq: data for seq, data in events.items() if seq > batch.delivered}
        self.events = events
        self.commits += 1

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self.is_open = False


def _lines(last: int, run: bytes) -> list[tuple[int, bytes]]:
    """A run of consecutive events (``LoggedEvent``) as one (seq, line) each, unchecked (as a
    file would store them: the checks are at open)."""
    lines = run.splitlines(keepends=True)
    first = last - len(lines) + 1
    return [(first + i, line) for i, line in enumerate(lines)]
