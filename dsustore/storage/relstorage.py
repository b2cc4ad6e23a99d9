"""RelStorage: an MVCC storage over a relational database, history-preserving or not.

Each RelStorage instance reads through its own database snapshot, and the instance
``ZODB.DB`` holds as ``db.storage`` keeps whatever snapshot it last polled (it can
be far behind). Its ``record_iternext`` is one SQL query over the current objects,
streamed with a server-side cursor; a scan runs it on a fresh instance, or on the
instance of the connection whose view it must match -- the only way to read a
history-free database as of an earlier transaction.

On PostgreSQL the adapter also answers with SQL what the generic storage API can
only answer slowly or not at all: the objects changed since a transaction (one
query over an index on ``tid``) and the size of the server's lock table, which
bounds how many objects one commit may modify.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any

from ZODB.utils import p64, u64

from .adapter import LockCapacity, Record, StorageAdapter, iternext_records
from .connections import instance_of, load_through

#: the objects written after a tid, from the table that holds each mode's current states
_CHANGED_SQL = {
    True: "SELECT zoid FROM current_object WHERE tid > %s",  # history-preserving
    False: "SELECT zoid FROM object_state WHERE tid > %s",  # history-free
}


class RelStorageAdapter(StorageAdapter):
    """A ``relstorage.storage.RelStorage``; see the two kinds below."""

    kind = "relstorage"
    scans_are_remote = True

    @classmethod
    def accepts(cls, storage: Any) -> bool:
        module = sys.modules.get("relstorage.storage")  # not imported: no RelStorage exists
        return (module is not None and isinstance(storage, module.RelStorage)
                and bool(storage._options.keep_history) == cls.history)

    history: bool = True

    @property
    def keeps_history(self) -> bool:
        return self.history

    @property
    def _postgresql(self) -> Any:
        """The RelStorage database adapter when the database is PostgreSQL, else None."""
        adapter = self.storage._adapter
        if type(adapter).__module__.startswith("relstorage.adapters.postgresql"):
            return adapter
        return None

    def last_committed(self) -> bytes:
        self.storage.poll_invalidations()
        return self.storage.lastTransaction()

    def snapshot_tid(self, conn: Any) -> bytes:
        conn.root()
        before = getattr(conn, "before", None)
        if before is not None:
            return p64(u64(before) - 1)
        # each connection's instance polls its own snapshot; the DB's instance is brought
        # up to it, or ZODB refuses a historical connection there
        self.last_committed()
        return instance_of(conn).lastTransaction()

    def committed_tid(self, conn: Any) -> bytes:
        return instance_of(conn).lastTransaction() or self.last_committed()

    def loader(self, conn: Any) -> Any:
        return instance_of(conn)

    def current_records(self, *, at: bytes | None = None, view: Any = None) -> Iterator[Record]:
        if view is not None:
            instance = instance_of(view)
            yield from iternext_records(instance, at or instance.lastTransaction(),
                                        history=self.history)
            return
        instance = self.storage.new_instance()
        try:
            instance.poll_invalidations()  # a snapshot of now, which is at or after ``at``
            yield from iternext_records(instance, at or instance.lastTransaction(),
                                        history=self.history)
        finally:
            instance.release()

    def changed_since(self, tid: bytes, upto: bytes | None = None) -> list[bytes] | None:
        """One query over an index on ``tid`` on PostgreSQL, where the transaction iterator
        takes one per transaction. It runs on the load connection of the storage, which
        :meth:`last_committed` has just polled: the snapshot its ``load`` reads, so each
        oid listed loads as last written."""
        upto = upto or self.last_committed()
        if upto == tid:
            return []
        if self._postgresql is None:
            return super().changed_since(tid, upto)
        cursor = self.storage._load_connection.cursor
        cursor.execute(_CHANGED_SQL[self.history], (u64(tid),))
        return [p64(zoid) for (zoid,) in cursor.fetchall()]

    def lock_capacity(self) -> LockCapacity | None:
        """PostgreSQL's lock table (see :func:`_settings`); RelStorage locks every object a
        commit modifies in it."""
        adapter = self._postgresql
        if adapter is None:
            return None
        return adapter.connmanager.open_and_call(lambda _conn, cursor: _settings(cursor))

    def locks_fit(self, count: int) -> bool:
        """When full, PostgreSQL's lock table grows into the server's free shared memory
        (at the defaults one session takes about 12,800 locks in a table sized for 7,808),
        by how much depends on what else uses that memory: so take ``count`` shared
        advisory locks, in a key space nothing else uses, in a transaction rolled back at
        once, and see whether they fit."""
        adapter = self._postgresql
        if adapter is None:
            return True

        def probe(conn: Any, cursor: Any) -> None:
            cursor.execute("SELECT count(*) FROM generate_series(1, %s) AS key "
                           "WHERE pg_try_advisory_xact_lock_shared(%s, key)",
                           (count, _PROBE_KEY))
            cursor.fetchone()
            conn.rollback()

        try:
            adapter.connmanager.open_and_call(probe)
        except Exception as err:
            if _out_of_shared_memory(err):
                return False
            raise
        return True

    def count(self) -> int | None:
        """Exactly, in one SQL count on PostgreSQL (None elsewhere): RelStorage's own
        ``len()`` is the planner's estimate -- 0 until the table is first analysed, behind
        after it grows -- and a pass's progress total must be the records it will read."""
        adapter = self._postgresql
        if adapter is None:
            return None
        table = "current_object" if self.history else "object_state"

        def count(_conn: Any, cursor: Any) -> int:
            cursor.execute(f"SELECT count(*) FROM {table}")
            return int(cursor.fetchone()[0])

        return int(adapter.connmanager.open_and_call(count))

    def count_instances(self, class_keys: Iterable[bytes]) -> int:
        """Current records whose class key is one of ``class_keys``, in one query.

        A ZODB record starts with the pickle protocol header and a GLOBAL opcode naming
        the class (``c`` module newline name newline), so the class is a fixed prefix
        of the state from its third byte.
        """
        prefixes = [b"c" + key + b"\n" for key in class_keys]
        adapter = self._postgresql
        if not prefixes or adapter is None:
            return 0
        table = ("current_object JOIN object_state USING (zoid, tid)" if self.history
                 else "object_state")
        matches = " OR ".join("substring(state from 3 for %s) = %s" for _ in prefixes)
        params: list[Any] = []
        for prefix in prefixes:
            params += [len(prefix), prefix]

        def count(_conn: Any, cursor: Any) -> int:
            cursor.execute(f"SELECT count(*) FROM {table} WHERE {matches}", params)
            return int(cursor.fetchone()[0])

        return int(adapter.connmanager.open_and_call(count))


class HistoryPreservingRelStorage(RelStorageAdapter):
    """RelStorage with ``keep_history=true``: old revisions and a transaction log."""

    kind = "relstorage-hp"
    history = True


class HistoryFreeRelStorage(RelStorageAdapter):
    """RelStorage with ``keep_history=false``: only current states, no transaction log.

    A historical connection has nothing older to read, so the patch's old namespace
    reads through the patch connection's own snapshot, which is that transaction.
    """

    kind = "relstorage-hf"
    history = False

    def historical_view(self, old_conn: Any, view: Any) -> None:
        load_through(old_conn, view)


def _settings(cursor: Any) -> LockCapacity:
    """The lock table PostgreSQL sizes at start: ``max_locks_per_transaction`` x (its
    server processes -- ``max_connections``, autovacuum workers and launcher, background
    workers, WAL senders from PostgreSQL 12 on -- + ``max_prepared_transactions``)."""
    cursor.execute(
        "SELECT current_setting('max_locks_per_transaction')::int, "
        "current_setting('max_connections')::int, "
        "current_setting('max_prepared_transactions')::int, "
        "current_setting('server_version_num')::int, "
        "coalesce(current_setting('autovacuum_worker_slots', true), "
        "         current_setting('autovacuum_max_workers', true), '0')::int, "
        "coalesce(current_setting('max_worker_processes', true), '0')::int, "
        "coalesce(current_setting('max_wal_senders', true), '0')::int")
    locks, connections, prepared, version, autovacuum, workers, wal_senders = cursor.fetchone()
    others = autovacuum + 1 + workers + (wal_senders if version >= 120000 else 0)
    return LockCapacity(locks, connections, prepared, others)


#: the advisory lock keys a probe of the lock table takes: the two-key form, which
#: RelStorage's object locks (one bigint key, the oid) never use
_PROBE_KEY = 0x64737573


def _out_of_shared_memory(err: BaseException) -> bool:
    return (getattr(err, "pgcode", None) == "53200"
            or "out of shared memory" in str(err).lower())
