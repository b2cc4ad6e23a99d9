"""The record of applied migrations, kept in the database's bookkeeping.

An applied record is a plain dict, written in the same transaction as the migration
it describes. Its ``tid_after`` cannot be known inside that transaction, so it is
stored as None and filled in on read by :func:`applied_records`: the migration's
transaction is the first one after ``tid_before`` that wrote the bookkeeping object
as a migration (every migration writes it), so only that object's own revisions are
read, never the transaction log, and start-up checks read none at all.
"""

from __future__ import annotations

import datetime
import os
import socket
from contextlib import suppress
from typing import Any

from ZODB.POSException import ConflictError
from ZODB.utils import repr_to_oid, tid_repr

from ..engine.bookkeeping import bookkeeping
from ..storage import adapter_for
from ..storage.connections import private_connection, reading
from ..storage.transactions import mark


def applied_in(conn: Any) -> set[str]:
    """The revisions applied in the snapshot an open connection sees."""
    bk = bookkeeping(conn.root())
    return set(bk.applied.keys()) if bk is not None else set()


def applied_revisions(db: Any) -> set[str]:
    """The revisions recorded as applied, read through a fresh connection."""
    with reading(db) as root:
        bk = bookkeeping(root)
        return set(bk.applied.keys()) if bk is not None else set()


def applied_records(db: Any, *, tids: bool = True) -> dict[str, dict[str, Any]]:
    """Copies of the applied records, with ``tid_after`` filled in (unless ``tids`` is
    false) from the bookkeeping object's own revisions."""
    with reading(db) as root:
        bk = bookkeeping(root)
        records = {rev: dict(rec) for rev, rec in bk.applied.items()} if bk is not None else {}
        bk_oid = bk._p_oid if bk is not None else None
    if not tids or bk_oid is None:
        return records
    found: dict[str, str | None] = {}  # tid_before -> tid_after (one run: one lookup)
    for rec in records.values():
        before = rec.get("tid_before")
        if rec.get("tid_after") is None and before and rec.get("direction") == "upgrade":
            if before not in found:
                found[before] = _migration_after(db, bk_oid, before)
            rec["tid_after"] = found[before]
    return records


def migration_tid(db: Any, revision: str, tid_before: str) -> str | None:
    """The tid of the transaction that applied ``revision`` (None if not found)."""
    with reading(db) as root:
        bk = bookkeeping(root)
        bk_oid = bk._p_oid if bk is not None else None
    return _migration_after(db, bk_oid, tid_before) if bk_oid is not None else None


def _migration_after(db: Any, bk_oid: bytes, tid_before: str) -> str | None:
    """The first migration transaction after ``tid_before``: the migration that started
    from it (the migration lock lets no other run in between), found among the
    bookkeeping object's revisions, which every migration writes."""
    wanted = b"dsustore migration "
    for rev in adapter_for(db).revisions_after(bk_oid, repr_to_oid(tid_before)):
        description = rev.get("description") or b""
        if isinstance(description, str):
            description = description.encode("utf-8")
        if description.startswith(wanted) and not description.split(b":")[0].endswith(b" downgrade"):
            return tid_repr(rev["tid"])
    return None


def record_tid_after(db: Any, revision: str, tid_after: str) -> None:
    """Write ``tid_after`` into ``revision``'s applied record, in a transaction of its own.

    For storages without a transaction log (history-free RelStorage), where
    :func:`applied_records` could not find the migration's transaction later. A
    conflict leaves the record as it was (``tid_after`` None): it is a convenience.
    """
    with private_connection(db) as (conn, tm):
        bk = bookkeeping(conn.root())
        record = bk.applied.get(revision) if bk is not None else None
        if bk is None or record is None or record.get("tid_after") is not None:
            return
        bk.applied[revision] = dict(record, tid_after=tid_after)
        mark(tm.get(), f"dsustore record tid of migration {revision}", tid_after=revision)
        with suppress(ConflictError):
            tm.commit()


def transaction_description(revision: str, direction: str) -> str:
    """How a migration's transaction is named (before the ``: message`` part)."""
    if direction == "upgrade":
        return f"dsustore migration {revision}"
    return f"dsustore migration {revision} {direction}"


def record_applied(root: Any, script: Any, report: Any = None, *,
                   direction: str = "upgrade") -> dict[str, Any]:
    """Record ``script`` as applied (in the caller's transaction) and return the record."""
    bk = bookkeeping(root, create=True)
    record = {
        "revision": script.revision,
        "down_revisions": list(script.down_revisions),
        "message": script.message,
        "checksum": script.checksum,
        "applied_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "duration": round(report.duration, 3) if report is not None else 0.0,
        "migrated": dict(report.migrated) if report is not None else {},
        "unchanged": dict(report.unchanged) if report is not None else {},
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
    "applied_records",
    "applied_revisions",
    "migration_tid",
    "record_applied",
    "record_tid_after",
    "record_unapplied",
    "transaction_description",
]
