"""FileStorage: scans and change lists read straight from the data file.

A FileStorage is an append-only log of transactions with an in-memory index from
oid to the position of its current record. Reading the file sequentially and
keeping the records the index points at lists the current records several times
faster than asking for them one by one, or than the storage's iterator, which
builds a transaction and a record object for every record. The file layout read
here is ZODB's documented FileStorage format (``ZODB.FileStorage.format``).
"""

from __future__ import annotations

import io
import os
import re
import struct
import sys
import tempfile
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from itertools import repeat
from operator import add
from pathlib import Path
from typing import Any

from BTrees.fsBTree import fsBucket
from ZODB.FileStorage import FileStorage
from ZODB.fsIndex import fsIndex
from ZODB.utils import p64, u64, z64

from .adapter import Record, StorageAdapter, _after, _state_before
from .spool import close_apart

_TXN_HEADER = struct.Struct(">8sQcHHH")  # tid, length, status, user/description/extension lengths
_DATA_HEADER = struct.Struct(">8s8sQQHQ")  # oid, tid, previous, txn position, version length, length
_FIELD = struct.Struct(">8s")  # one 8-byte field of a data record header
_ONE = b"\0\0\0\0\0\0\0\1"  # the big-endian 8-byte field holding 1
_KEYS = re.compile(rb"(?s)..")  # an fsIndex bucket's keys: an oid's last two bytes
_VALUES = re.compile(rb"(?s)..(......)")  # its values: the last six bytes of a position


class FileStorageAdapter(StorageAdapter):
    """A ``ZODB.FileStorage.FileStorage`` in this process."""

    kind = "filestorage"

    @classmethod
    def accepts(cls, storage: Any) -> bool:
        return isinstance(storage, FileStorage)

    @property
    def keeps_history(self) -> bool:
        return True

    @property
    def path(self) -> Path:
        """The data file."""
        return Path(self.storage._file_name)

    def export_folder(self) -> Path | None:
        return Path(f"{self.path}.snapshots")

    def oid_index(self) -> Container[bytes] | None:
        return self.storage._index  # kept in memory by the storage anyway

    def stage_commit(self, source: Any, upto: bytes) -> StagedCommit | None:
        """The data records of the coming commit, laid out ahead (see :class:`StagedCommit`)."""
        if not StagedCommit.usable(self.storage):
            return None
        return StagedCommit.build(self.storage, self._end_of(upto), source)

    def streaming_store(self, upto: bytes | None = None) -> TransactionAppender | None:
        """A chunked append into the transaction being committed, where the serials are
        vouched for; the storage's own ``store`` otherwise."""
        if upto is not None and TransactionAppender.usable(self.storage):
            return TransactionAppender(self.storage, upto)
        return None

    def current_records(self, *, at: bytes | None = None, view: Any = None) -> Iterator[Record]:
        """Read the data file in order, keeping each record the index points at.

        A record the index does not point at is old (skipped) or was rewritten after
        ``at``; that one is loaded as of ``at`` at the end.
        """
        at = at or self.last_committed()
        if at == z64:
            return
        fs = self.storage
        end = self._end_of(at)
        position_of = _index_reader(fs._index)
        moved: list[bytes] = []
        for record, oid, tid, data in self._data_records(4, end):
            current = position_of(oid)
            if current == record and data is not None:
                yield oid, tid, data
            elif current is not None and (current >= end or (current == record and data is None)):
                moved.append(oid)  # rewritten after ``at``, or its data is elsewhere (undo, copy)
        before = _after(at)
        for oid in sorted(set(moved)):
            found = _state_before(fs, oid, before)  # None for an object deleted by then
            if found is not None:
                yield oid, found[1], found[0]

    def changed_since(self, tid: bytes, upto: bytes | None = None) -> list[bytes] | None:
        """Read in place: the storage's iterator can trip on a transaction being committed."""
        upto = upto or self.last_committed()
        if upto == tid:
            return []
        start, end = self._end_of(tid), self._end_of(upto)
        return list(dict.fromkeys(oid for _, oid, _, _ in
                                  self._data_records(start, end, data=False)))

    def _data_records(self, start: int, end: int, *,
                      data: bool = True) -> Iterator[tuple[int, bytes, bytes, bytes | None]]:
        """(position, oid, tid, data) of the records of the transactions between two file
        positions; data is None where the record holds a pointer back to it (or when not
        asked for). Both positions are transaction boundaries of committed data."""
        with open(self.path, "rb", buffering=1 << 20) as file:
            read, seek = file.read, file.seek
            seek(start)
            position = start
            while position < end:
                _tid, length, _status, ulen, dlen, elen = _TXN_HEADER.unpack(read(23))
                txn_end = position + length
                record = position + 23 + ulen + dlen + elen
                seek(record)
                while record < txn_end:
                    oid, tid, _prev, _tloc, vlen, plen = _DATA_HEADER.unpack(read(42))
                    if vlen:
                        raise ValueError(f"{self.path}: a record with a version (pre-ZODB 4 format)")
                    if plen and data:
                        yield record, oid, tid, read(plen)
                    else:
                        yield record, oid, tid, None
                        seek(record + (42 + plen if plen else 50))
                    record += 42 + plen if plen else 50
                position = txn_end + 8  # past the transaction length, repeated
                seek(position)

    def _end_of(self, at: bytes) -> int:
        """The file position where the transactions after ``at`` begin.

        A record whose current version lies at or past it was rewritten after ``at``.
        Found by stepping back from the end of the committed data, one transaction at
        a time (a transaction's length is repeated after it): only the transactions
        after ``at`` are read. (``fs.iterator(start)`` looks for its start from the end
        of the file, where a transaction being committed can make it fail.)
        """
        fs = self.storage
        with fs._lock:
            end, last = fs._pos, fs._ltid
        if u64(at) >= u64(last):
            return end
        with open(self.path, "rb") as file:
            while end > 4:
                file.seek(end - 8)
                start = end - 8 - u64(file.read(8))
                file.seek(start)
                if u64(file.read(8)) <= u64(at):
                    return end
                end = start
        return end


class StagedCommit:
    """A large commit's records laid out ahead, while the application still writes, as
    the data records of the FileStorage transaction that will commit them: in a
    temporary file, each a header (oid, tid, previous record, transaction position,
    version length 0, data length) and its data, the latest record of each object the
    source holds.

    Only the tid and the transaction position are unknown until the commit begins:
    the commit sets those two fields in the file, a chunk at a time, hands the file to
    the storage as the transaction's (its vote copies the records from there), and
    puts the records into the storage's index a bucket at a time
    (:meth:`TransactionAppender.copy_staged`). Each header's previous
    record is the object's current record when it was staged: a record whose object
    was committed after ``upto`` (as the source vouches, see
    :meth:`StorageAdapter.stage_commit`) is left out then, and stored one by one with
    its serial checked, as is one stored again in the source since.

    The records come in the source's order, a chunk at a time; within a chunk, those
    of a size many records of the chunk have are put together, size by size (the
    order of records in a transaction means nothing): the commit sets the two fields
    of a run of records of one size with a few strided slice assignments instead of
    two per record.

    Kept per record, besides the file: where it lies in the file, where it lay in the
    source, and the last two bytes of its oid (its key in the index bucket), 18
    bytes; per chunk, per run of one size and per run of oids with the same first six
    bytes (one index bucket), where it starts.
    """

    #: how much is written, and copied into the transaction, at once
    CHUNK = 1 << 22
    #: from how many records of one size in a chunk on they are put together
    RUN = 16

    def __init__(self, fs: FileStorage, start: int, end: int) -> None:
        self.fs = fs
        #: the index the previous records were read in (a pack replaces it)
        self.index = fs._index
        #: the data file's end after ``upto``: objects committed from here on are left out
        self.start = start
        #: the source's end when staged: the records staged are the latest before it
        self.end = end
        # unbuffered: the commit may write it in place and hand it to the storage as its
        # transaction file. Open as long as the staged commit is: closed by close() (or
        # by the commit that took it), gone with the process
        self.file: Any = tempfile.TemporaryFile(prefix="dsustore-staged-", buffering=0)  # noqa: SIM115
        #: where each record lies in the file, and the file's size last
        self.offsets = array("Q")
        #: where each record lay in the source
        self.sources = array("Q")
        self.suffixes = bytearray()  # oid[6:] of each record
        self.prefix_starts = array("Q")  # the first record of each run of one oid prefix
        self.prefixes = bytearray()  # that prefix, oid[:6]
        #: the first record of each chunk, and the first source position it holds
        self.chunk_starts = array("Q")
        self.chunk_sources = array("Q")
        #: per chunk, where its records of sizes not put together start
        self.mixed_starts = array("Q")
        #: the first record of each run of one size, and how many records it has
        self.size_starts = array("Q")
        self.size_counts = array("Q")
        self.largest = 0  # the largest chunk, in bytes
        self._end_offset = 0  # the file's size so far
        self.max_oid = z64

    @classmethod
    def usable(cls, fs: Any) -> bool:
        """Whether ``fs`` can take staged records: a writable FileStorage with an fsIndex
        and no quota (a quota is checked per record stored)."""
        return (isinstance(fs, FileStorage) and fs._quota is None and not fs.isReadOnly()
                and isinstance(fs._index, fsIndex))

    @classmethod
    def build(cls, fs: FileStorage, start: int, source: Any) -> StagedCommit | None:
        """Stage the latest records of ``source`` (``latest()``: position, oid, serial, data
        in the source's order; ``position``: its end); None if one cannot be staged."""
        staged = cls(fs, start, source.position)
        try:
            complete = staged._write(source.latest(0))
        except BaseException:
            staged.close()
            raise
        if not complete:
            staged.close()
            return None
        return staged

    @property
    def count(self) -> int:
        return len(self.sources)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def take_file(self) -> Any:
        """The file, which the caller closes from now on."""
        file, self.file = self.file, None
        return file

    def _write(self, records: Iterator[tuple[int, bytes, bytes, bytes]]) -> bool:
        position_of = _index_reader(self.index)
        chunk: list[tuple[int, bytes, bytes]] = []
        size = 0
        for position, oid, _serial, data in records:
            if len(oid) != 8:
                return False
            chunk.append((position, oid, data))
            size += 42 + len(data)
            if size >= self.CHUNK:
                self._lay_out(chunk, position_of)
                chunk, size = [], 0
        if chunk:
            self._lay_out(chunk, position_of)
        self.file.flush()
        self.offsets.append(self._end_offset)
        return True

    def _lay_out(self, chunk: list[tuple[int, bytes, bytes]],
                 position_of: Callable[[bytes], int | None]) -> None:
        """Write one chunk's records, those of a frequent size together."""
        by_size: dict[int, list[int]] = {}
        for number, (_position, _oid, data) in enumerate(chunk):
            by_size.setdefault(len(data), []).append(number)
        first = self.count
        order: list[int] = []
        for members in by_size.values():
            if len(members) >= self.RUN:
                self.size_starts.append(first + len(order))
                self.size_counts.append(len(members))
                order += members
        self.chunk_starts.append(first)
        self.chunk_sources.append(chunk[0][0])
        self.mixed_starts.append(first + len(order))
        if len(order) < len(chunk):
            order += sorted(number for members in by_size.values() if len(members) < self.RUN
                            for number in members)
        pack = _DATA_HEADER.pack
        offsets, sources, suffixes = self.offsets, self.sources, self.suffixes
        prefix = bytes(self.prefixes[-6:])
        offset = start = self._end_offset
        parts: list[bytes] = []
        max_oid = self.max_oid
        for number in order:
            position, oid, data = chunk[number]
            if oid[:6] != prefix:
                prefix = oid[:6]
                self.prefix_starts.append(len(sources))
                self.prefixes += prefix
            if oid > max_oid:
                max_oid = oid
            offsets.append(offset)
            sources.append(position)
            suffixes += oid[6:]
            parts.append(pack(oid, z64, position_of(oid) or 0, 0, 0, len(data)))
            parts.append(data)
            offset += 42 + len(data)
        _write_all(self.file, b"".join(parts))
        self.max_oid = max_oid
        self._end_offset = offset
        self.largest = max(self.largest, offset - start)

    def left_out(self, restaged: Iterable[int], latest: Mapping[bytes, int]
                 ) -> tuple[list[int], list[int]] | None:
        """The records not to copy, by number (ascending), and the source positions of
        those among them whose latest record is the staged one (to store one by one):
        the records stored again in the source since (``restaged``, their source
        positions), and those of objects committed after ``upto`` (``latest``: each
        object's latest source position). None if the staged records no longer apply."""
        fs = self.fs
        if fs._index is not self.index or self.file is None or self.file.closed \
                or fs._pos < self.start:
            return None
        skip = set(restaged)
        again: list[int] = []
        for _, oid, _, _ in FileStorageAdapter(fs)._data_records(self.start, fs._pos, data=False):
            at = latest.get(oid)
            if at is not None and at < self.end and at not in skip:
                skip.add(at)
                again.append(at)
        chunks = [*self.chunk_starts, self.count]
        numbers = []
        for at in skip:
            chunk = bisect_right(self.chunk_sources, at) - 1
            try:
                numbers.append(self.sources.index(at, chunks[max(chunk, 0)], chunks[chunk + 1]))
            except ValueError:
                return None  # not a staged record: nothing is copied, all is stored as before
        numbers.sort()
        again.sort()
        return numbers, again

    def copy(self, file: Any, write: Callable[[Any], Any], tid: bytes, tloc: int,
             left_out: list[int]) -> int:
        """Copy the records from ``file`` (this staged commit's) through ``write``, a chunk
        at a time, each header given the transaction's ``tid`` and position ``tloc``, but
        the records ``left_out`` (numbers, ascending); returns how many bytes were
        written. A chunk is written once read whole: ``write`` may write back into
        ``file``, up to where it was read (the records then end up pulled together)."""
        offsets, count = self.offsets, self.count
        file.seek(0)
        pack = _FIELD.pack_into
        tloc_field = p64(tloc)
        columns = [(8 + at, tid[at:at + 1]) for at in range(8)] + \
            [(24 + at, tloc_field[at:at + 1]) for at in range(8)]
        buffer = bytearray(self.largest)
        whole = memoryview(buffer)
        chunks = [*self.chunk_starts, count]
        sizes = zip(self.size_starts, self.size_counts, strict=True)
        size_run = next(sizes, (count, 0))
        skips = iter([*left_out, count])
        skip = next(skips)
        written = 0
        for chunk, mixed in enumerate(self.mixed_starts):
            first, last = chunks[chunk], chunks[chunk + 1]
            start = offsets[first]
            size = offsets[last] - start
            view = whole[:size]
            _read_into(file, view)
            while size_run[0] < mixed:  # runs of records of one size: a column at a time
                run, many = size_run
                at, step = offsets[run] - start, offsets[run + 1] - offsets[run]
                stop = at + many * step
                for field, byte in columns:
                    buffer[at + field:stop:step] = byte * many
                size_run = next(sizes, (count, 0))
            starts = offsets[mixed:last]  # the others, record by record
            deque(map(pack, repeat(view), map(add, starts, repeat(8 - start)), repeat(tid)), 0)
            deque(map(pack, repeat(view), map(add, starts, repeat(24 - start)), repeat(tloc_field)),
                  0)
            at = 0
            while skip < last:
                write(view[at:offsets[skip] - start])
                written += offsets[skip] - start - at
                at = offsets[skip + 1] - start
                skip = next(skips)
            write(view[at:size])
            written += size - at
        return written

    def positions(self, base: int, left_out: list[int]) -> bytes:
        """Each record's position in the data file, once copied from ``base`` on without
        the records ``left_out``, as 8 big-endian bytes (zeros for one left out).

        No Python step per record: the offsets, read as one big-endian integer, get
        ``base`` less what was left out before them added to every 8-byte field at once
        (the fields hold file positions, far below 2**64: no carry crosses one)."""
        offsets, count = self.offsets, self.count
        fields = array("Q", offsets[:count])
        if sys.byteorder == "little":
            fields.byteswap()
        raw = fields.tobytes()
        parts: list[bytes] = []
        first = shift = 0
        for number in [*left_out, count]:
            if number > first:
                size = 8 * (number - first)
                value = int.from_bytes(raw[8 * first:8 * number], "big") + \
                    (base - shift) * int.from_bytes(_ONE * (number - first), "big")
                parts.append(value.to_bytes(size, "big"))
            if number < count:
                parts.append(z64)
                shift += offsets[number + 1] - offsets[number]
                first = number + 1
        return b"".join(parts)

    def into_index(self, index: fsIndex, positions: bytes) -> None:
        """Put every record's position into the storage's index, one bucket update per run
        of oids sharing an index bucket; a record left out gets position 0 here, which
        the record stored for its object one by one replaces right after."""
        starts = [*self.prefix_starts, self.count]
        prefixes = bytes(self.prefixes)
        suffixes = bytes(self.suffixes)
        buckets = index._data
        for run in range(len(starts) - 1):
            first, last = starts[run], starts[run + 1]
            keys = _KEYS.findall(suffixes, 2 * first, 2 * last)
            values = _VALUES.findall(positions, 8 * first, 8 * last)
            _bucket(buckets, prefixes[6 * run:6 * run + 6]).update(
                _Items(zip(keys, values, strict=True)))


class _Items:
    """Pairs for a BTree's ``update``, which takes them from ``items()``: made one at a
    time as it reads them (zip reuses its pair), not a container per record, which
    would also set the garbage collector off over the whole heap."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterator[tuple[bytes, bytes]]) -> None:
        self._pairs = pairs

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return self._pairs


def _write_all(file: Any, data: bytes) -> None:
    """Write ``data`` to an unbuffered ``file``, whose write may take less."""
    view = memoryview(data)
    while view:
        view = view[file.write(view):]


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    """Write ``data`` at ``position`` of ``fd``, whose pwrite may take less."""
    while data:
        done = os.pwrite(fd, data, position)
        data, position = data[done:], position + done


def _read_into(file: Any, view: memoryview) -> None:
    """Fill ``view`` from ``file``."""
    done = 0
    while done < len(view):
        got = file.readinto(view[done:])
        if not got:
            raise EOFError("the staged records file is shorter than staged")
        done += got


class TransactionAppender:
    """Stores records into the transaction a FileStorage is committing, as its ``store``
    does, a chunk at a time: per record one index look-up and one header, per chunk one
    write, where ``store`` locks, reads the object's current record back to check its
    serial and writes twice for every record.

    The caller vouches for the serials as of ``upto``: every record's serial is its
    object's committed tid unless the object was written after that transaction (a patch
    caught up to it). A record of an object written after it goes through ``store``
    itself, which checks the serial and resolves or reports the conflict.

    A commit staged ahead (:class:`StagedCommit`) puts its records in first
    (:meth:`copy_staged`); what was written after the staging follows, record by record.
    """

    CHUNK = 1 << 20

    def __init__(self, fs: FileStorage, upto: bytes) -> None:
        self._fs = fs
        self._end = FileStorageAdapter(fs)._end_of(upto)
        self._position_of = _index_reader(fs._index)
        self._tindex = fs._tindex = _TransactionIndex(fs, fs._tindex)
        self._tid = fs._tid
        self._tloc = fs._pos
        self._base = fs._pos + fs._thl  # where the transaction's records begin in the file
        self._offset = fs._tfile.tell()
        self._parts: list[bytes] = []
        self._size = 0
        self._max_oid = fs._oid
        #: staged records copied in, and their positions, for the index at the finish
        self._staged: tuple[StagedCommit, bytes] | None = None
        #: the storage's own transaction file, while the staged file stands in for it
        self._own_tfile: Any = None

    @classmethod
    def usable(cls, fs: Any) -> bool:
        """Whether ``fs`` is a FileStorage committing a transaction without a quota."""
        return (isinstance(fs, FileStorage) and fs._transaction is not None
                and fs._quota is None)

    def store(self, oid: bytes, serial: bytes, data: bytes, version: str, transaction: Any) -> None:
        old = self._position_of(oid) or 0
        if old >= self._end:  # written after ``upto``: let the storage check the serial
            self._write()
            self._fs.store(oid, serial, data, version, transaction)
            self._offset = self._fs._tfile.tell()
            return
        if oid > self._max_oid:
            self._max_oid = oid
        size = len(data)
        self._tindex[oid] = self._base + self._offset + self._size
        self._parts.append(_DATA_HEADER.pack(oid, self._tid, old, self._tloc, 0, size))
        self._parts.append(data)
        self._size += 42 + size
        if self._size >= self.CHUNK:
            self._write()

    def copy_staged(self, staged: StagedCommit, restaged: Iterable[int],
                    latest: Mapping[bytes, int]) -> list[int] | None:
        """Put the staged records into the transaction, but those of objects stored again
        since (``restaged``: their source positions) or committed since they were
        staged; returns the source positions of the latter, to store one by one with the
        records stored since (``latest``: each object's latest source position). None
        when the staged records no longer apply, or the transaction holds records
        already: then nothing was put in.

        The staged file becomes the transaction's file until the vote (:meth:`give_back`):
        the records get their tid and transaction position in place, a chunk at a time,
        pulled together over the ones left out, and the storage's vote copies them from
        there -- not copied first into the storage's own file, whose pages the system
        would have to find while the application waits.
        """
        fs = self._fs
        with fs._lock:
            if self._offset or self._parts or fs._tfile.tell():
                return None
        found = staged.left_out(restaged, latest)
        if found is None:
            return None
        left_out, again = found
        file = staged.take_file()
        end = 0

        def write_back(data: memoryview) -> None:
            nonlocal end
            _pwrite_all(file.fileno(), data, end)
            end += len(data)

        try:
            self._offset = staged.copy(file, write_back, self._tid, self._tloc, left_out)
            file.seek(self._offset)
            lent = io.BufferedRandom(file)  # buffered from here on, as the storage's own is
        except BaseException:
            file.close()
            raise
        with fs._lock:
            self._own_tfile, fs._tfile = fs._tfile, lent
        self._staged = (staged, staged.positions(self._base, left_out))
        if staged.max_oid > self._max_oid:
            self._max_oid = staged.max_oid
        return again

    def give_back(self) -> None:
        """Give the storage its own transaction file back, if the staged file stood in for
        it: after the vote copied it, or before the transaction is aborted (while the
        transaction still holds the storage's commit lock)."""
        if self._own_tfile is None:
            return
        fs = self._fs
        with fs._lock:
            file, fs._tfile = fs._tfile, self._own_tfile
        self._own_tfile = None
        close_apart(file.close)

    def _write(self) -> None:
        if self._parts:
            fs = self._fs
            with fs._lock:
                fs._tfile.write(b"".join(self._parts))
            self._offset += self._size
            self._parts, self._size = [], 0

    def finish(self) -> None:
        """The transaction is being finished (the storage's lock is held): its records go
        into the storage's index at once, before the storage would add them one by one."""
        if self._staged is not None:
            staged, positions = self._staged
            self._staged = None
            staged.into_index(self._fs._index, positions)
        self._tindex.move_into(self._fs._index)

    def flush(self, transaction: Any = None) -> None:
        """Write what is left, and make new oids known to the storage."""
        self._write()
        fs = self._fs
        with fs._lock:
            if self._max_oid > fs._oid:
                fs.set_max_oid(self._max_oid)


class _TransactionIndex:
    """Where the records of the transaction a FileStorage commits lie, 16 bytes a record.

    FileStorage keeps this index (its ``_tindex``) as a dict, about 120 bytes a record:
    for an update of every object that is the largest thing in memory at the commit.
    This one is an array of oids and one of positions, in the order stored (the last
    position of an oid counts, as in the dict); the storage only sets entries, reads
    them all into its index when the transaction finishes, and clears it -- at which
    point it gets a plain dict back for its next transactions.
    """

    def __init__(self, fs: FileStorage, entries: dict[bytes, int]) -> None:
        self._fs = fs
        self._oids = bytearray()
        self._positions = array("Q")
        for oid, position in entries.items():
            self[oid] = position

    def __setitem__(self, oid: bytes, position: int) -> None:
        if len(oid) != 8:
            raise ValueError(f"oid {oid!r} is not 8 bytes")
        self._oids += oid
        self._positions.append(position)

    def get(self, oid: bytes, default: Any = None) -> Any:
        oids = self._oids
        at = oids.rfind(oid)
        while at >= 0 and at % 8:
            at = oids.rfind(oid, 0, at + 7)
        return self._positions[at // 8] if at >= 0 else default

    def __len__(self) -> int:
        return len(self._positions)

    def items(self) -> Iterator[tuple[bytes, int]]:
        oids = self._oids
        for number, position in enumerate(self._positions):
            yield bytes(oids[number * 8:number * 8 + 8]), position

    def update(self, entries: Any) -> None:
        for oid, position in entries.items():
            self[oid] = position

    def move_into(self, index: Any) -> None:
        """Put every entry into the storage's index (an ``fsIndex``), one index bucket at a
        time, and keep none: what ``fsIndex.update`` does one entry at a time."""
        if not isinstance(index, fsIndex) or not self._positions:
            return
        oids = bytes(self._oids)
        positions = array("Q", self._positions)
        if sys.byteorder == "little":
            positions.byteswap()
        values = positions.tobytes()  # big-endian: an fsIndex value is its last six bytes
        buckets = index._data
        run: list[tuple[bytes, bytes]] = []
        prefix = b""
        for at in range(0, len(oids), 8):
            here = oids[at:at + 6]
            if here != prefix:
                if run:
                    _bucket(buckets, prefix).update(run)
                run, prefix = [], here
            run.append((oids[at + 6:at + 8], values[at + 2:at + 8]))
        _bucket(buckets, prefix).update(run)
        self._oids, self._positions = bytearray(), array("Q")

    def clear(self) -> None:
        """The transaction is over (finished or aborted): the storage gets its dict back."""
        self._oids, self._positions = bytearray(), array("Q")
        self._fs._tindex = {}


def _bucket(buckets: Any, prefix: bytes) -> Any:
    """The fsIndex bucket of the oids starting with ``prefix``, made if it is new."""
    bucket = buckets.get(prefix)
    if bucket is None:
        bucket = buckets[prefix] = fsBucket()
    return bucket


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
