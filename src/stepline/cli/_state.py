"""``stepline run --state FILE``: a batch that picks up where it was when stepline died.

Without ``--state`` a run lives in memory: if ``stepline run`` is killed (SIGKILL, an OOM
kill, a reboot), running the same command again runs every job again. With ``--state FILE`` the
batch is kept in an SQLite file (the store of ``stepline serve --state``), and running the same
command again *resumes* it:

* a job that **succeeded** in an earlier run is not run again: its result line is shown from the
  file, marked ``(earlier run)``;
* a job that was **queued or running** when stepline died runs (again) from the start, as
  ``serve --state`` with ``--on-restart rerun`` does;
* a job that **failed**, timed out or was cancelled runs again, and so does every job the file
  does not know yet.

A job is known by its *key*: its label (file, line and name) and a digest of what it runs (the
job as written, ``--params``, ``--timeout`` and the templates it may use). Editing a job or its
file's line order makes it a new job; a job of an earlier batch whose key is not in this one and
that had not finished is cancelled. To start a batch afresh, delete the file.

Why the key is kept twice: each submit carries its key as its request ``id``, which the store
keeps with an unfinished job (so a job accepted just before the crash is still found), and a
``run`` object maps key to job id for finished jobs, whose stored record keeps no request. The
object is committed in the batch after the job's own, so a crash between the two finds the job
by its request alone.

Logs and ``created``/``started`` times are not kept in the file (see docs/state.md): a resumed
job's earlier result has its output, error and elapsed time only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

from ..client._api import EmbeddedExecutor, FanOutOutbox, JobHandle
from ..client._durable import FanOutSink, run_durable
from ..client._feeds import Feed
from ..engine._executor import Config, Executor
from ..engine._jobs import Job, JobState
from ..store._recovery import Recovered, restore
from ..store._store import Store
from ..triggers._attach import Triggers
from ..wire._events import Event
from ._jobfiles import Entry

__all__ = ["Batch", "job_key", "open_batch"]

OBJECT_KIND: Final = "run"
"""The kind of the store objects that map a job's key to its job id."""

MIN_KEEP: Final = 1000
"""Finished records kept at least; a batch keeps twice its jobs, so a result is never pruned
before the batch that made it runs again."""


def job_key(entry: Entry, extra: Mapping[str, Any]) -> str:
    """The key that finds ``entry`` in a later run of the same batch (see the module doc)."""
    body = json.dumps({"job": entry.job, **extra}, sort_keys=True, separators=(",", ":"))
    return f"{entry.label}#{hashlib.sha256(body.encode()).hexdigest()[:16]}"


class Batch:
    """What a ``--state`` file knows of this batch: earlier results and jobs to follow again."""

    def __init__(self, store: Store, executor: Executor, fanout: FanOutOutbox) -> None:
        self._store = store
        self._executor = executor
        self._fanout = fanout
        known = store.snapshot.objects.get(OBJECT_KIND, {})
        self._ids: dict[str, str] = {key: str(body.get("job")) for key, body in known.items()}
        self._recovered: dict[str, Recovered] = {}
        self._feeds: dict[str, Feed] = {}

    def adopt(self, plan: list[Recovered], keys: set[str]) -> list[Recovered]:
        """Of the jobs the last run left unfinished, those of this batch (returned, to be
        resumed, each already followed); the others are cancelled now, before they run."""
        kept = []
        for item in plan:
            key = item.request_id
            if isinstance(key, str) and key in keys:
                self._ids[key] = item.job.id
                self._recovered[key] = item
                self._feeds[key] = self._fanout.watch(item.job.id)
                kept.append(item)
            elif item.job.state is JobState.QUEUED:
                self._executor.table.cancel(item.job, "cancelled: not in this batch any more")
            else:  # restored as running only to be finished at once by resume()
                kept.append(item)
        return kept

    def earlier(self, key: str) -> JobHandle | None:
        """A handle of this key's job when an earlier run left it unfinished (resumed now) or
        finished it successfully; None when it must be submitted."""
        recovered = self._recovered.get(key)
        if recovered is not None:
            return JobHandle(recovered.job, self._feeds[key], self._executor)
        job = self._job(key)
        if job is None or job.state is not JobState.SUCCEEDED:
            return None
        return JobHandle(job, _finished_feed(job, key), self._executor)

    async def submit(self, key: str, job: Any, params: Mapping[str, Any] | None) -> JobHandle:
        """Submit a job of the batch under its key, and remember the key."""
        record = await self._executor.submit(job, params=params, request_id=key)
        self._ids[key] = record.id
        self._store.put_object(OBJECT_KIND, key, {"job": record.id})
        return JobHandle(record, self._fanout.feed(record.id), self._executor)

    def _job(self, key: str) -> Job | None:
        job_id = self._ids.get(key)
        if job_id is None:
            return None
        try:
            return self._executor.table.get(job_id)
        except LookupError:
            return None  # pruned, or never committed


def _finished_feed(job: Job, key: str) -> Feed:
    """A feed holding only the ``finished`` the earlier run wrote (its time now: the file does
    not keep it), marked ``earlier``, with the key as its submit ``id``."""
    feed = Feed(job.id, 16)
    finished: Event = {
        "event": "finished",
        "ts": time.time(),
        "job": job.id,
        "state": job.state.value,
        "elapsed": job.elapsed,
        "output": job.output,
        "id": key,
        "earlier": True,
    }
    feed.append(finished)
    return feed


@asynccontextmanager
async def open_batch(
    path: str, keys: Sequence[str], **settings: Any
) -> AsyncIterator[tuple[EmbeddedExecutor, Batch]]:
    """:func:`stepline.open_executor` over the ``--state`` file at ``path`` (raises
    ``StoreError`` when it cannot be used), with the :class:`Batch` it holds for ``keys``."""
    store = await Store.open(path, keep=max(MIN_KEEP, 2 * len(keys)))
    fanout = FanOutOutbox()
    executor = Executor(Config(**settings), store.sequence(FanOutSink(fanout)))
    Triggers.attach(executor)
    store.attach(executor)
    batch = Batch(store, executor, fanout)
    plan = batch.adopt(restore(executor, store.snapshot, "rerun"), set(keys))
    async with run_durable(store, executor, plan):
        yield EmbeddedExecutor(executor, fanout), batch
