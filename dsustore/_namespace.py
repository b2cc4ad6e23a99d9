"""Namespaces: the whole object graph of a database as one transaction sees it.

The paper's namespace holds every global object of the application; in ZODB that is
the root mapping and everything reachable from it, seen through one Connection. The
namespace being built is the patch's own connection; the old one is a historical
connection fixed at the transaction the update started from. A history-free storage
keeps no older states to serve it, so there the old one reads through the patch
connection's own snapshot, which is that transaction (:func:`read_at_snapshot`).
"""

from __future__ import annotations

from typing import Any

from ZODB.interfaces import IMVCCStorage
from ZODB.utils import p64, tid_repr, u64

from ._scan import keeps_history, last_committed


class Namespace:
    """The database's object graph as one connection sees it."""

    def __init__(self, connection: Any, *, tid: bytes | None, historical: bool) -> None:
        self.connection = connection
        self.tid = tid
        self.historical = historical

    @property
    def root(self) -> Any:
        """The root mapping (read-only in the old namespace)."""
        return self.connection.root()

    def get(self, oid: bytes) -> Any:
        """The object with this oid in this namespace."""
        return self.connection.get(oid)

    def __repr__(self) -> str:
        kind = "old" if self.historical else "new"
        at = tid_repr(self.tid) if self.tid else "?"
        return f"<Namespace {kind} at {at}>"


def snapshot_tid(connection: Any) -> bytes:
    """The id of the last transaction an open connection sees."""
    connection.root()  # establish the connection's view
    before = getattr(connection, "before", None)
    if before is not None:
        return p64(u64(before) - 1)
    storage = connection._normal_storage
    start = getattr(storage, "_start", None)
    if start is not None:
        return p64(u64(start) - 1)
    if IMVCCStorage.providedBy(storage):
        # RelStorage: each connection's instance polls its own snapshot; the DB's
        # instance is brought up to it, or ZODB refuses a historical connection there
        last_transaction(connection.db())
        return storage.lastTransaction()
    return connection.db().lastTransaction()


def last_transaction(db: Any) -> bytes:
    """The id of the last transaction committed to ``db``, asked afresh.

    ``db.lastTransaction()`` answers from the DB's own storage, which can lag: on an
    MVCC storage (RelStorage) that instance keeps the snapshot it last polled, and a
    ZEO client hears of other clients' commits asynchronously.
    """
    return last_committed(db.storage)


def committed_tid(connection: Any) -> bytes:
    """The id of the transaction a connection has just committed."""
    storage = connection._normal_storage
    ltid = getattr(storage, "_ltid", None)
    if ltid is None and IMVCCStorage.providedBy(storage):
        ltid = storage.lastTransaction()  # RelStorage: the instance's own last commit
    return ltid or connection.db().lastTransaction()


class _StorageLayer:
    """A connection's storage with its loads answered another way; the rest passes through."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


class _OverlaidStorage(_StorageLayer):
    """A connection's storage whose loads read a frozen savepoint store first."""

    def __init__(self, storage: Any, frozen: Any) -> None:
        super().__init__(storage)
        self._frozen = frozen

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        if oid in self._frozen:
            return self._frozen.load(oid)
        return self._storage.load(oid)


class _SnapshotStorage(_StorageLayer):
    """A historical connection's storage whose loads read another storage instance's snapshot."""

    def __init__(self, storage: Any, snapshot: Any) -> None:
        super().__init__(storage)
        self._snapshot = snapshot

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        return self._snapshot.load(oid)


def read_at_snapshot(connection: Any, view: Any) -> None:
    """Make a historical ``connection`` on a history-free storage load through ``view``.

    ``view`` is an open connection whose snapshot is the historical one's tid. A
    history-free storage has no state older than the current one, so the historical
    connection fails with ``POSKeyError`` on any object written after its tid; an
    open RelStorage connection reads as of the snapshot it polled until its
    transaction ends (the scan relies on the same). Other storages are left alone.
    """
    snapshot = view._normal_storage
    if not keeps_history(snapshot):
        connection._storage = _SnapshotStorage(connection._storage, snapshot)


def overlay(connection: Any, frozen: Any) -> None:
    """Make a (historical) connection see the uncommitted writes ``frozen`` holds.

    A later stage of a patch reads the state the earlier stages built, which exists
    only in the patch's savepoint storage until the single commit.
    """
    connection._storage = _OverlaidStorage(connection._storage, frozen)


def remove_overlay(connection: Any) -> None:
    """Undo :func:`overlay` and :func:`read_at_snapshot` before the connection goes back to
    its pool."""
    while isinstance(connection._storage, _StorageLayer):
        connection._storage = connection._storage._storage
