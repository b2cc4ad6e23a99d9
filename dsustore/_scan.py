"""Streaming the current records of a storage, as of one transaction.

Each storage offers its own fastest way to list current records, so the scan picks
one per storage: a FileStorage is read sequentially with its iterator, keeping a
record only where the index points at it (several times faster than asking for
records one by one); storages with ``record_iternext`` (ZEO) are walked with it;
anything else is listed through its transaction iterator. Every path yields the
state as of the snapshot transaction, so the scan agrees with the patch's view even
while the application keeps committing.

RelStorage is an MVCC storage: each instance reads through its own database
snapshot, and the instance ``ZODB.DB`` holds as ``db.storage`` keeps whatever
snapshot it last had (it can be far behind). Its ``record_iternext`` is one SQL
query over the current objects, streamed with a server-side cursor; the scan runs
it on a fresh instance, or, when given the connection whose view it must match
(``view``), on that connection's instance -- the only way to read a history-free
database as of an earlier transaction.
"""

from __future__ import annotations

import struct
import tempfile

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ZODB.FileStorage import FileStorage
from ZODB.fsIndex import fsIndex
from ZODB.interfaces import IMVCCStorage
from ZODB.utils import p64, u64, z64

from ._capacity import _postgresql_adapter

Record = tuple[bytes, bytes, bytes]  # (oid, tid, data)


def current_records(storage: Any, *, at: bytes | None = None,
                    view: Any = None) -> Iterator[Record]:
    """Yield ``(oid, tid, data)`` of every object current at transaction ``at``.

    ``at`` defaults to the storage's last transaction. ``view`` is an open
    connection that sees the database as of ``at``; an MVCC storage (RelStorage)
    is read through it. Deleted objects (no data) are skipped. Memory stays
    constant for FileStorage and record_iternext storages; the generic path keeps
    one set of oids.
    """
    if IMVCCStorage.providedBy(storage):
        return _mvcc_records(storage, at, view)
    if at is None:
        at = last_committed(storage)
    if isinstance(storage, FileStorage):
        return _filestorage_records(storage, at)
    if hasattr(storage, "record_iternext"):
        return _iternext_records(storage, at)
    return _iterator_records(storage, at)


def last_committed(storage: Any) -> bytes:
    """The storage's last transaction, after catching up with commits made elsewhere.

    A ZEO client learns of other clients' commits asynchronously; a round trip to
    the server (``ping``) makes sure it has heard of every one before it answers.
    An MVCC storage's instance polls (see :func:`dsustore._namespace.last_transaction`).
    """
    if IMVCCStorage.providedBy(storage):
        storage.poll_invalidations()
    else:
        ping = getattr(storage, "ping", None)
        if callable(ping):
            ping()
    return storage.lastTransaction()


def _mvcc_records(storage: Any, at: bytes | None, view: Any) -> Iterator[Record]:
    """Current records of an MVCC storage, read through an instance with a fixed snapshot."""
    if view is not None:
        yield from _iternext_records(view._normal_storage, at or view._normal_storage.lastTransaction())
        return
    instance = storage.new_instance()
    try:
        instance.poll_invalidations()  # a snapshot of now, which is at or after ``at``
        yield from _iternext_records(instance, at or instance.lastTransaction())
    finally:
        instance.release()


def _before(at: bytes) -> bytes:
    return p64(u64(at) + 1)


_TXN_HEADER = struct.Struct(">8sQcHHH")  # tid, length, status, user/description/extension lengths
_DATA_HEADER = struct.Struct(">8s8sQQHQ")  # oid, tid, previous, txn position, version length, length


def _filestorage_records(fs: FileStorage, at: bytes) -> Iterator[Record]:
    """Read the data file in order, keeping each record the index points at.

    The file is parsed here rather than through ``fs.iterator()``: the iterator
    builds a transaction and a record object for every record, which costs as much
    as reading the file. A record the index does not point at is old (skipped) or
    was rewritten after ``at``; that one is loaded as of ``at`` at the end.
    """
    if at == z64:
        return
    end = _end_of(fs, at)
    position_of = _index_reader(fs._index)
    moved: list[bytes] = []
    for record, oid, tid, data in _data_records(fs, 4, end):
        current = position_of(oid)
        if current == record and data is not None:
            yield oid, tid, data
        elif current is not None and (current >= end or (current == record and data is None)):
            moved.append(oid)  # rewritten after ``at``, or its data is elsewhere (undo, copy)
    before = _before(at)
    for oid in sorted(set(moved)):
        found = fs.loadBefore(oid, before)
        if found is not None and found[0] is not None:
            yield oid, found[1], found[0]


def _data_records(fs: FileStorage, start: int, end: int, *,
                  data: bool = True) -> Iterator[tuple[int, bytes, bytes, bytes | None]]:
    """(position, oid, tid, data) of the records of the transactions between two file
    positions; data is None where the record holds a pointer back to it (or when not
    asked for). Both positions are transaction boundaries of committed data."""
    with open(fs._file_name, "rb", buffering=1 << 20) as file:
        read, seek = file.read, file.seek
        seek(start)
        position = start
        while position < end:
            _tid, length, status, ulen, dlen, elen = _TXN_HEADER.unpack(read(23))
            txn_end = position + length
            record = position + 23 + ulen + dlen + elen
            seek(record)
            while record < txn_end:
                oid, tid, _prev, _tloc, vlen, plen = _DATA_HEADER.unpack(read(42))
                if vlen:
                    raise ValueError(f"{fs._file_name}: a record with a version (pre-ZODB 4 format)")
                if plen and data:
                    yield record, oid, tid, read(plen)
                else:
                    yield record, oid, tid, None
                    seek(record + (42 + plen if plen else 50))
                record += 42 + plen if plen else 50
            position = txn_end + 8  # past the transaction length, repeated
            seek(position)


def _index_reader(index: Any) -> Callable[[bytes], int | None]:
    """``index.get`` for a FileStorage index, without its per-call Python overhead.

    An ``fsIndex`` maps the first six bytes of an oid to a bucket of the last two;
    a scan in file order meets oids of the same bucket one after another, so the
    bucket is looked up once per run of them. Any other index uses ``get``.
    """
    if not isinstance(index, fsIndex):
        return index.get
    buckets = index._data.get
    last: list[Any] = [None, None]  # prefix, that prefix's bucket.get

    def position_of(oid: bytes) -> int | None:
        prefix = oid[:6]
        if prefix != last[0]:
            bucket = buckets(prefix)
            last[0], last[1] = prefix, (bucket.get if bucket is not None else None)
        get = last[1]
        found = get(oid[6:]) if get is not None else None
        return int.from_bytes(found, "big") if found is not None else None

    return position_of


def _end_of(fs: FileStorage, at: bytes) -> int:
    """The file position where the transactions after ``at`` begin.

    A record whose current version lies at or past it was rewritten after ``at``.
    Found by stepping back from the end of the committed data, one transaction at a
    time (a transaction's length is repeated after it): only the transactions after
    ``at`` are read. (``fs.iterator(start)`` looks for its start from the end of the
    file, where a transaction being committed can make it fail.)
    """
    with fs._lock:
        end, last = fs._pos, fs._ltid
    if u64(at) >= u64(last):
        return end
    with open(fs._file_name, "rb") as file:
        while end > 4:
            file.seek(end - 8)
            start = end - 8 - u64(file.read(8))
            file.seek(start)
            if u64(file.read(8)) <= u64(at):
                return end
            end = start
    return end


def _iternext_records(storage: Any, at: bytes) -> Iterator[Record]:
    """Walk ``record_iternext``; a record written after ``at`` is replaced by its older state.

    A history-free storage has no older state to give; such a record is yielded
    as it is now (``view`` avoids the case for the scans that need exactness).
    """
    before = _before(at)
    if at == z64:  # nothing committed: an empty storage (ZEO reports that as an error)
        return
    cursor = None
    while True:
        try:
            oid, tid, data, cursor = storage.record_iternext(cursor)
        except (KeyError, IndexError, StopIteration):  # empty storage
            return
        if u64(tid) > u64(at) and keeps_history(storage):
            found = storage.loadBefore(oid, before)
            if found is None or found[0] is None:
                data = None
            else:
                data, tid = found[0], found[1]
        if data is not None:
            yield oid, tid, data
        if cursor is None:
            return


def keeps_history(storage: Any) -> bool:
    """Whether ``storage`` keeps old revisions (history-free RelStorage does not)."""
    options = getattr(storage, "_options", None)
    if options is not None and hasattr(options, "keep_history"):
        return bool(options.keep_history)
    keep = getattr(storage, "keep_history", None)
    if isinstance(keep, bool):
        return keep
    return hasattr(storage, "loadBefore") and hasattr(storage, "iterator")


def is_zeo(storage: Any) -> bool:
    """Whether ``storage`` is a ZEO client: every read of it is a round trip to the server."""
    return type(storage).__module__.startswith("ZEO.")


@contextmanager
def closed_after(iterator: Any) -> Iterator[Any]:
    """A storage's transaction iterator, closed on leaving (not every storage's has close)."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _iterator_records(storage: Any, at: bytes) -> Iterator[Record]:
    oids: set[bytes] = set()
    with closed_after(storage.iterator(None, at)) as iterator:
        for txn in iterator:
            for record in txn:
                oids.add(record.oid)
    before = _before(at)
    for oid in sorted(oids):
        found = storage.loadBefore(oid, before)
        if found is not None and found[0] is not None:
            yield oid, found[1], found[0]


def changed_since(storage: object, tid: bytes, upto: bytes | None = None) -> list[bytes] | None:
    """Oids of the objects transactions after ``tid`` wrote, or None if the storage cannot say.

    RelStorage on PostgreSQL answers with one SQL query (:func:`_relstorage_changed`);
    other storages are read from their transaction iterator, which every
    history-keeping storage offers, at the cost of a read of only the transactions
    after ``tid``, and up to ``upto`` (a committed transaction: a FileStorage iterator
    that runs into one still being written warns of a truncated file).
    """
    upto = upto or last_committed(storage)
    if upto == tid:
        return []
    listed = _relstorage_changed(storage, tid)
    if listed is not None:
        return listed
    if isinstance(storage, FileStorage):  # read in place: its iterator can trip on a commit
        start, end = _end_of(storage, tid), _end_of(storage, upto)
        return list(dict.fromkeys(oid for _, oid, _, _ in
                                  _data_records(storage, start, end, data=False)))
    iterate = getattr(storage, "iterator", None)
    if iterate is None:
        return None
    try:
        iterator = iterate(_before(tid), upto)
    except Exception:  # storages without history refuse
        return None
    oids: dict[bytes, None] = {}
    with closed_after(iterator):
        for txn in iterator:
            for record in txn:
                oids[record.oid] = None
    return list(oids)


#: the objects written after a tid, from the table that holds each mode's current states
_CHANGED_SQL = {
    True: "SELECT zoid FROM current_object WHERE tid > %s",  # history-preserving
    False: "SELECT zoid FROM object_state WHERE tid > %s",  # history-free
}


def _relstorage_changed(storage: Any, tid: bytes) -> list[bytes] | None:
    """Oids written after ``tid`` on RelStorage over PostgreSQL; None for other storages.

    One query over an index on ``tid``, where the transaction iterator takes one
    per transaction (a history-free database has no transaction table: its
    iterator is rebuilt from the tids of the current states). It runs on the
    load connection of ``storage``, which :func:`last_committed` has just polled:
    the snapshot its ``load`` reads, so each oid listed loads as last written.
    """
    adapter = _postgresql_adapter(storage)
    if adapter is None:
        return None
    cursor = storage._load_connection.cursor
    cursor.execute(_CHANGED_SQL[bool(adapter.keep_history)], (u64(tid),))
    return [p64(zoid) for (zoid,) in cursor.fetchall()]


class ScanSpool:
    """The records of one scan kept in a temporary file, for the later stages of a patch.

    On ZEO every record a scan reads is a round trip to the server; a patch in
    several stages would pay that once per stage. The first stage's scan is
    written here as it goes, and the later stages read it back from local disk
    (all stages read the database as of the same transaction).
    """

    _HEADER = struct.Struct(">8s8sQ")  # oid, tid, data length

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="dsustore-scan")
        self.complete = False

    def keep(self, records: Iterator[Record]) -> Iterator[Record]:
        """Yield ``records``, writing each down; complete once they are all read."""
        write, pack = self._file.write, self._HEADER.pack
        for oid, tid, data in records:
            write(pack(oid, tid, len(data)))
            write(data)
            yield oid, tid, data
        self.complete = True

    def replay(self) -> Iterator[Record]:
        """The records kept, in the order they were read."""
        file = self._file
        file.flush()
        file.seek(0)
        read, unpack, size = file.read, self._HEADER.unpack, self._HEADER.size
        while True:
            header = read(size)
            if len(header) < size:
                return
            oid, tid, length = unpack(header)
            yield oid, tid, read(length)

    def close(self) -> None:
        self._file.close()


class ChangeRecorder:
    """The oids other transactions commit, as a connection's MVCC view hears of them.

    A ZEO client is told of every commit (to invalidate its caches); recording
    those messages answers "what changed since" without reading the transaction
    log back over the network, one round trip per record. If the view is told
    to drop everything (a reconnect), the recorder no longer knows and says so.
    """

    def __init__(self, instance: Any) -> None:
        self._instance = instance
        self._commits: list[tuple[bytes, tuple[bytes, ...]]] = []
        self.lost = False
        invalidate, invalidate_all = instance._invalidate, instance._invalidateCache
        with instance._lock:  # commits heard since the view's snapshot, before this was installed
            heard, start = instance._invalidations, getattr(instance, "_start", None)
            if heard is None or start is None:
                self.lost = True
            elif heard:
                self._commits.append((start, tuple(heard)))

        def _invalidate(tid: bytes, oids: Any) -> None:
            self._commits.append((tid, tuple(oids)))
            invalidate(tid, oids)

        def _invalidate_cache() -> None:
            self.lost = True
            invalidate_all()

        instance._invalidate = _invalidate
        instance._invalidateCache = _invalidate_cache

    @classmethod
    def on(cls, connection: Any) -> ChangeRecorder | None:
        """A recorder on ``connection``'s view where that saves round trips (ZEO), else None."""
        instance = connection._normal_storage
        storage = getattr(instance, "_storage", None)
        if not hasattr(instance, "_invalidate") or not is_zeo(storage):
            return None
        return cls(instance)

    def changed(self, since: bytes, upto: bytes) -> list[bytes] | None:
        """Oids committed after ``since`` up to ``upto``; None once the recorder lost track."""
        if self.lost:
            return None
        low, high = u64(since), u64(upto)
        oids: dict[bytes, None] = {}
        for tid, committed in list(self._commits):
            if low < u64(tid) <= high:
                oids.update(dict.fromkeys(committed))
        return list(oids)

    def remove(self) -> None:
        """Give the view its own methods back."""
        self._instance.__dict__.pop("_invalidate", None)
        self._instance.__dict__.pop("_invalidateCache", None)
