"""ZEO: a client of a storage server, where every read is a round trip.

A scan walks the server's ``record_iternext``; what other clients commit is learnt
from the invalidations the server sends every client (:class:`ChangeRecorder`)
instead of reading the transaction log back over the network; objects about to
be loaded one by one are prefetched in one request.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from ZODB.utils import p64, u64

from .adapter import Record, StorageAdapter, iternext_records
from .connections import instance_of


class ZEOAdapter(StorageAdapter):
    """A ``ZEO.ClientStorage.ClientStorage``."""

    kind = "zeo"
    scans_are_remote = True

    @classmethod
    def accepts(cls, storage: Any) -> bool:
        module = sys.modules.get("ZEO.ClientStorage")  # not imported: no client exists
        return module is not None and isinstance(storage, module.ClientStorage)

    @property
    def keeps_history(self) -> bool:
        return True

    def last_committed(self) -> bytes:
        """A client hears of other clients' commits asynchronously; a round trip to the
        server (``ping``) makes sure it has heard of every one before it answers."""
        self.storage.ping()
        return self.storage.lastTransaction()

    def current_records(self, *, at: bytes | None = None, view: Any = None) -> Iterator[Record]:
        return iternext_records(self.storage, at or self.last_committed(), history=True)

    def change_recorder(self, conn: Any) -> ChangeRecorder:
        return ChangeRecorder(instance_of(conn))

    def prefetch(self, oids: list[bytes]) -> None:
        """Ask the server for them all at once (into the client cache), not a round trip each."""
        if oids:
            self.storage.prefetch(oids, p64(u64(self.storage.lastTransaction()) + 1))


class ChangeRecorder:
    """The oids other transactions commit, as a connection's MVCC view hears of them.

    A ZEO client is told of every commit (to invalidate its caches); recording
    those messages answers "what changed since" without reading the transaction
    log back over the network, one round trip per record. If the view is told
    to drop everything (a reconnect), the recorder no longer knows and says so.
    """

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._commits: list[tuple[bytes, tuple[bytes, ...]]] = []
        self.lost = False
        invalidate, invalidate_all = instance._invalidate, instance._invalidateCache
        with instance._lock:  # commits heard since the view's snapshot, before this was installed
            heard, start = instance._invalidations, getattr(instance, "_start", None)
            if heard is None or start is None:
                self.lost = True
            elif heard:
                self._commits.append((start, tuple(heard)))

        def _invalidate(tid: bytes, oids: Any) -> None:
            self._commits.append((tid, tuple(oids)))
            invalidate(tid, oids)

        def _invalidate_cache() -> None:
            self.lost = True
            invalidate_all()

        instance._invalidate = _invalidate
        instance._invalidateCache = _invalidate_cache

    def changed(self, since: bytes, upto: bytes) -> list[bytes] | None:
        """Oids committed after ``since`` up to ``upto``; None once the recorder lost track."""
        if self.lost:
            return None
        low, high = u64(since), u64(upto)
        oids: dict[bytes, None] = {}
        for tid, committed in list(self._commits):
            if low < u64(tid) <= high:
                oids.update(dict.fromkeys(committed))
        return list(oids)

    def remove(self) -> None:
        """Give the view its own methods back."""
        self._instance.__dict__.pop("_invalidate", None)
        self._instance.__dict__.pop("_invalidateCache", None)
