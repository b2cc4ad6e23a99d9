"""What dsustore does to ZODB connections beyond their public API, in one place.

A patch migrates records below the object level: it writes into its connection's
savepoint storage, decodes records with the connection's own reference loader,
flushes objects policies changed without a full savepoint, and gives connections
other ways to load (the state an earlier stage built, another instance's
snapshot). Each of these needs an attribute ZODB keeps private; they are all named
here, and :mod:`dsustore.storage.internals` checks each one exists in the
installed ZODB.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import transaction as transaction_module
from transaction.interfaces import NoTransaction


@contextmanager
def private_connection(db: Any, *, at: bytes | None = None) -> Iterator[tuple[Any, Any]]:
    """A connection with its own explicit transaction manager; aborted and closed on exit.

    With ``at``, a historical connection seeing the database as of that transaction.
    """
    tm = transaction_module.TransactionManager(explicit=True)
    _private.add(tm)
    tm.begin()
    conn = db.open(transaction_manager=tm, at=at) if at is not None else \
        db.open(transaction_manager=tm)
    try:
        yield conn, tm
    finally:
        abort_quietly(tm)
        conn.close()


_private: weakref.WeakSet[Any] = weakref.WeakSet()


def is_private(conn: Any) -> bool:
    """Whether ``conn`` is one of dsustore's own short-lived connections (not the
    application's)."""
    return conn.transaction_manager in _private


@contextmanager
def reading(db: Any) -> Iterator[Any]:
    """A fresh connection's root, in a transaction of its own that is always aborted."""
    with private_connection(db) as (conn, _tm):
        yield conn.root()


def abort_quietly(tm: Any) -> None:
    """Abort ``tm``'s transaction, if it still has one (committed ones have none)."""
    with suppress(NoTransaction):
        tm.abort()


def join(conn: Any) -> None:
    """Join ``conn`` to its transaction now, so a savepoint taken next covers its writes."""
    if conn._needs_to_join:
        conn.transaction_manager.get().join(conn)
        conn._needs_to_join = False


def cache_of(conn: Any) -> Any:
    """The connection's object cache (a ``PickleCache``: get, new_ghost, invalidate...)."""
    return conn._cache


def reset_cache(conn: Any) -> None:
    """Give ``conn`` an empty cache now (it must not be in use by another thread)."""
    conn._resetCache()


_boundary_lock = threading.Lock()
_BOUNDARY_KEY = "_dsustore_at_boundary"


def at_transaction_boundary(conn: Any, action: Callable[[Any], bool]) -> None:
    """Run ``action(conn)`` at each of ``conn``'s next transaction boundaries until it
    returns True.

    A boundary is where ZODB applies the invalidations other transactions sent
    (``newTransaction``: ``begin``, the end of a transaction when the transaction
    manager is implicit, and ``open``). The action runs in the thread that owns the
    connection, after ZODB has ghosted what changed, before the new transaction
    reads anything: nothing in a running transaction changes under it.
    """
    with _boundary_lock:
        actions = conn.__dict__.get(_BOUNDARY_KEY)
        if actions is None:
            actions = conn.__dict__[_BOUNDARY_KEY] = []
            conn.newTransaction = _boundary_hook(conn, type(conn).newTransaction)
        actions.append(action)


def _boundary_hook(conn: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    def new_transaction(transaction: Any = None, sync: bool = True) -> None:
        original(conn, transaction, sync)
        with _boundary_lock:
            actions = list(conn.__dict__.get(_BOUNDARY_KEY, ()))
        done = [action for action in actions if action(conn)]
        with _boundary_lock:
            left = [a for a in conn.__dict__.get(_BOUNDARY_KEY, ()) if a not in done]
            if left:
                conn.__dict__[_BOUNDARY_KEY] = left
            else:
                conn.__dict__.pop(_BOUNDARY_KEY, None)
                conn.__dict__.pop("newTransaction", None)

    return new_transaction


def ghostify_unchanged(conn: Any) -> None:
    """Turn every object of ``conn``'s cache that has no pending change into a ghost,
    keeping its identity: its next access reloads it."""
    conn._cache.minimize()


def set_class(obj: Any, klass: type) -> None:
    """Give a persistent object, ghost or loaded, the class ``klass`` without loading it.

    ``obj.__class__ = klass`` would go through the object's ``__setattr__``, which
    loads a ghost and marks the object changed; the descriptor underneath does not.
    Raises TypeError where the two classes' layouts differ.
    """
    _CLASS_SLOT.__set__(obj, klass)


_CLASS_SLOT = object.__dict__["__class__"]


def registered_objects(conn: Any) -> list[Any]:
    """Objects changed through ``conn`` since its last savepoint or flush."""
    return list(conn._registered_objects)


def has_changes(conn: Any) -> bool:
    """Whether code wrote through ``conn`` (changed or added objects) in this transaction."""
    return bool(conn._registered_objects or conn._added)


def flush_changes(conn: Any) -> list[bytes]:
    """Store the objects changed through ``conn`` into its savepoint storage; their oids.

    This is what ``Connection.savepoint()`` does, without the savepoint object: a
    savepoint copies the whole savepoint index each time, which would make a long
    pass quadratic. New objects they reach are recorded as created.
    """
    registered = conn._registered_objects
    if not registered:
        return []
    oids = [obj._p_oid for obj in registered if obj._p_oid is not None]
    conn._creating.clear()
    conn._commit(None)
    conn._storage.creating.update(conn._creating)
    conn._creating.clear()
    conn._registered_objects = []
    return oids


def read_current_count(conn: Any) -> int:
    """How many objects ``conn`` marked with ``readCurrent`` in this transaction."""
    return len(conn._readCurrent)


def savepoint_store(conn: Any) -> Any:
    """Where ``conn`` writes now: its savepoint storage once a savepoint was taken."""
    return conn._storage


def instance_of(conn: Any) -> Any:
    """The storage instance behind ``conn`` (its MVCC view of the storage)."""
    return conn._normal_storage


def persistent_load(conn: Any) -> Callable[[Any], Any]:
    """How ``conn`` turns a persistent reference into a ghost (for decoding records)."""
    return conn._reader._persistent_load


def reader_of(conn: Any) -> Any:
    """The object reader ``conn`` loads states with."""
    return conn._reader


def set_reader(conn: Any, reader: Any) -> None:
    """Make ``conn`` load states with ``reader`` (an ``ObjectReader``)."""
    conn._reader = reader


def pooled_connections(db: Any) -> list[Any]:
    """Every open or pooled connection of ``db``."""
    return list(db.pool.all)


# -- other ways to load --------------------------------------------------------------


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


def load_through(connection: Any, view: Any) -> None:
    """Make ``connection`` load every record as ``view``, another open connection, sees it."""
    connection._storage = _SnapshotStorage(connection._storage, view._normal_storage)


def overlay(connection: Any, frozen: Any) -> None:
    """Make a (historical) connection see the uncommitted writes ``frozen`` holds.

    A later stage of a patch reads the state the earlier stages built, which exists
    only in the patch's savepoint storage until the single commit.
    """
    connection._storage = _OverlaidStorage(connection._storage, frozen)


def remove_layers(connection: Any) -> None:
    """Undo :func:`overlay` and :func:`load_through` before the connection goes back to
    its pool."""
    while isinstance(connection._storage, _StorageLayer):
        connection._storage = connection._storage._storage
