"""Namespaces: the whole object graph of a database as one transaction sees it.

The paper's namespace holds every global object of the application; in ZODB that is
the root mapping and everything reachable from it, seen through one Connection. The
namespace being built is the patch's own connection; the old one is a historical
connection fixed at the transaction the update started from.
"""

from __future__ import annotations

from typing import Any

from ZODB.utils import p64, tid_repr, u64


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
    start = getattr(connection._storage, "_start", None)
    if start is not None:
        return p64(u64(start) - 1)
    before = getattr(connection, "before", None)
    if before is not None:
        return p64(u64(before) - 1)
    return connection.db().lastTransaction()


def committed_tid(connection: Any) -> bytes:
    """The id of the transaction a connection has just committed."""
    ltid = getattr(connection._normal_storage, "_ltid", None)
    return ltid or connection.db().lastTransaction()


class _OverlaidStorage:
    """A connection's storage whose loads read a frozen savepoint store first."""

    def __init__(self, storage: Any, frozen: Any) -> None:
        self._storage = storage
        self._frozen = frozen

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        if oid in self._frozen:
            return self._frozen.load(oid)
        return self._storage.load(oid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)


def overlay(connection: Any, frozen: Any) -> None:
    """Make a (historical) connection see the uncommitted writes ``frozen`` holds.

    A later stage of a patch reads the state the earlier stages built, which exists
    only in the patch's savepoint storage until the single commit.
    """
    connection._storage = _OverlaidStorage(connection._storage, frozen)


def remove_overlay(connection: Any) -> None:
    """Undo :func:`overlay` before the connection goes back to its pool."""
    storage = connection._storage
    if isinstance(storage, _OverlaidStorage):
        connection._storage = storage._storage
