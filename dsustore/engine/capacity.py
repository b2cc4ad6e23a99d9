"""Will the update's commit fit in the database server's lock table? Ask before starting.

RelStorage on PostgreSQL locks every object a transaction modifies with one
advisory lock (and every object it read with ``readCurrent`` with a shared one),
all taken at commit and all held in the server's shared lock table. PostgreSQL
sizes that table at start for ``max_locks_per_transaction`` locks per server
process (``max_connections``, and the autovacuum, background-worker and WAL-sender
processes) and prepared transaction, for all sessions together; when it is full it
grows into the server's free shared memory, as far as what else uses that memory
allows. Past that the commit fails with "out of shared memory", after the whole
pass has run. (At PostgreSQL 15's defaults the table is sized for 64 x 122 = 7,808
locks, and one session takes about 12,800.)

So a patch on such a storage compares, before the pass, the fewest objects the
update will write (the stored instances of the classes its per-instance operations
name, counted by the storage adapter) and, right before committing, the objects it
actually wrote, with that capacity: more than the table is sized for are tried
(the adapter takes that many locks in a transaction it rolls back), and refused
with :class:`CapacityError` naming the setting and the value to set if they do not
fit. Splitting the update into several transactions would break its atomicity, so
it does not. Storages without such a limit have no lock capacity: the check returns
at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..errors import CapacityError
from ..mop.records import key_of
from ..storage import LockCapacity, adapter_for
from ..storage.connections import read_current_count, registered_objects, savepoint_store

SETTING = "max_locks_per_transaction"

#: the capacity asked for is this much more than the update needs (other sessions lock too)
HEADROOM = 1.25


def needed_setting(capacity: LockCapacity, objects: int) -> int:
    """The ``max_locks_per_transaction`` whose table alone holds ``objects`` locks with
    headroom (without counting on the free shared memory it may grow into)."""
    per_slot = math.ceil(objects * HEADROOM / capacity.sessions)
    return max(64, math.ceil(per_slot / 64) * 64)


def check_lock_capacity(db: Any, *, operations: Iterable[Any] | None = None,
                        connection: Any = None) -> None:
    """Raise :class:`CapacityError` if the update cannot commit on ``db``'s server.

    With ``operations`` (before the pass), the objects counted are the stored
    instances of the classes the per-instance operations and class renames name:
    each is written, so more than the capacity cannot commit. With ``connection``
    (before the commit), they are the objects the connection is about to commit:
    the records in its savepoint storage not created by it, plus objects changed or
    read with ``readCurrent`` since.
    """
    adapter = adapter_for(db)
    capacity = adapter.lock_capacity()
    if capacity is None:
        return
    if connection is not None:
        objects = _modified_objects(connection)
        when = "its commit would lock"
    else:
        classes = _written_classes(operations or ())
        objects = adapter.count_instances(key_of(name) for name in classes) if classes else 0
        when = "it writes at least"
    if objects <= capacity.slots or adapter.locks_fit(objects):
        return
    needed = needed_setting(capacity, objects)
    raise CapacityError(
        f"this update cannot commit in one transaction on this PostgreSQL server: {when} "
        f"{objects:,} objects, and RelStorage takes one lock per object while the server's "
        f"lock table is sized for {capacity.slots:,} ({SETTING} "
        f"{capacity.max_locks_per_transaction} x (max_connections {capacity.max_connections} "
        f"+ {capacity.other_processes} other server processes + max_prepared_transactions "
        f"{capacity.max_prepared_transactions})) and the free shared memory it grows into "
        f"does not hold {objects:,} locks now; set {SETTING} = {needed} in postgresql.conf "
        "and restart the server, then run the update again. Nothing was written.",
        objects=objects, capacity=capacity.slots, setting=SETTING,
        current=capacity.max_locks_per_transaction, needed=needed)


def lock_capacity(db: Any) -> LockCapacity | None:
    """The lock table settings of ``db``'s server; None where commits take no per-object lock."""
    return adapter_for(db).lock_capacity()


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


def _modified_objects(connection: Any) -> int:
    """Existing objects the connection's commit will lock (new ones take no lock)."""
    store = savepoint_store(connection)
    index = getattr(store, "index", {})
    created = getattr(store, "creating", {})
    written = len(index) - sum(1 for oid in created if oid in index)
    return written + len(registered_objects(connection)) + read_current_count(connection)
