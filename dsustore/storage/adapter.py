"""The storage contract the layers above use, and the generic adapter for any ``IStorage``.

Every storage offers the same facts and services through its adapter: its current
records as of a transaction, its last committed transaction, what changed since a
transaction, whether it keeps history, where export files go, how many objects its
server can lock in one commit. The generic adapter answers from ZODB's documented
storage API (the transaction iterator, ``loadBefore``) and works with any storage
that keeps history (MappingStorage, DemoStorage...); the adapters of FileStorage,
ZEO and RelStorage answer the same questions faster, or at all where the storage
keeps no history. :func:`dsustore.storage.adapter_for` picks one per storage, once.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ZODB.interfaces import IStorageIteration
from ZODB.POSException import POSKeyError
from ZODB.utils import p64, u64, z64

from .connections import instance_of

#: one current record: (oid, tid, data)
Record = tuple[bytes, bytes, bytes]
#: one object as loaded by :meth:`StorageAdapter.load_many`: (oid, data, tid), or
#: (oid, None, None) where it has no state
Loaded = tuple[bytes, bytes | None, bytes | None]


@dataclass(frozen=True)
class LockCapacity:
    """How many object locks a database server holds for all its sessions together."""

    max_locks_per_transaction: int
    max_connections: int
    max_prepared_transactions: int
    #: server processes besides the connections the table has room for (autovacuum,
    #: background workers, WAL senders)
    other_processes: int = 0

    @property
    def sessions(self) -> int:
        """The processes and prepared transactions the table is sized for."""
        return self.max_connections + self.other_processes + self.max_prepared_transactions

    @property
    def slots(self) -> int:
        """How many locks the table is sized for (for all sessions); when full it may
        grow into the server's free memory (:meth:`StorageAdapter.locks_fit`)."""
        return self.max_locks_per_transaction * self.sessions


class StorageAdapter:
    """What dsustore needs of one storage; this generic version works with any ``IStorage``."""

    #: how the storage is named in messages and reports
    kind: ClassVar[str] = "generic"
    #: whether reading every record costs a round trip each (worth keeping a scan on disk)
    scans_are_remote: ClassVar[bool] = False

    def __init__(self, storage: Any) -> None:
        self.storage = storage

    @classmethod
    def accepts(cls, storage: Any) -> bool:
        """Whether this adapter is the one for ``storage``."""
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}>"

    # -- what the storage is ----------------------------------------------------------

    @property
    def keeps_history(self) -> bool:
        """Whether old revisions can be read (``loadBefore``) and transactions listed."""
        return IStorageIteration.providedBy(self.storage) or hasattr(self.storage, "iterator")

    def count(self) -> int | None:
        """How many current records a scan reads, if the storage can say exactly and
        cheaply; None when it could only estimate (a progress total must not guess)."""
        try:
            return len(self.storage)
        except Exception:
            return None

    def export_folder(self) -> Path | None:
        """Where export snapshots of this storage go by default (None: decided elsewhere)."""
        return None

    def lock_capacity(self) -> LockCapacity | None:
        """The server's lock table, where a commit takes one lock per object (else None)."""
        return None

    def locks_fit(self, count: int) -> bool:
        """Whether the server's lock table takes ``count`` more locks now (where
        :meth:`lock_capacity` applies)."""
        return True

    def count_instances(self, class_keys: Iterable[bytes]) -> int:
        """How many current records have one of the class keys (where lock_capacity applies)."""
        raise NotImplementedError(f"{self.kind} storages do not count instances")

    # -- transactions ---------------------------------------------------------------

    def last_committed(self) -> bytes:
        """The storage's last committed transaction, after hearing of commits made elsewhere."""
        return self.storage.lastTransaction()

    def snapshot_tid(self, conn: Any) -> bytes:
        """The last transaction an open connection of this storage sees."""
        conn.root()  # establish the connection's view
        before = getattr(conn, "before", None)
        if before is not None:
            return p64(u64(before) - 1)
        start = getattr(instance_of(conn), "_start", None)
        if start is not None:
            return p64(u64(start) - 1)
        return conn.db().lastTransaction()

    def committed_tid(self, conn: Any) -> bytes:
        """The transaction a connection of this storage has just committed."""
        ltid = getattr(instance_of(conn), "_ltid", None)
        return ltid or self.last_committed()

    def transactions_after(self, tid: bytes, upto: bytes | None = None) -> Iterator[Any]:
        """The storage's transaction records after ``tid`` (up to ``upto``), oldest first."""
        with closed_after(self.storage.iterator(_after(tid), upto)) as iterator:
            # not ``yield from``: RelStorage ends its iterator with an exception that is
            # both IndexError and StopIteration, which crashes CPython 3.11's yield from
            for txn in iterator:  # noqa: UP028
                yield txn

    def revisions_after(self, oid: bytes, tid: bytes) -> list[dict[str, Any]]:
        """The revisions of one object committed after ``tid``, oldest first, as the
        storage's ``history`` describes them (``tid``, ``description``...).

        Only that object's own revisions are read, newest first, until one at or before
        ``tid``: the cost is the object's revisions since, not the transaction log. A
        storage keeping no history gives the current revision only.
        """
        self.last_committed()  # an MVCC storage reads history as of what it last heard of
        size = 8
        while True:
            try:
                found = list(self.storage.history(oid, size=size))
            except Exception:  # no such object, or a storage without history
                return []
            after = [rev for rev in found if rev["tid"] > tid]
            if len(after) < len(found) or len(found) < size:
                after.reverse()
                return after
            size *= 8

    def changed_since(self, tid: bytes, upto: bytes | None = None) -> list[bytes] | None:
        """Oids written by transactions after ``tid`` up to ``upto`` (a committed one);
        None when the storage cannot say."""
        upto = upto or self.last_committed()
        if upto == tid:
            return []
        try:
            oids: dict[bytes, None] = {}
            for txn in self.transactions_after(tid, upto):
                for record in txn:
                    oids[record.oid] = None
        except Exception:  # a storage without a usable transaction log
            return None
        return list(oids)

    def change_recorder(self, conn: Any) -> Any:
        """Something that hears which oids others commit through ``conn``'s view, where
        that is cheaper than asking the storage (see :class:`~.zeo.ChangeRecorder`)."""
        return None

    def prefetch(self, oids: list[bytes]) -> None:
        """Ask for ``oids`` ahead of loading them one by one (where loads are round trips)."""

    def streaming_store(self, upto: bytes | None = None) -> Any:
        """What stores the records of a large commit in bulk, where storing each on its own
        costs a message or a lock (``store``, ``flush(transaction)`` once all are stored,
        ``finish()`` as the transaction finishes; where it takes a staged commit,
        ``copy_staged`` first, see :meth:`stage_commit`, and ``give_back()`` after the
        vote and before an abort); None where the storage's own ``store`` is the way.
        ``upto``: the caller vouches that every record's serial is its object's committed
        tid as of that transaction, unless written after it."""
        return None

    def stage_commit(self, source: Any, upto: bytes) -> Any:
        """Prepare ahead, while the application still writes, what a large commit of the
        records ``source`` holds (a patch's savepoint storage) copies into the storage,
        so that the commit itself, inside the moment writes are held, does little per
        record; None where the storage has no such way (the commit then streams or stores
        each record). The commit hands the result to :meth:`streaming_store`'s
        ``copy_staged``. ``upto``: every record is migrated from its object's state as of
        that committed transaction, or later."""
        return None

    # -- reading ------------------------------------------------------------------

    def current_records(self, *, at: bytes | None = None, view: Any = None) -> Iterator[Record]:
        """Yield ``(oid, tid, data)`` of every object current at transaction ``at``.

        ``at`` defaults to the last committed transaction; ``view`` is an open
        connection that sees the database as of ``at`` (an MVCC storage is read
        through it). Deleted objects are skipped. This generic walk keeps one set of
        oids; the other adapters stream.
        """
        at = at or self.last_committed()
        if at == z64:
            return
        oids: set[bytes] = set()
        with closed_after(self.storage.iterator(None, at)) as iterator:
            for txn in iterator:
                for record in txn:
                    oids.add(record.oid)
        before = _after(at)
        for oid in sorted(oids):
            found = self.storage.loadBefore(oid, before)
            if found is not None and found[0] is not None:
                yield oid, found[1], found[0]

    def load_many(self, oids: Iterable[bytes], *, before: bytes | None = None,
                  loader: Any = None) -> Iterator[Loaded]:
        """(oid, data, tid) of each of ``oids``, in order: its state before transaction
        ``before``, or its current one; ``(oid, None, None)`` where it has none then (not
        created yet, deleted, packed away). ``loader`` is what loads (:meth:`loader`).

        Where every load is a round trip, adapters load many at once; here they are
        loaded one by one.
        """
        storage = loader if loader is not None else self.storage
        for oid in oids:
            try:
                if before is None:
                    data, tid = storage.load(oid)
                else:
                    found = storage.loadBefore(oid, before)
                    data, tid = (found[0], found[1]) if found is not None else (None, None)
            except POSKeyError:
                data = tid = None
            yield (oid, data, tid) if data else (oid, None, None)

    def oid_index(self) -> Container[bytes] | None:
        """A container answering "does this oid exist" without reading records, if kept anyway."""
        return None

    def loader(self, conn: Any) -> Any:
        """What loads records (``load``, ``loadBefore``) as ``conn`` sees them."""
        return self.storage

    def historical_view(self, old_conn: Any, view: Any) -> None:
        """Make a historical connection readable where the storage keeps no old states
        (it then reads through ``view``, an open connection at the same transaction)."""


def _after(tid: bytes) -> bytes:
    return p64(u64(tid) + 1)


@contextmanager
def closed_after(iterator: Any) -> Iterator[Any]:
    """A storage's transaction iterator, closed on leaving (not every storage's has close)."""
    try:
        yield iterator
    finally:
        close: Callable[[], None] | None = getattr(iterator, "close", None)
        if close is not None:
            close()


def iternext_records(storage: Any, at: bytes, *, history: bool) -> Iterator[Record]:
    """Walk ``record_iternext``; a record written after ``at`` is replaced by its older state.

    A history-free storage has no older state to give (``history`` False); such a
    record is yielded as it is now. A deleted object makes FileStorage's
    ``record_iternext`` raise ``POSKeyError`` for the cursor naming it (its cursor is
    the next oid): the walk yields the object's state as of ``at``, if it had one,
    and goes on from the oid after it.
    """
    before = _after(at)
    if at == z64:  # nothing committed: an empty storage (ZEO reports that as an error)
        return
    cursor: Any = None
    after_deleted = False
    while True:
        try:
            oid, tid, data, cursor = storage.record_iternext(cursor)
        except POSKeyError:
            if not (isinstance(cursor, bytes) and len(cursor) == 8):
                return  # an empty storage
            oid, cursor, after_deleted = cursor, p64(u64(cursor) + 1), True
            found = _state_before(storage, oid, before) if history else None
            if found is not None:
                yield oid, found[1], found[0]
            continue
        except (KeyError, IndexError, StopIteration):  # empty storage
            return
        except ValueError:
            if after_deleted:  # no oid after the deleted one
                return
            raise
        after_deleted = False
        if history and u64(tid) > u64(at):
            found = _state_before(storage, oid, before)
            if found is None:
                data = None
            else:
                data, tid = found
        if data:
            yield oid, tid, data
        if cursor is None:
            return


def _state_before(storage: Any, oid: bytes, before: bytes) -> tuple[bytes, bytes] | None:
    """(data, tid) of the state ``oid`` had before transaction ``before``; None if none."""
    try:
        found = storage.loadBefore(oid, before)
    except POSKeyError:
        return None
    if found is None or not found[0]:
        return None
    return found[0], found[1]
