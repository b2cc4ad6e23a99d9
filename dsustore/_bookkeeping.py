"""DSU bookkeeping: what a database knows about the migrations applied to it.

Everything lives under one root key, ``"dsustore"``, in a :class:`Bookkeeping`
object, so the records travel with the data (a copied Data.fs knows its own
revision) and are written in the same transaction as the migration they describe.

An applied record is a plain dict. Its ``tid_after`` cannot be known inside the
transaction that writes it, so it is stored as None and filled in on read by
:func:`applied_records`, which finds the migration's own transaction in the
storage history (the first dsustore transaction after ``tid_before`` whose
description names the revision).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import persistent
import transaction as transaction_module
from transaction.interfaces import NoTransaction
from BTrees.OOBTree import OOBTree
from ZODB.utils import p64, repr_to_oid, tid_repr, u64
from ._scan import closed_after
from .patch import TRANSACTION_MARK

ROOT_KEY = "dsustore"


class Bookkeeping(persistent.Persistent):
    """The dsustore state of one database (stored at ``root["dsustore"]``).

    ``applied``: revision → record dict; ``schema``: dotted class name → declared
    fields; ``snapshots``: name → dict; ``lock``: the migration lease or None.
    """

    def __init__(self) -> None:
        self.applied: OOBTree = OOBTree()
        self.schema: dict[str, list[str]] = {}
        self.snapshots: OOBTree = OOBTree()
        self.lock: dict[str, Any] | None = None


def bookkeeping(root: Any, *, create: bool = False) -> Bookkeeping | None:
    """The bookkeeping object under ``root``; made (in the caller's transaction) if ``create``."""
    found = root.get(ROOT_KEY)
    if found is None and create:
        found = root[ROOT_KEY] = Bookkeeping()
    return found


@contextmanager
def reading(db: Any) -> Iterator[Any]:
    """A fresh connection's root, in a transaction of its own that is always aborted."""
    tm = transaction_module.TransactionManager(explicit=True)
    tm.begin()
    conn = db.open(transaction_manager=tm)
    try:
        yield conn.root()
    finally:
        tm.abort()
        conn.close()


def applied_revisions(db: Any) -> set[str]:
    """The revisions recorded as applied, read through a fresh connection."""
    with reading(db) as root:
        bk = bookkeeping(root)
        return set(bk.applied.keys()) if bk is not None else set()


def applied_records(db: Any) -> dict[str, dict[str, Any]]:
    """Copies of the applied records, with ``tid_after`` filled in from the history."""
    with reading(db) as root:
        bk = bookkeeping(root)
        records = {rev: dict(rec) for rev, rec in bk.applied.items()} if bk is not None else {}
    for rev, rec in records.items():
        if rec.get("tid_after") is None and rec.get("tid_before") and rec.get("direction") == "upgrade":
            rec["tid_after"] = migration_tid(db.storage, rev, rec["tid_before"])
    return records


def migration_tid(storage: Any, revision: str, tid_before: str) -> str | None:
    """The tid of the transaction that applied ``revision`` (None if not found)."""
    wanted = transaction_description(revision, "upgrade").encode("utf-8") + b":"
    start = p64(u64(repr_to_oid(tid_before)) + 1)
    with closed_after(storage.iterator(start)) as iterator:
        for txn in iterator:
            description = txn.description
            if isinstance(description, str):
                description = description.encode("utf-8")
            if description.startswith(wanted) or revision in _stages_of(txn):
                return tid_repr(txn.tid)
    return None


def _stages_of(txn: Any) -> list[str]:
    """The migrations a transaction applied together (from its dsustore extension)."""
    extension = getattr(txn, "extension", None) or {}
    mark = extension.get(TRANSACTION_MARK) or {}
    return list(mark.get("stages") or ()) if isinstance(mark, dict) else []


def record_tid_after(db: Any, revision: str, tid_after: str) -> None:
    """Write ``tid_after`` into ``revision``'s applied record, in a transaction of its own.

    For storages without a transaction log (history-free RelStorage), where
    :func:`applied_records` could not find the migration's transaction later. A
    conflict leaves the record as it was (``tid_after`` None): it is a convenience.
    """
    from ZODB.POSException import ConflictError

    from .patch import TRANSACTION_MARK

    tm = transaction_module.TransactionManager(explicit=True)
    tm.begin()
    conn = db.open(transaction_manager=tm)
    try:
        bk = bookkeeping(conn.root())
        record = bk.applied.get(revision) if bk is not None else None
        if record is None or record.get("tid_after") is not None:
            return
        bk.applied[revision] = dict(record, tid_after=tid_after)
        txn = tm.get()
        txn.note(f"dsustore record tid of migration {revision}")
        txn.setExtendedInfo(TRANSACTION_MARK, {"tid_after": revision})
        try:
            tm.commit()
        except ConflictError:
            pass
    finally:
        try:
            tm.abort()
        except NoTransaction:
            pass
        conn.close()


def transaction_description(revision: str, direction: str) -> str:
    """How a migration's transaction is named (before the ``: message`` part)."""
    if direction == "upgrade":
        return f"dsustore migration {revision}"
    return f"dsustore migration {revision} {direction}"


def record_applied(root: Any, script: Any, report: Any = None, *, direction: str = "upgrade") -> dict[str, Any]:
    """Record ``script`` as applied (in the caller's transaction) and return the record."""
    bk = bookkeeping(root, create=True)
    record = {
        "revision": script.revision,
        "down_revisions": list(script.down_revisions),
        "message": script.message,
        "checksum": script.checksum,
        "applied_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "duration": round(report.duration, 3) if report is not None else 0.0,
        "migrated": dict(report.migrated) if report is not None else {},
        "tid_before": report.tid_before if report is not None else None,
        "tid_after": None,
        "direction": direction,
    }
    bk.applied[script.revision] = record
    bk._p_changed = True  # so a concurrent lock takeover conflicts with this commit
    return record


def record_unapplied(root: Any, revision: str) -> None:
    """Forget that ``revision`` was applied (in the caller's transaction)."""
    bk = bookkeeping(root)
    if bk is not None and revision in bk.applied:
        del bk.applied[revision]
        bk._p_changed = True


__all__ = [
    "ROOT_KEY",
    "Bookkeeping",
    "applied_records",
    "applied_revisions",
    "bookkeeping",
    "migration_tid",
    "reading",
    "record_applied",
    "record_tid_after",
    "record_unapplied",
    "transaction_description",
]
