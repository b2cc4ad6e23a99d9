"""Namespaces: the whole object graph of a database as one transaction sees it.

The paper's namespace holds every global object of the application; in ZODB that is
the root mapping and everything reachable from it, seen through one Connection. The
namespace being built is the patch's own connection; the old one is a historical
connection fixed at the transaction the update started from (on a history-free
storage, which keeps no older states, it reads through the patch connection's own
snapshot: see :meth:`dsustore.storage.StorageAdapter.historical_view`).
"""

from __future__ import annotations

from typing import Any

from ZODB.utils import tid_repr


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
