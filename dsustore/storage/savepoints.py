"""The patch connection's savepoint storage, tuned for one long streaming write.

(ZODB's ``TmpStore`` and ``Connection._commit_savepoint`` are private; this module
and :mod:`.connections` are where dsustore relies on them.)

ZODB's TmpStore seeks before every store (which flushes its buffer, a system call
per record) and, at commit, the connection reads every record back with a seek and
unpickles its class to look for blobs. An update that writes every object of a
large database pays for that on each record. This store appends without seeking
and hands its records back in file order with one sequential read; blobs keep
ZODB's own path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any

from ZODB.Connection import Connection, TmpStore
from ZODB.mvccadapter import MVCCAdapterInstance
from ZODB.POSException import ConflictError
from ZODB.utils import p64, u64

from . import adapter_for
from .spool import close_apart

_BLOB_KEY = b"ZODB.blob\nBlob"
_HEADER = struct.Struct(">Q8s8sQ")  # oid length, oid, serial, data length
_CHUNK = 1 << 20  # how much the store writes, and its drain reads, at once
_CLOSE_APART = 1 << 24  # a savepoint file this large is closed in another thread


class AppendingTmpStore(TmpStore):
    """A TmpStore that appends and reads back sequentially."""

    #: oid -> position of its latest record (TmpStore's own attributes, typed)
    index: dict[bytes, int]
    position: int
    creating: dict[bytes, Any]

    def __init__(self, storage: Any) -> None:
        super().__init__(storage)
        self._at_end = True
        #: records stored but not yet written: the file gets them a chunk at a time
        self._pending: list[bytes] = []
        self._pending_size = 0
        self.has_blobs = False
        #: positions of records a later store of the same oid replaced
        self.superseded: set[int] = set()
        #: a transaction as of which every record's serial is its object's committed tid,
        #: where the object was not written after it (a patch sets it when it has caught
        #: up): the commit checks serials only for objects written later
        self.serials_upto: bytes | None = None
        #: the commit the storage's adapter prepared from the records before ``staged_end``
        #: (:func:`stage_commit`), and the positions of those records stored again since
        self.staged: Any = None
        self.staged_end = 0
        self.restaged: list[int] = []

    def _write_pending(self) -> None:
        """Write the stored records the file does not have yet, where they belong."""
        if not self._pending:
            return
        if not self._at_end:
            self._file.seek(self.position - self._pending_size)
            self._at_end = True
        self._file.write(b"".join(self._pending))
        self._pending, self._pending_size = [], 0

    def load(self, oid: bytes, version: str = "") -> tuple[bytes, bytes]:
        self._write_pending()
        self._at_end = False
        return super().load(oid, version)

    def store(self, oid: bytes, serial: bytes | None, data: bytes, version: str,
              transaction: Any) -> bytes:
        if serial is None:
            serial = b"\0" * 8
        if data.find(_BLOB_KEY, 0, 40) >= 0:
            self.has_blobs = True
        if len(oid) == 8 and len(serial) == 8:
            header = _HEADER.pack(8, oid, serial, len(data))
        else:
            header = p64(len(oid)) + oid + serial + p64(len(data))
        pending = self._pending
        pending.append(header)
        pending.append(data)
        size = len(header) + len(data)
        self._pending_size += size
        index = self.index
        previous = index.get(oid)
        if previous is not None:
            self.superseded.add(previous)
            if previous < self.staged_end:
                self.restaged.append(previous)
        index[oid] = position = self.position
        self.position = position + size
        if self._pending_size >= _CHUNK:
            self._write_pending()
        return serial

    def storeBlob(self, *args: Any, **kw: Any) -> None:  # noqa: N802 (ZODB's name)
        self._write_pending()
        self.has_blobs = True
        self._at_end = False
        super().storeBlob(*args, **kw)

    def reset(self, position: int, index: dict[bytes, int], creating: Any) -> None:
        """Roll back to a savepoint (ZODB's): what was stored since is cut off, and the
        records it had replaced are current again."""
        self._write_pending()
        self._at_end = False
        self.unstage()  # the staged records may be current again, or gone
        super().reset(position, index, creating)
        live = set(self.index.values())
        self.superseded = {at for at in self.superseded if at < position and at not in live}

    def read_at(self, position: int) -> tuple[bytes, bytes]:
        """(data, serial) of the record written at ``position``."""
        _oid, serial, data = self.record_at(position)
        return data, serial

    def record_at(self, position: int) -> tuple[bytes, bytes, bytes]:
        """(oid, serial, data) of the record written at ``position``."""
        self._write_pending()
        self._at_end = False
        self._file.seek(position)
        return _read_record(self._file.read)

    def unstage(self) -> None:
        """Forget the staged commit, if any (the commit then stores every record)."""
        staged, self.staged = self.staged, None
        self.staged_end, self.restaged = 0, []
        if staged is not None:
            staged.close()

    def close(self) -> None:
        """Close the file, and the staged commit's: large ones in another thread, as
        freeing their pages takes a while that nothing needs to wait for (the files have
        no name; the process's end removes them all the same)."""
        staged, self.staged = self.staged, None
        self.staged_end, self.restaged = 0, []
        closes = [super().close] + ([staged.close] if staged is not None else [])
        if self.position < _CLOSE_APART:
            for close in closes:
                close()
            return
        close_apart(*closes)

    def frozen(self) -> FrozenStore:
        """What this store holds now, readable later even after more is appended."""
        return FrozenStore(self)

    def drain(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """The latest (oid, serial, data) of every stored object, in file order, once.

        The index is dropped first: the storage builds its own index of the
        transaction from these records, and holding both at once would double
        the memory a large update needs at its commit.
        """
        records = self.latest()
        self.index = {}
        for _position, oid, serial, data in records:
            yield oid, serial, data

    def latest(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        """(position, oid, serial, data) of the records from ``start`` on that no later
        store replaced, in file order: the file is read sequentially, a chunk at a time.
        Nothing may be stored or read while this runs."""
        self._write_pending()
        self._file.flush()
        self._at_end = False
        return self._latest(start, self.position, self.superseded)

    def _latest(self, start: int, end: int,
                superseded: set[int]) -> Iterator[tuple[int, bytes, bytes, bytes]]:
        file = self._file
        file.seek(start)
        unpack_from, header_size = _HEADER.unpack_from, _HEADER.size
        buffer = b""
        offset = 0  # of the buffer's next record
        position = start  # in the file
        while position < end:
            if len(buffer) - offset < header_size:
                buffer = buffer[offset:] + file.read(_CHUNK)
                offset = 0
            oid_size = u64(buffer[offset:offset + 8])
            if oid_size != 8:  # another layout: read this record on its own
                file.seek(position)
                oid, serial, data = _read_record(file.read)
                size = 24 + len(oid) + len(data)
                buffer, offset = b"", 0
                file.seek(position + size)
            else:
                _, oid, serial, length = unpack_from(buffer, offset)
                size = header_size + length
                if len(buffer) - offset < size:
                    buffer = buffer[offset:] + file.read(max(_CHUNK, size))
                    offset = 0
                data = buffer[offset + header_size:offset + size]
                offset += size
            if position not in superseded:
                yield position, oid, serial, data
            position += size


def _read_record(read: Any) -> tuple[bytes, bytes, bytes]:
    """(oid, serial, data) of the record at the file's position, in TmpStore's layout."""
    oid = read(u64(read(8)))
    serial = read(8)
    return oid, serial, read(u64(read(8)))


class FrozenStore:
    """The savepoint storage as it was at one moment.

    A patch in stages reads the state each stage started from (its old namespace)
    through this: the store only ever appends, so a copy of its index at that moment
    keeps pointing at the records as they were.
    """

    def __init__(self, store: AppendingTmpStore) -> None:
        self._store = store
        self.index = dict(store.index)
        self.created = list(store.creating)
        self.position = store.position

    def __contains__(self, oid: bytes) -> bool:
        return oid in self.index

    def load(self, oid: bytes) -> tuple[bytes, bytes]:
        return self._store.read_at(self.index[oid])


#: from this many records on, a commit makes the process's other connections drop
#: their caches instead of listing every oid for them to invalidate
FULL_INVALIDATION_AT = 10_000


def use_appending_savepoints(conn: Connection) -> AppendingTmpStore:
    """Give ``conn`` an appending savepoint storage and a commit that streams it."""
    store = AppendingTmpStore(conn._normal_storage)
    conn._savepoint_storage = store
    conn._storage = store

    def commit_savepoint(transaction: Any) -> None:
        src = conn._savepoint_storage
        if not isinstance(src, AppendingTmpStore) or src.has_blobs:
            return Connection._commit_savepoint(conn, transaction)
        conn._storage = conn._normal_storage
        conn._savepoint_storage = None
        try:
            conn._creating.update(src.creating)
            store_record, stored, streaming = _record_store(conn._storage, len(src.index),
                                                            src.serials_upto)
            cache = conn._cache
            modified = conn._modified
            read_current = conn._readCurrent
            again = None
            copy_staged = getattr(streaming, "copy_staged", None)
            if src.staged is not None and copy_staged is not None:
                again = copy_staged(src.staged, src.restaged, src.index)
            if again is None:
                for oid, serial, data in src.drain():
                    if cache.get(oid) is not None:  # its serial is updated, or it is dropped on abort
                        modified.append(oid)
                    store_record(oid, serial, data, "", transaction)
                    read_current.pop(oid, None)
            else:  # the staged records are in: the ones stored since, or committed over since
                index = src.index
                modified.extend(_cached(cache, index))
                for oid in [oid for oid in read_current if oid in index]:
                    del read_current[oid]
                src.index = {}
                for _position, oid, serial, data in src.latest(src.staged_end):
                    store_record(oid, serial, data, "", transaction)
                for position in again:
                    oid, serial, data = src.record_at(position)
                    store_record(oid, serial, data, "", transaction)
            stored(transaction)
        finally:
            src.close()

    def commit(transaction: Any) -> None:
        """``Connection.commit`` without the savepoint it takes first, which copies the
        savepoint index -- one entry per record the update wrote -- to throw it away."""
        if not isinstance(conn._savepoint_storage, AppendingTmpStore):
            return Connection.commit(conn, transaction)
        transaction = transaction.data(conn)
        conn._creating.clear()  # what the savepoint does, but the copy
        conn._commit(None)
        conn._storage.creating.update(conn._creating)
        conn._creating.clear()
        conn._registered_objects = []
        conn._commit_savepoint(transaction)
        for oid, serial in conn._readCurrent.items():
            try:
                conn._storage.checkCurrentSerialInTransaction(oid, serial, transaction)
            except ConflictError:
                conn._cache.invalidate(oid)
                raise

    conn._commit_savepoint = commit_savepoint
    conn.commit = commit
    return store


def stage_commit(conn: Connection, upto: bytes) -> bool:
    """Prepare, while the application still writes, the commit of what ``conn``'s savepoint
    storage holds now; whether its storage's adapter did (see
    :meth:`~.adapter.StorageAdapter.stage_commit`).

    ``upto``: every record is migrated from its object's state as of that committed
    transaction, or later. What is stored after this, and records whose object another
    transaction commits after ``upto``, the commit stores one by one as before; anything
    that makes the staged records unusable (a rollback to a savepoint, blobs) drops them.
    Only a commit that would stream its records (:data:`FULL_INVALIDATION_AT`) is staged.
    """
    src = conn._savepoint_storage
    instance = conn._normal_storage
    if not isinstance(src, AppendingTmpStore) or src.has_blobs \
            or len(src.index) < FULL_INVALIDATION_AT \
            or not isinstance(instance, MVCCAdapterInstance):
        return False
    src.unstage()
    staged = adapter_for(instance._storage).stage_commit(src, upto)
    if staged is None:
        return False
    src.staged, src.staged_end = staged, staged.end
    return True


def _cached(cache: Any, oids: dict[bytes, int]) -> list[bytes]:
    """The oids among ``oids`` that ``cache`` holds, looking through the smaller of the two."""
    if len(cache) < len(oids):
        return [oid for oid, _obj in cache.items() if oid in oids]
    get = cache.get
    return [oid for oid in oids if get(oid) is not None]


def _record_store(instance: Any, count: int, upto: bytes | None
                  ) -> tuple[Callable[..., Any], Callable[[Any], None], Any]:
    """Where a large commit stores its records, so that memory does not grow per record
    twice and storing costs little per record; and what to call once every record is
    stored (before the vote).

    ZODB's MVCC adapter keeps the oid of every stored record, to invalidate it in
    the process's other connections when the transaction finishes. For a large
    update that is a second per-record index next to the storage's own; here the
    records go to the storage underneath, and at the finish the other connections
    are told to drop their whole cache, which is what ZODB does when it cannot say
    what changed (a ZEO reconnect). A storage whose adapter streams a large commit
    in bulk gets its records that way (ZEO: one message a record otherwise;
    FileStorage, when the patch vouches for the serials as of ``upto``: a chunk at a
    time). Smaller commits keep the precise path. The third value is the streaming
    store, where there is one (it may take staged records: :func:`stage_commit`).
    """
    if count < FULL_INVALIDATION_AT or not isinstance(instance, MVCCAdapterInstance):
        return instance.store, _stored, None
    finish = instance.tpc_finish
    storage = instance._storage
    streaming = adapter_for(storage).streaming_store(upto)

    def tpc_finish(transaction: Any, func: Any = lambda tid: None) -> Any:
        def invalidate_all(tid: bytes) -> None:
            if streaming is not None:
                streaming.finish()
            base = instance._base
            with base._lock:
                others = [other for other in base._instances if other is not instance]
            for other in others:
                other._invalidateCache()
            func(tid)

        _unhook(instance)
        return finish(transaction, invalidate_all)

    instance.tpc_finish = tpc_finish
    give_back = getattr(streaming, "give_back", None)
    if give_back is not None:  # what the streaming store lent the storage comes back
        vote, abort = instance.tpc_vote, instance.tpc_abort

        def tpc_vote(transaction: Any) -> Any:
            instance.__dict__.pop("tpc_vote", None)
            try:
                return vote(transaction)
            finally:
                give_back()

        def tpc_abort(transaction: Any) -> Any:
            _unhook(instance)
            give_back()  # before the storage's commit lock is let go
            return abort(transaction)

        instance.tpc_vote, instance.tpc_abort = tpc_vote, tpc_abort
    if streaming is not None:
        return streaming.store, streaming.flush, streaming
    return storage.store, _stored, None


def _unhook(instance: Any) -> None:
    """The storage instance's own two-phase commit methods, back."""
    for name in ("tpc_vote", "tpc_abort", "tpc_finish"):
        instance.__dict__.pop(name, None)


def _stored(transaction: Any) -> None:
    """Nothing to do once every record is stored."""


def release(conn: Connection) -> None:
    """Give a pooled connection back its ordinary savepoint commit."""
    conn.__dict__.pop("_commit_savepoint", None)
    conn.__dict__.pop("commit", None)
    if isinstance(conn._normal_storage, MVCCAdapterInstance):  # if it never finished
        _unhook(conn._normal_storage)
