"""Streaming the current records of a storage, as of one transaction.

Each storage offers its own fastest way to list current records, so the scan picks
one per storage: a FileStorage is read sequentially with its iterator, keeping a
record only where the index points at it (several times faster than asking for
records one by one); storages with ``record_iternext`` (ZEO) are walked with it;
anything else is listed through its transaction iterator. Every path yields the
state as of the snapshot transaction, so the scan agrees with the patch's view even
while the application keeps committing.
"""

from __future__ import annotations

from collections.abc import Iterator

from ZODB.FileStorage import FileStorage
from ZODB.utils import p64, u64, z64

Record = tuple[bytes, bytes, bytes]  # (oid, tid, data)


def current_records(storage: object, *, at: bytes | None = None) -> Iterator[Record]:
    """Yield ``(oid, tid, data)`` of every object current at transaction ``at``.

    ``at`` defaults to the storage's last transaction. Deleted objects (no data)
    are skipped. Memory stays constant for FileStorage and record_iternext
    storages; the generic path keeps one set of oids.
    """
    if at is None:
        at = storage.lastTransaction()
    if isinstance(storage, FileStorage):
        return _filestorage_records(storage, at)
    if hasattr(storage, "record_iternext"):
        return _iternext_records(storage, at)
    return _iterator_records(storage, at)


def _before(at: bytes) -> bytes:
    return p64(u64(at) + 1)


def _filestorage_records(fs: FileStorage, at: bytes) -> Iterator[Record]:
    with fs._lock:
        end = fs._pos
    index = fs._index
    moved: set[bytes] = set()
    if at == z64:
        return
    iterator = fs.iterator(stop=at)
    try:
        for txn in iterator:
            for record in txn:
                data = record.data
                position = index.get(record.oid)
                if position == record.pos:
                    if data is not None:
                        yield record.oid, record.tid, data
                elif position is not None and position >= end:
                    # Rewritten after the snapshot: the version current at the
                    # snapshot is found below, once, with loadBefore.
                    moved.add(record.oid)
    finally:
        iterator.close()
    before = _before(at)
    for oid in sorted(moved):
        found = fs.loadBefore(oid, before)
        if found is not None and found[0] is not None:
            yield oid, found[1], found[0]


def _iternext_records(storage: object, at: bytes) -> Iterator[Record]:
    before = _before(at)
    cursor = None
    while True:
        try:
            oid, tid, data, cursor = storage.record_iternext(cursor)
        except (KeyError, IndexError, StopIteration):  # empty storage
            return
        if u64(tid) > u64(at):
            found = storage.loadBefore(oid, before)
            if found is None or found[0] is None:
                data = None
            else:
                data, tid = found[0], found[1]
        if data is not None:
            yield oid, tid, data
        if cursor is None:
            return


def _iterator_records(storage: object, at: bytes) -> Iterator[Record]:
    oids: set[bytes] = set()
    iterator = storage.iterator(None, at)
    try:
        for txn in iterator:
            for record in txn:
                oids.add(record.oid)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    before = _before(at)
    for oid in sorted(oids):
        found = storage.loadBefore(oid, before)
        if found is not None and found[0] is not None:
            yield oid, found[1], found[0]


def changed_since(storage: object, tid: bytes) -> list[bytes] | None:
    """Oids of the objects transactions after ``tid`` wrote, or None if the storage cannot say.

    Read from the storage's transaction iterator, which every history-keeping
    storage offers; it costs a read of only the transactions after ``tid``.
    """
    if storage.lastTransaction() == tid:
        return []
    iterate = getattr(storage, "iterator", None)
    if iterate is None:
        return None
    try:
        iterator = iterate(_before(tid))
    except Exception:  # storages without history refuse
        return None
    oids: dict[bytes, None] = {}
    try:
        for txn in iterator:
            for record in txn:
                oids[record.oid] = None
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return list(oids)
