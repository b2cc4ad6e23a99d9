"""Named snapshots of a database, restoring them, and packing that keeps them.

On a history-keeping storage (FileStorage, ZEO, MappingStorage, RelStorage with
history) a snapshot is just a transaction id: the last one before the transaction
that records the snapshot under ``root["dsustore"].snapshots``, which is that
transaction's view. Taking a snapshot is that one commit, so a process killed at any
point leaves either no snapshot or a whole one. Restoring it commits one new
transaction that writes back, for every object changed since, its record as of the
snapshot. The changed objects come from the storage's transaction log after the
snapshot, so a restore costs what changed since, not the size of the database, and
being an ordinary transaction it can itself be undone by restoring the snapshot that
is taken automatically before it. The snapshot list and the migration lock are never
rolled back.

History-free storages (RelStorage with ``keep_history=false``) keep no old records,
so there a snapshot is an export: a file holding every current record, in ZODB's
export format, of the view of the transaction that records the snapshot. Restoring
imports it under the records' own oids: one new transaction writes back every
exported record whose state differs now, so references from outside the graph stay
valid. Such a storage has no transaction log either, so
application writes since the snapshot cannot be told from dsustore's: the report
says so (``application_transactions`` is None) and a restore brings back the
exported state over them. Where the storage keeps history, an export (asked for
with ``kind="export"``) is refused over application writes like a transaction id.

Export files go to ``directory``, else ``$DSUSTORE_SNAPSHOTS``, else next to a
FileStorage (``Data.fs.snapshots``), else next to the database's other exports,
else ``./dsustore-snapshots``.

Snapshots taken automatically (before an upgrade, a downgrade or a restore) are
marked so; :func:`prune_snapshots` forgets the oldest of them, so that :func:`pack`
may drop the states only they kept.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ZODB.ExportImport import export_end_marker
from ZODB.POSException import ConflictError, POSKeyError
from ZODB.serialize import referencesf
from ZODB.TimeStamp import TimeStamp
from ZODB.utils import p64, tid_repr, u64, z64

from ..engine.bookkeeping import bookkeeping
from ..errors import SnapshotConflictError, SnapshotError, UnknownSnapshotError
from ..storage import adapter_for
from ..storage.connections import cache_of, join, private_connection, savepoint_store
from ..storage.transactions import is_dsustore, mark

log = logging.getLogger(__name__)

_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+\-]*\Z")

ENV_SNAPSHOTS = "DSUSTORE_SNAPSHOTS"

Kind = Literal["tid", "export"]


@dataclass(frozen=True)
class Snapshot:
    """A named point the database can be restored to."""

    name: str
    kind: Kind
    tid: str
    created: str
    path: str | None = None
    note: str = ""
    #: taken by dsustore itself (before an upgrade, downgrade or restore); pruned by retention
    auto: bool = False

    @property
    def complete(self) -> bool:
        """False for a record an older dsustore left half-made when it was killed."""
        return bool(self.tid)

    @property
    def tid_bytes(self) -> bytes:
        if not self.complete:
            raise SnapshotError(
                f"snapshot {self.name!r} was never completed (the process taking it was "
                f"killed); forget it with `dsustore snapshot delete {self.name}`")
        return p64(int(self.tid, 16))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RestoreReport:
    """What a restore did."""

    snapshot: str
    kind: Kind
    tid_after: str | None
    rewritten: int
    created_since: int
    transactions_since: int
    application_transactions: int | None  # None: the storage cannot tell (history-free)
    safety_snapshot: str | None
    rewritten_oids: list[str] = field(default_factory=list, repr=False)
    source: str = ""  # the transaction id or the export file restored from

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("rewritten_oids")
        return data


@dataclass
class PackReport:
    """What a pack did, and how far back it was allowed to go."""

    packed_to: str
    requested: str
    limited_by: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- public API ---------------------------------------------------------------


def snapshot(db: Any, name: str | None = None, *, note: str = "", kind: Kind | None = None,
             directory: str | Path | None = None, auto: bool = False) -> Snapshot:
    """Take a snapshot named ``name`` (a unique timestamped name by default) and record it.

    One commit records it, with the state as of the transaction before (an export
    file, written first, holds that same state), so a process killed at any point
    leaves no half-made snapshot. ``auto`` marks a snapshot dsustore takes itself.
    """
    kind = kind or ("tid" if adapter_for(db).keeps_history else "export")
    if kind not in ("tid", "export"):
        raise SnapshotError(f"unknown snapshot kind {kind!r} (use 'tid' or 'export')")
    created = datetime.now(UTC)
    name = name or unique_name("snap", created)
    if not _NAME_RE.match(name):
        raise SnapshotError(f"invalid snapshot name {name!r}: use letters, digits and . _ - : @ +")
    path = _export_path(db, name, directory) if kind == "export" else None
    _ensure_bookkeeping(db)  # so that the state the snapshot keeps has the snapshot list
    with private_connection(db) as (conn, tm):
        book = _book(conn.root(), create=True)
        if name in book.snapshots:
            raise SnapshotError(f"a snapshot named {name!r} already exists")
        tid = adapter_for(db).snapshot_tid(conn)  # this transaction's view: the state kept
        if path is not None:
            _export(conn, db, path)
        record = {"name": name, "kind": kind, "tid": tid_repr(tid), "created": created.isoformat(),
                  "path": str(path) if path else None, "note": note, "auto": auto}
        book.snapshots[name] = record
        mark(tm.get(), f"dsustore snapshot {name}", snapshot=name)
        try:
            tm.commit()
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)
            raise
    return _as_snapshot(record)


def unique_name(prefix: str, when: datetime | None = None) -> str:
    """``prefix-20261201-142233-123456-1a2b``: unique even for back-to-back runs."""
    when = when or datetime.now(UTC)
    return f"{prefix}-{when:%Y%m%d-%H%M%S-%f}-{uuid.uuid4().hex[:4]}"


def _ensure_bookkeeping(db: Any) -> None:
    """Create the bookkeeping object in a commit of its own, if the database has none yet."""
    with private_connection(db) as (conn, tm):
        if _book(conn.root(), create=False) is not None:
            return
        _book(conn.root(), create=True)
        mark(tm.get(), "dsustore bookkeeping", bookkeeping="created")
        tm.commit()


_take_snapshot = snapshot  # restore() has a parameter of that name


def snapshots(db: Any) -> list[Snapshot]:
    """Every recorded snapshot, oldest first."""
    with private_connection(db) as (conn, _tm):
        book = _book(conn.root(), create=False)
        if book is None:
            return []
        found = [_as_snapshot(record) for record in book.snapshots.values()]
    return sorted(found, key=lambda s: (s.created, s.name))


def get_snapshot(db: Any, name: str) -> Snapshot:
    """The snapshot named ``name``."""
    for snap in snapshots(db):
        if snap.name == name:
            return snap
    raise UnknownSnapshotError(f"no snapshot named {name!r}")


def delete_snapshot(db: Any, name: str) -> Snapshot:
    """Forget snapshot ``name`` (and delete its export file): a later pack may drop its state."""
    with private_connection(db) as (conn, tm):
        book = _book(conn.root(), create=False)
        if book is None or name not in book.snapshots:
            raise UnknownSnapshotError(f"no snapshot named {name!r}")
        snap = _as_snapshot(book.snapshots[name])
        del book.snapshots[name]
        mark(tm.get(), f"dsustore delete snapshot {name}", delete_snapshot=name)
        tm.commit()
    if snap.path:
        Path(snap.path).unlink(missing_ok=True)
    return snap


def prune_snapshots(db: Any, keep: int, *, include_named: bool = False) -> list[Snapshot]:
    """Forget all but the ``keep`` newest snapshots dsustore took itself; returns those forgotten.

    With ``include_named``, the snapshots taken by name count too. Snapshots left
    half-made by an older dsustore are always forgotten. Their export files are
    deleted; a later :func:`pack` may then drop the states only they kept.
    """
    if keep < 0:
        raise SnapshotError(f"keep must be 0 or more, not {keep}")
    candidates = [s for s in snapshots(db) if s.complete and (s.auto or include_named)]
    doomed = [s for s in snapshots(db) if not s.complete]
    doomed += candidates[:max(len(candidates) - keep, 0)]
    if not doomed:
        return []
    with private_connection(db) as (conn, tm):
        book = _book(conn.root(), create=False)
        gone = [snap for snap in doomed if book is not None and snap.name in book.snapshots]
        for snap in gone:
            del book.snapshots[snap.name]
        mark(tm.get(), f"dsustore prune snapshots (keep {keep})",
             delete_snapshot=[snap.name for snap in gone])
        tm.commit()
    for snap in gone:
        if snap.path:
            Path(snap.path).unlink(missing_ok=True)
    return gone


def restore(db: Any, snapshot: str | Snapshot, *, force: bool = False) -> RestoreReport:
    """Bring the database back to ``snapshot`` in one new transaction.

    Refuses with :class:`SnapshotConflictError` when transactions not written by
    dsustore (the application's) came after the snapshot, unless ``force``.
    """
    snap = get_snapshot(db, snapshot if isinstance(snapshot, str) else snapshot.name)
    snap.tid_bytes  # noqa: B018 (a half-made snapshot cannot be restored: this says so)
    history = adapter_for(db).keeps_history
    if snap.kind == "tid" and not history:
        raise SnapshotError(f"snapshot {snap.name!r} is a transaction id, but this storage "
                            "keeps no history")
    since = _changes_since(db, snap.tid_bytes) if history else None
    if since is not None and since.application_transactions and not force:
        raise SnapshotConflictError(
            f"restoring {snap.name!r} would lose {since.application_transactions} application "
            f"transaction(s) changing {len(since.application_oids)} object(s) written after "
            "it; use --force to restore anyway",
            transactions=since.application_transactions, objects=len(since.application_oids))
    if snap.kind == "export":
        return _restore_export(db, snap, since)
    safety = _take_snapshot(db, _safety_name(db, snap.name), note=f"taken before restoring {snap.name}",
                            auto=True)
    with _dropped_on_failure(db, safety):
        since = _changes_since(db, snap.tid_bytes)
        return _restore_tid(db, snap, since, safety.name)


def pack(db: Any, *, days: float = 0) -> PackReport:
    """Pack the storage to ``days`` ago, but never past the oldest kept snapshot."""
    requested = time.time() - days * 86400
    oldest = min((s for s in snapshots(db) if s.kind == "tid" and s.complete),
                 key=lambda s: u64(s.tid_bytes), default=None)
    limited_by = None
    pack_time = requested
    if oldest is not None:
        # a hair before the snapshot's transaction, so its records are all kept
        snap_time = TimeStamp(oldest.tid_bytes).timeTime() - 0.001
        if snap_time < requested:
            pack_time, limited_by = snap_time, oldest.name
    db.pack(t=pack_time)
    when = datetime.fromtimestamp(pack_time, UTC).isoformat()
    asked = datetime.fromtimestamp(requested, UTC).isoformat()
    message = (f"packed to {when}, kept back by snapshot {limited_by!r}" if limited_by
               else f"packed to {when}")
    return PackReport(packed_to=when, requested=asked, limited_by=limited_by, message=message)


# -- restoring a transaction id -------------------------------------------------


@dataclass
class _Since:
    oids: set[bytes] = field(default_factory=set)
    application_oids: set[bytes] = field(default_factory=set)
    transactions: int = 0
    application_transactions: int = 0


def _changes_since(db: Any, tid: bytes) -> _Since:
    """The objects written by transactions after ``tid``, and which of those were the application's.

    The objects written come from the storage adapter in one go where it can list
    them (the file read in place, one query, the ZEO server's list of recent
    changes); the transaction log is read for the transactions' descriptions, and
    record by record only for the application's transactions, which are few or make
    the restore refuse.
    """
    adapter = adapter_for(db)
    upto = adapter.last_committed()
    changed = adapter.changed_since(tid, upto)
    since = _Since()
    for txn in adapter.transactions_after(tid, upto):
        ours = is_dsustore(txn)
        since.transactions += 1
        if not ours:
            since.application_transactions += 1
        if ours and changed is not None:
            continue
        for record in txn:
            since.oids.add(record.oid)
            if not ours:
                since.application_oids.add(record.oid)
    if changed is not None:
        since.oids.update(changed)
    return since


def _restore_tid(db: Any, snap: Snapshot, since: _Since, safety: str) -> RestoreReport:
    """Write back, for every object changed since the snapshot, its state then. The states
    then and now are read in bulk where loads are round trips (ZEO)."""
    before = p64(u64(snap.tid_bytes) + 1)
    rewritten: list[bytes] = []
    created = 0
    adapter = adapter_for(db)
    with private_connection(db) as (conn, tm):
        storage = adapter.loader(conn)
        keep = _kept_current(conn)
        txn = tm.get()
        join(conn)
        txn.savepoint(optimistic=True)
        store = savepoint_store(conn)
        oids = sorted(since.oids - keep)
        then = adapter.load_many(oids, before=before, loader=storage)
        now = adapter.load_many(oids, loader=storage)
        for (oid, old, _tid), (_oid, current, serial) in zip(then, now, strict=True):
            if old is None:  # it did not exist then
                created += 1
                continue
            if current is None:
                raise POSKeyError(oid)
            if current == old:
                continue
            store.store(oid, serial, old, "", txn)
            rewritten.append(oid)
        tid_after = _commit_restore(db, conn, tm, snap, rewritten, {"tid": snap.tid})
    return RestoreReport(
        snapshot=snap.name, kind="tid", tid_after=tid_after, rewritten=len(rewritten),
        created_since=created, transactions_since=since.transactions,
        application_transactions=since.application_transactions, safety_snapshot=safety,
        rewritten_oids=[hex(u64(oid)) for oid in rewritten], source=snap.tid)


def _commit_restore(db: Any, conn: Any, tm: Any, snap: Snapshot, rewritten: list[bytes],
                    facts: dict[str, Any]) -> str | None:
    """Commit a restore's transaction; the tid it committed (None when nothing differed)."""
    mark(tm.get(), f"dsustore restore {snap.name}", restore=snap.name, **facts)
    try:
        tm.commit()
    except ConflictError as err:
        raise SnapshotError(f"another transaction changed objects while restoring {snap.name!r}; "
                            "nothing was written") from err
    cache_of(conn).invalidate(list(rewritten))
    return tid_repr(_last_tid(conn, db)) if rewritten else None


def _kept_current(conn: Any) -> set[bytes]:
    """Oids a restore leaves as they are now: the snapshot list (its BTree and buckets), the
    migration lock's lease and the write barrier."""
    book = _book(conn.root(), create=False)
    if book is None:
        return set()
    storage = adapter_for(conn.db()).loader(conn)
    found = {kept._p_oid for kept in (book.lease, book.barrier)
             if kept is not None and kept._p_oid is not None}
    todo = [book.snapshots._p_oid]
    while todo:
        oid = todo.pop()
        if oid is None or oid in found:
            continue
        found.add(oid)
        data, _tid = storage.load(oid)
        todo.extend(referencesf(data))
    return found


def _safety_name(db: Any, name: str) -> str:
    taken = {s.name for s in snapshots(db)}
    base = f"before-restore-{name}"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


# -- export snapshots ----------------------------------------------------------


def _export_path(db: Any, name: str, directory: str | Path | None) -> Path:
    folder = Path(directory) if directory else _default_export_folder(db)
    path = folder / f"{name}.zexp"
    if path.exists() and any(s.path == str(path) for s in snapshots(db)):
        raise SnapshotError(f"export file {path} already exists and belongs to a snapshot")
    if path.exists():  # left by a process killed before it recorded the snapshot
        log.warning("replacing %s, an export no snapshot records", path)
    return path


def _export(conn: Any, db: Any, path: Path) -> None:
    """Write every record current in ``conn``'s view to ``path``, in ZODB's export format.

    The records are streamed from one storage scan (on RelStorage one SQL query),
    not loaded object by object; the file appears under its name only when complete.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as f:
            f.write(b"ZEXP")
            adapter = adapter_for(db)
            for oid, _tid, data in adapter.current_records(at=adapter.snapshot_tid(conn),
                                                           view=conn):
                f.write(oid)
                f.write(p64(len(data)))
                f.write(data)
            f.write(export_end_marker)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)


def _exported_records(path: Path, *, data: bool = True) -> Iterator[tuple[bytes, bytes]]:
    """The ``(oid, data)`` records of an export file, one at a time (data b"" if not asked for)."""
    with path.open("rb") as f:
        if f.read(4) != b"ZEXP":
            raise SnapshotError(f"{path} is not a ZODB export file")
        while True:
            header = f.read(16)
            if header == export_end_marker:
                return
            if len(header) != 16:
                raise SnapshotError(f"export file {path} is truncated")
            length = u64(header[8:])
            if not data:
                f.seek(length, os.SEEK_CUR)
                yield header[:8], b""
                continue
            record = f.read(length)
            if len(record) != length:
                raise SnapshotError(f"export file {path} is truncated")
            yield header[:8], record


def _default_export_folder(db: Any) -> Path:
    configured = os.environ.get(ENV_SNAPSHOTS)
    if configured:
        return Path(configured)
    beside = adapter_for(db).export_folder()
    if beside is not None:
        return beside
    exports = [s.path for s in snapshots(db) if s.kind == "export" and s.path]
    if exports:
        return Path(exports[-1]).parent
    return Path.cwd() / "dsustore-snapshots"


def _restore_export(db: Any, snap: Snapshot, since: _Since | None) -> RestoreReport:
    """Write back, under their own oids, the exported records that differ now; one transaction.

    ``since`` is what the transaction log says changed after the snapshot, None on
    a storage without one.
    """
    path = Path(snap.path) if snap.path else None
    if path is None or not path.is_file():
        raise SnapshotError(f"the export file of snapshot {snap.name!r} is missing: {snap.path}")
    safety = _take_snapshot(db, _safety_name(db, snap.name), note=f"taken before restoring {snap.name}",
                            directory=path.parent if since is None else None, auto=True)
    with _dropped_on_failure(db, safety):
        return _import_export(db, snap, since, path, safety)


def _import_export(db: Any, snap: Snapshot, since: _Since | None, path: Path,
                   safety: Snapshot) -> RestoreReport:
    rewritten: list[bytes] = []
    exported = {oid for oid, _data in _exported_records(path, data=False)}
    adapter = adapter_for(db)
    with private_connection(db) as (conn, tm):
        storage = adapter.loader(conn)
        keep = _kept_current(conn)
        later: set[bytes] = set()
        created = 0
        for oid, tid, _data in adapter.current_records(at=adapter.snapshot_tid(conn), view=conn):
            if u64(tid) > u64(snap.tid_bytes) and oid not in keep:
                later.add(tid)
            if oid not in exported:
                created += 1
        txn = tm.get()
        join(conn)
        txn.savepoint(optimistic=True)
        store = savepoint_store(conn)
        for oid, data in _exported_records(path):
            if oid in keep:
                continue
            try:
                current, serial = storage.load(oid)
            except POSKeyError:  # removed since (a pack collected it): bring it back
                current, serial = None, z64
            if current == data:
                continue
            store.store(oid, serial, data, "", txn)
            rewritten.append(oid)
        tid_after = _commit_restore(db, conn, tm, snap, rewritten, {"path": snap.path})
    return RestoreReport(
        snapshot=snap.name, kind="export", tid_after=tid_after, rewritten=len(rewritten),
        created_since=created,
        transactions_since=len(later) if since is None else since.transactions,
        application_transactions=None if since is None else since.application_transactions,
        safety_snapshot=safety.name,
        rewritten_oids=[hex(u64(oid)) for oid in rewritten], source=str(path))


# -- helpers ---------------------------------------------------------------------


def _book(root: Any, *, create: bool) -> Any:
    """The bookkeeping object at ``root["dsustore"]`` (with a ``snapshots`` BTree)."""
    return bookkeeping(root, create=create)


def _as_snapshot(record: Any) -> Snapshot:
    data = dict(record)
    return Snapshot(name=data["name"], kind=data.get("kind", "tid"), tid=data.get("tid", ""),
                    created=data.get("created", ""), path=data.get("path"),
                    note=data.get("note", ""), auto=bool(data.get("auto", False)))


@contextmanager
def _dropped_on_failure(db: Any, taken: Snapshot) -> Iterator[None]:
    """Forget the snapshot ``taken`` for an attempt if the attempt fails: it would only pile up."""
    try:
        yield
    except BaseException:
        try:
            delete_snapshot(db, taken.name)
        except Exception as err:  # the original failure is what the user must see
            log.warning("could not forget snapshot %s after a failed attempt: %s", taken.name, err)
        raise


def _last_tid(conn: Any, db: Any) -> bytes:
    """The transaction ``conn`` has just committed."""
    adapter = adapter_for(db)
    tid = adapter.committed_tid(conn)
    return tid if tid != z64 else adapter.last_committed()

