"""The storage layer: one adapter per storage, and every ZODB internal dsustore relies on.

Layers above ask :func:`adapter_for` for the adapter of a database (chosen once per
storage) and never which storage they talk to: FileStorage, ZEO, RelStorage
history-preserving or history-free, or, for any other ``IStorage``, the generic
adapter. :mod:`.connections`, :mod:`.pickles` and :mod:`.savepoints` hold what
dsustore does below ZODB's public API; :mod:`.internals` lists each private
attribute they use, so a release of ZODB that drops one fails a test by name.
"""

from __future__ import annotations

import weakref
from typing import Any

from ZODB.DB import DB

from .adapter import LockCapacity, Record, StorageAdapter, closed_after
from .filestorage import FileStorageAdapter
from .relstorage import HistoryFreeRelStorage, HistoryPreservingRelStorage
from .zeo import ZEOAdapter

#: the adapters, most specific first; the generic one takes any storage
ADAPTERS: tuple[type[StorageAdapter], ...] = (
    FileStorageAdapter,
    ZEOAdapter,
    HistoryPreservingRelStorage,
    HistoryFreeRelStorage,
    StorageAdapter,
)

#: the adapter of each open database (it holds the storage, not the database)
_chosen: weakref.WeakKeyDictionary[DB, StorageAdapter] = weakref.WeakKeyDictionary()


def adapter_for(db_or_storage: Any) -> StorageAdapter:
    """The adapter of a ``ZODB.DB``'s storage, chosen once per database (or of a bare storage)."""
    if not isinstance(db_or_storage, DB):
        return _choose(db_or_storage)
    adapter = _chosen.get(db_or_storage)
    if adapter is None or adapter.storage is not db_or_storage.storage:
        adapter = _chosen[db_or_storage] = _choose(db_or_storage.storage)
    return adapter


def _choose(storage: Any) -> StorageAdapter:
    for adapter in ADAPTERS:
        if adapter.accepts(storage):
            return adapter(storage)
    raise AssertionError("the generic adapter accepts every storage")


__all__ = [
    "ADAPTERS",
    "FileStorageAdapter",
    "HistoryFreeRelStorage",
    "HistoryPreservingRelStorage",
    "LockCapacity",
    "Record",
    "StorageAdapter",
    "ZEOAdapter",
    "adapter_for",
    "closed_after",
]
