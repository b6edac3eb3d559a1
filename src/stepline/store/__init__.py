"""Durable state: the store seam, its backends (SQLite, in-memory), recovery and durable submits.

The seam is :class:`Backend` (open → snapshot, commit a batch, close): see
:mod:`stepline.store._backend`. :class:`Store` is the part every backend shares (the batching
writer); :mod:`._admit` and :mod:`._pipeline` make submits durable before they are accepted;
:mod:`._recovery` puts a snapshot back to work at start.
"""

from ._backend import Backend
from ._memory import MemoryBackend
from ._model import Batch, Snapshot, StoredJob, StoreError
from ._store import Store, backend_for

__all__ = [
    "Backend",
    "Batch",
    "MemoryBackend",
    "Snapshot",
    "Store",
    "StoreError",
    "StoredJob",
    "backend_for",
]
