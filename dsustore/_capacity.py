"""Will the update's commit fit in PostgreSQL's lock table? Ask before starting.

RelStorage on PostgreSQL locks every object a transaction modifies with one
advisory lock (and every object it read with ``readCurrent`` with a shared one),
all taken at commit and all held in the server's shared lock table. That table
holds ``max_locks_per_transaction * (max_connections + max_prepared_transactions)``
locks for all sessions together -- what PostgreSQL guarantees; in practice a little
more fits (at the default 64 × 100, 12,000 objects commit and 13,000 fail). Past
that the commit fails with "out of shared memory", after the whole pass has run.

So a patch on such a storage compares, before the pass, the fewest objects the
update will write (the stored instances of the classes its per-instance operations
name, counted with one SQL query) and, right before committing, the objects it
actually wrote, with that capacity, and refuses with :class:`CapacityError` naming
the setting and the value to set. Splitting the update into several transactions
would break its atomicity, so it does not. Other storages have no such limit: the
check returns at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._record import key_of
from .errors import DSUError

SETTING = "max_locks_per_transaction"

#: the capacity asked for is this much more than the update needs (other sessions lock too)
HEADROOM = 1.25


class CapacityError(DSUError):
    """The update modifies more objects than the database server can lock in one commit."""

    def __init__(self, message: str, *, objects: int, capacity: int, setting: str,
                 current: int, needed: int) -> None:
        self.objects = objects
        self.capacity = capacity
        self.setting = setting
        self.current = current
        self.needed = needed
        super().__init__(message)

    def facts(self) -> dict[str, Any]:
        facts = super().facts()
        facts.update(objects=self.objects, capacity=self.capacity, setting=self.setting,
                     current=self.current, needed=self.needed)
        return facts


@dataclass(frozen=True)
class LockCapacity:
    """The PostgreSQL settings that size the shared lock table."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int

    @property
    def slots(self) -> int:
        """How many locks the table is guaranteed to hold (for all sessions)."""
        return self.max_locks_per_transaction * (self.max_connections
                                                 + self.max_prepared_transactions)

    def needed_setting(self, objects: int) -> int:
        """The ``max_locks_per_transaction`` that holds ``objects`` locks with headroom."""
        per_slot = math.ceil(objects * HEADROOM / (self.max_connections
                                                   + self.max_prepared_transactions))
        return max(64, math.ceil(per_slot / 64) * 64)


def check_lock_capacity(db: Any, *, operations: Iterable[Any] | None = None,
                        connection: Any = None) -> None:
    """Raise :class:`CapacityError` if the update cannot commit on ``db``'s PostgreSQL server.

    With ``operations`` (before the pass), the objects counted are the stored
    instances of the classes the per-instance operations and class renames name:
    each is written, so more than the capacity cannot commit. With ``connection``
    (before the commit), they are the objects the connection is about to commit:
    the records in its savepoint storage not created by it, plus objects changed or
    read with ``readCurrent`` since. Returns at once unless ``db`` is RelStorage on
    PostgreSQL.
    """
    adapter = _postgresql_adapter(db.storage)
    if adapter is None:
        return
    classes = _written_classes(operations) if operations is not None else []
    capacity, counted = adapter.connmanager.open_and_call(
        lambda _conn, cursor: (_settings(cursor), _count_instances(cursor, adapter, classes)))
    if connection is not None:
        objects = _modified_objects(connection)
        when = "its commit would lock"
    else:
        objects = counted
        when = "it writes at least"
    if objects <= capacity.slots:
        return
    needed = capacity.needed_setting(objects)
    raise CapacityError(
        f"this update cannot commit in one transaction on this PostgreSQL server: {when} "
        f"{objects:,} objects, and RelStorage takes one lock per object while the server's "
        f"lock table holds {capacity.slots:,} ({SETTING} {capacity.max_locks_per_transaction} "
        f"x (max_connections {capacity.max_connections} + max_prepared_transactions "
        f"{capacity.max_prepared_transactions})); set {SETTING} = {needed} in postgresql.conf "
        "and restart the server, then run the update again. Nothing was written.",
        objects=objects, capacity=capacity.slots, setting=SETTING,
        current=capacity.max_locks_per_transaction, needed=needed)


def lock_capacity(db: Any) -> LockCapacity | None:
    """The lock table settings of ``db``'s PostgreSQL server; None for other storages."""
    adapter = _postgresql_adapter(db.storage)
    if adapter is None:
        return None
    return adapter.connmanager.open_and_call(lambda _conn, cursor: _settings(cursor))


def _postgresql_adapter(storage: Any) -> Any:
    adapter = getattr(storage, "_adapter", None)
    if adapter is None or not type(adapter).__module__.startswith("relstorage.adapters.postgresql"):
        return None
    return adapter


def _settings(cursor: Any) -> LockCapacity:
    cursor.execute("SELECT current_setting('max_locks_per_transaction')::int, "
                   "current_setting('max_connections')::int, "
                   "current_setting('max_prepared_transactions')::int")
    return LockCapacity(*cursor.fetchone())


def _written_classes(operations: Iterable[Any]) -> list[str]:
    """Stored class names whose every instance the update writes."""
    names: set[str] = set()
    for op in operations:
        if getattr(op, "per_instance", False):
            names.update(op.targets())
        old_name = getattr(op, "old_name", None)  # a class rename rewrites its instances
        if old_name is not None:
            names.add(old_name)
    return sorted(names)


def _count_instances(cursor: Any, adapter: Any, classes: list[str]) -> int:
    """Current records whose class is exactly one of ``classes``, in one query.

    A ZODB record starts with the pickle protocol header and a GLOBAL opcode naming
    the class (``c`` module newline name newline), so the class is a fixed prefix of
    the state from its third byte.
    """
    if not classes:
        return 0
    prefixes = [b"c" + key_of(dotted) + b"\n" for dotted in classes]
    table = ("current_object JOIN object_state USING (zoid, tid)" if adapter.keep_history
             else "object_state")
    matches = " OR ".join("substring(state from 3 for %s) = %s" for _ in prefixes)
    params: list[Any] = []
    for prefix in prefixes:
        params += [len(prefix), prefix]
    cursor.execute(f"SELECT count(*) FROM {table} WHERE {matches}", params)
    return int(cursor.fetchone()[0])


def _modified_objects(connection: Any) -> int:
    """Existing objects the connection's commit will lock (new ones take no lock)."""
    store = connection._storage
    index = getattr(store, "index", {})
    created = getattr(store, "creating", {})
    written = len(index) - sum(1 for oid in created if oid in index)
    return written + len(connection._registered_objects) + len(connection._readCurrent)
