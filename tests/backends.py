"""The storage kinds the suite runs on, each behind one small object.

A :class:`Backend` is one test's database: it opens clients on it (a second
client is a second ``ZODB.DB``, as a second application process would have) and
names it by the URI :func:`dsustore.open_db` and the ``dsustore`` command take.

* ``mapping`` -- a MappingStorage in memory (one client only);
* ``file`` -- a FileStorage in the test's folder (one client at a time);
* ``zeo`` -- a ZEO server process of its own, serving a FileStorage;
* ``relstorage-hp`` / ``relstorage-hf`` -- RelStorage on the session's
  PostgreSQL server, history-preserving and history-free: one database per
  mode for the whole session, emptied with ``zap_all()`` before each test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ZODB
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

from servers import PostgresServer, ZEOServer, open_zeo_db

KINDS = ("mapping", "file", "zeo", "relstorage-hp", "relstorage-hf")

#: kinds a second client (another process) can share a database on
SHARED_KINDS = ("zeo", "relstorage-hp", "relstorage-hf")


class Backend:
    """One empty database of one storage kind, and the servers behind it."""

    def __init__(self, kind: str, folder: Path, *, pg: PostgresServer | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown storage kind {kind!r}")
        self.kind = kind
        self.folder = folder
        self.pg = pg
        self.zeo: ZEOServer | None = None
        self.dbname: str | None = None
        self._opened: list[Any] = []  # DBs and bare storages, closed at the end
        self._mapping: MappingStorage | None = None

    # -- what it is ---------------------------------------------------------------

    @property
    def is_relstorage(self) -> bool:
        return self.kind.startswith("relstorage")

    @property
    def keep_history(self) -> bool:
        return self.kind != "relstorage-hf"

    @property
    def shared(self) -> bool:
        """Whether several clients (processes) can open the database at once."""
        return self.kind in SHARED_KINDS

    @property
    def uri(self) -> str:
        """The database as a ``--db`` URI."""
        if self.kind == "mapping":
            return "memory://"
        if self.kind == "file":
            return str(self.folder / "Data.fs")
        if self.kind == "zeo":
            assert self.zeo is not None
            return self.zeo.uri
        assert self.pg is not None and self.dbname is not None
        history = "true" if self.keep_history else "false"
        return (f"postgresql://{self.pg.superuser}@{self.pg.host}:{self.pg.port}/{self.dbname}"
                f"?keep_history={history}")

    # -- life cycle ---------------------------------------------------------------

    def start(self) -> Backend:
        """Start the server the kind needs (ZEO) or empty the shared database (RelStorage)."""
        if self.kind == "zeo":
            self.zeo = ZEOServer(base_dir=self.folder, stop_timeout=3).start()
        elif self.is_relstorage:
            assert self.pg is not None, "RelStorage needs the PostgreSQL server"
            self.dbname = relstorage_database(self.pg, self.keep_history)
            self.pg.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (self.dbname,))
            storage = self._relstorage()
            try:
                storage.zap_all()
            finally:
                storage.close()
        return self

    def open(self, **db_kwargs: Any) -> ZODB.DB:
        """A new client on the database: its own ``ZODB.DB``, closed when the test ends."""
        if self.kind == "zeo":
            assert self.zeo is not None
            db = open_zeo_db(self.zeo, **db_kwargs)
        else:
            db = ZODB.DB(self._storage(), **db_kwargs)
        self._opened.append(db)
        return db

    def open_storage(self) -> Any:
        """The bare storage, without a ``ZODB.DB`` (which would add the root object)."""
        if self.kind == "zeo":
            import ZEO.ClientStorage

            assert self.zeo is not None
            storage = ZEO.ClientStorage.ClientStorage(self.zeo.address, wait_timeout=30)
        else:
            storage = self._storage()
        self._opened.append(storage)
        return storage

    def _storage(self) -> Any:
        if self.kind == "mapping":
            if self._mapping is None:
                self._mapping = MappingStorage()
            return self._mapping
        if self.kind == "file":
            return FileStorage(str(self.folder / "Data.fs"))
        return self._relstorage()

    def stop(self) -> None:
        """Close every client, then stop the ZEO server; re-raise the first failure."""
        failure: BaseException | None = None
        for opened in self._opened:
            try:
                opened.close()
            except Exception as err:  # keep closing the others, and stop the server
                failure = failure or err
        self._opened.clear()
        if self.zeo is not None:
            self.zeo.stop()
            self.zeo = None
        if failure is not None:
            raise failure

    def _relstorage(self) -> Any:
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage

        assert self.pg is not None and self.dbname is not None
        options = Options(driver="psycopg2", keep_history=self.keep_history)
        adapter = PostgreSQLAdapter(dsn=self.pg.dsn(self.dbname), options=options)
        return RelStorage(adapter, options=options)

    def __repr__(self) -> str:
        return f"<Backend {self.kind}>"


def relstorage_database(pg: PostgresServer, keep_history: bool) -> str:
    """The session's database for one RelStorage mode (created on first use)."""
    name = "dsustore_hp" if keep_history else "dsustore_hf"
    if name not in pg.databases:
        pg.create_database(name)
    return name
