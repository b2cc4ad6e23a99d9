"""ZEO: a client of a storage server, where every read is a round trip.

A scan asks the server for the state as of its transaction of every oid up to the
highest one the server has handed out -- ``loadBefore`` requests sent in batches,
several batches in flight while the client decodes the last one
(:class:`BulkLoader`) -- instead of one ``record_iternext`` round trip per record;
a restore loads the objects it rewrites the same way. What other clients commit is
learnt from the invalidations the server sends every client
(:class:`ChangeRecorder`) instead of reading the transaction log back over the
network; objects about to be loaded one by one are prefetched in one request.
"""

from __future__ import annotations

import concurrent.futures
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import islice
from typing import Any

from ZODB.POSException import POSKeyError
from ZODB.utils import maxtid, p64, u64, z64

from .adapter import Loaded, Record, StorageAdapter, _after, iternext_records
from .connections import instance_of

#: at most this many oids per request batch of a bulk read, and this many batches in
#: flight: the server answers the next ones while the client decodes one
BATCH = 2000
IN_FLIGHT = 3
#: fewer oids per batch where records are large: a batch holds about this many bytes
BATCH_BYTES = 2 << 20
#: records per batch a large commit sends, and batches sent before the server took them
STORE_BATCH = 1000
STORE_AHEAD = 4
#: a scan probes every oid up to the highest handed out; where that is more than this
#: many probes per stored object, and this many more (a database mostly packed away),
#: one round trip per stored record costs less
SPARSE = 8
SPARSE_SLACK = 1000


class ZEOAdapter(StorageAdapter):
    """A ``ZEO.ClientStorage.ClientStorage``."""

    kind = "zeo"
    scans_are_remote = True

    @classmethod
    def accepts(cls, storage: Any) -> bool:
        module = sys.modules.get("ZEO.ClientStorage")  # not imported: no client exists
        return module is not None and isinstance(storage, module.ClientStorage)

    @property
    def keeps_history(self) -> bool:
        return True

    def last_committed(self) -> bytes:
        """A client hears of other clients' commits asynchronously; a round trip to the
        server (``ping``) makes sure it has heard of every one before it answers."""
        self.storage.ping()
        return self.storage.lastTransaction()

    def current_records(self, *, at: bytes | None = None, view: Any = None) -> Iterator[Record]:
        """Every object's state as of ``at``, read in bulk (see :meth:`_bulk_scan`); one
        ``record_iternext`` round trip per record where bulk reading does not apply."""
        at = at or self.last_committed()
        if at == z64:  # nothing committed: an empty storage (ZEO reports that as an error)
            return iter(())
        return self._bulk_scan(at)

    def _bulk_scan(self, at: bytes) -> Iterator[Record]:
        """``loadBefore(oid, at + 1)`` of every oid from 0 up to the highest handed out.

        Every stored object has an oid the server handed out (a storage that is given
        one it did not hand out, by an import or a copy, hands out higher ones from
        then on), so asking for an oid the server allocates now bounds them all. Each
        answer is the object's state as of ``at``: an oid never used or packed away
        has none (``POSKeyError``), nor has an object created after ``at`` (None) or
        deleted (no data). The oids come in order, as ``record_iternext`` gives them.
        """
        highest = self._highest_oid()
        if highest is None:
            yield from iternext_records(self.storage, at, history=True)
            return
        oids = (p64(number) for number in range(highest + 1))
        for oid, data, tid in self._load_many(oids, _after(at)):
            if data is not None:
                assert tid is not None
                yield oid, tid, data

    def _highest_oid(self) -> int | None:
        """The highest oid the server has handed out, when a bulk scan is the cheaper way to
        read every record; None when it is not, or when a read-only client cannot ask."""
        storage = self.storage
        if storage.isReadOnly():  # the server refuses to hand out an oid
            return None
        highest = u64(storage._call("new_oids", 1)[0]) - 1  # one oid is left unused
        stored = storage._call("get_info")["length"]
        if highest > SPARSE * stored + SPARSE_SLACK:
            return None
        return highest

    def load_many(self, oids: Iterable[bytes], *, before: bytes | None = None,
                  loader: Any = None) -> Iterator[Loaded]:
        """Every oid's state in bulk, from the server (not through the client cache)."""
        if loader is not None and loader is not self.storage:
            return super().load_many(oids, before=before, loader=loader)
        return self._load_many(oids, before or maxtid)

    def _load_many(self, oids: Iterable[bytes], before: bytes) -> Iterator[Loaded]:
        """(oid, data, tid) of each oid before ``before``, ``IN_FLIGHT`` batches ahead."""
        loader = BulkLoader(self.storage)
        source = iter(oids)
        pending: deque[tuple[list[bytes], concurrent.futures.Future[list[Any]]]] = deque()
        size = BATCH

        def ask() -> None:
            batch = list(islice(source, size))
            if batch:
                pending.append((batch, loader.request(batch, before)))

        for _ in range(IN_FLIGHT):
            ask()
        while pending:
            batch, request = pending.popleft()
            answers = request.result()
            found = [answer for answer in answers if type(answer) is tuple and answer[0]]
            if found:  # fewer oids per batch where records are large
                average = sum(len(answer[0]) for answer in found) // len(found) + 1
                size = max(16, min(BATCH, BATCH_BYTES // average))
            ask()
            for oid, answer in zip(batch, answers, strict=True):
                if type(answer) is tuple:
                    data, tid, _end = answer
                    yield (oid, data, tid) if data else (oid, None, None)
                elif answer is None or isinstance(answer, POSKeyError):
                    yield oid, None, None
                else:
                    raise answer

    def changed_since(self, tid: bytes, upto: bytes | None = None) -> list[bytes] | None:
        """From the server's list of the oids recent transactions wrote, in one round trip
        (the list ZEO clients check their caches with); by reading the transaction log
        back, a round trip per record, when the list does not reach back to ``tid`` or
        goes past ``upto``."""
        upto = upto or self.last_committed()
        if upto == tid:
            return []
        found = self.storage._call("getInvalidations", tid)
        if found is not None and found[0] == upto:
            return list(found[1])
        return super().changed_since(tid, upto)

    def streaming_store(self, upto: bytes | None = None) -> StreamingStore:
        return StreamingStore(self.storage)

    def change_recorder(self, conn: Any) -> ChangeRecorder:
        return ChangeRecorder(instance_of(conn))

    def prefetch(self, oids: list[bytes]) -> None:
        """Ask the server for them all at once (into the client cache), not a round trip each."""
        if oids:
            self.storage.prefetch(oids, p64(u64(self.storage.lastTransaction()) + 1))


class BulkLoader:
    """``loadBefore`` requests sent many at a time, answered past the client cache.

    A ZEO client's calls wait for their answer one at a time, and its ``prefetch``
    puts what it loads in the client cache, which is bounded: what a scan prefetches
    beyond it is evicted before it is read, and what fits evicts what the
    application keeps there. Here a batch of requests is written at once in the
    client's I/O thread (the only thread that may use the connection) and the
    answers come back together, in order, to the thread that asked.
    """

    def __init__(self, storage: Any) -> None:
        runner = storage._server
        self._loop = runner.loop
        self._io = runner.client

    def request(self, oids: list[bytes], before: bytes) -> concurrent.futures.Future[list[Any]]:
        """Ask for ``loadBefore(oid, before)`` of each oid. The future's result has the
        answer for each, in order: (data, tid, end tid), None, or the exception raised."""
        answers: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        if not oids:
            answers.set_result([])
        else:
            self._loop.call_soon_threadsafe(self._send, oids, before, answers)
        return answers

    def _send(self, oids: list[bytes], before: bytes,
              answers: concurrent.futures.Future[list[Any]]) -> None:
        """Write the requests (in the I/O thread)."""
        results: list[Any] = [None] * len(oids)
        left = len(oids)

        def arrived(index: int, future: Any) -> None:
            nonlocal left
            try:
                results[index] = future.result()
            except Exception as err:  # handed back: POSKeyError is an answer too
                results[index] = err
            left -= 1
            if not left and not answers.done():
                answers.set_result(results)

        try:
            protocol = self._io.protocol
            if protocol is None or not self._io.operational:
                from ZEO.Exceptions import ClientDisconnected
                raise ClientDisconnected("not connected to the ZEO server")
            call = protocol.call_sync
            for index, oid in enumerate(oids):
                call("loadBefore", (oid, before)).add_done_callback(partial(arrived, index))
        except Exception as err:
            if not answers.done():
                answers.set_exception(err)


class StreamingStore:
    """The records of one large commit, sent to the server a batch at a time.

    ``ClientStorage.store`` hands each record to the client's I/O thread on its own,
    waking it once per record, and keeps the record to put in the client cache when
    the transaction finishes: for an update that rewrites most of a database that is
    most of the client's work, and it evicts the whole cache. Here a batch of records
    goes to the I/O thread at once, and the transaction buffer keeps only their oids,
    so that the cache forgets their old states at the finish. After each batch the
    server is pinged; it answers in order, once it has taken the batch, and no more
    than ``STORE_AHEAD`` batches wait unanswered: a server storing more slowly than
    the client sends does not make the records pile up in the client's memory.
    """

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        self._records: list[tuple[bytes, bytes, bytes]] = []
        self._answers: deque[Any] = deque()

    def store(self, oid: bytes, serial: bytes, data: bytes, version: str,
              transaction: Any) -> None:
        self._records.append((oid, serial, data))
        if len(self._records) >= STORE_BATCH:
            self._send(transaction)

    def flush(self, transaction: Any) -> None:
        """Send what is left (the vote that follows waits for the server to take it all)."""
        if self._records:
            self._send(transaction)
        self._answers.clear()

    def finish(self) -> None:
        """Nothing is left to do as the transaction finishes."""

    def _send(self, transaction: Any) -> None:
        storage = self._storage
        buffer = storage._check_trans(transaction, "store")
        records, self._records = self._records, []
        ident = id(transaction)
        storage._async_iter([("storea", (oid, serial, data, ident))
                             for oid, serial, data in records])
        for oid, _serial, _data in records:
            buffer.store(oid, None)  # the finish invalidates it in the cache, caches nothing
        self._answers.append(storage._call("ping", wait=False))
        while len(self._answers) > STORE_AHEAD:
            self._answers.popleft().result()


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
