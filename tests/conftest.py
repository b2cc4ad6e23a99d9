"""Shared fixtures: real ZODB databases in temporary folders, and a way to compare them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import transaction
import ZODB
from ZODB.FileStorage import FileStorage

TESTS = Path(__file__).parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import shopmodels  # noqa: E402
from backends import KINDS, Backend  # noqa: E402
from servers import PostgresServer  # noqa: E402

from dsustore._namespace import last_transaction  # noqa: E402
from dsustore._scan import current_records  # noqa: E402


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (started on first use, on 127.0.0.1).

    ``max_locks_per_transaction`` is raised (see :class:`PostgresServer`) so the
    sizes the tests update fit RelStorage's one lock per modified object.
    """
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(params=KINDS)
def storage_kind(request) -> str:
    """Every core test runs on each storage kind."""
    return request.param


@pytest.fixture
def backend(storage_kind: str, tmp_path: Path, request) -> Iterator[Backend]:
    """The parametrised storage kind, empty, with its server running."""
    pg = request.getfixturevalue("pg_server") if storage_kind.startswith("relstorage") else None
    found = Backend(storage_kind, tmp_path, pg=pg)
    try:
        yield found.start()
    finally:
        found.stop()


@pytest.fixture
def db(backend: Backend) -> ZODB.DB:
    """An empty database of the parametrised storage kind."""
    return backend.open()


@pytest.fixture
def file_db(tmp_path: Path) -> Iterator[ZODB.DB]:
    """An empty FileStorage database (for tests that need a file on disk)."""
    database = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
    yield database
    database.close()


@pytest.fixture
def shop_db(db: ZODB.DB) -> ZODB.DB:
    """A database holding a small shop graph."""
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    return db


def storage_image(database: ZODB.DB) -> dict[bytes, tuple[bytes, bytes]]:
    """Every current record (oid → (tid, data)): equal images mean an unchanged database."""
    return {oid: (tid, data) for oid, tid, data in current_records(database.storage)}


@pytest.fixture
def unchanged():
    """Assert that a database is exactly as it was: same last transaction, same records."""

    class Snapshot:
        def __init__(self, database: ZODB.DB) -> None:
            self.database = database
            self.last = last_transaction(database)
            self.image = storage_image(database)

        def check(self) -> None:
            assert last_transaction(self.database) == self.last
            assert storage_image(self.database) == self.image

    return Snapshot


@pytest.fixture
def reader(db: ZODB.DB):
    """Open a connection with its own transaction manager, for reading after an update."""
    opened = []

    def open_conn():
        tm = transaction.TransactionManager()
        conn = db.open(transaction_manager=tm)
        opened.append((conn, tm))
        return conn

    yield open_conn
    for conn, tm in opened:
        tm.abort()
        conn.close()


@pytest.fixture(autouse=True)
def _exports_in_tmp_path(tmp_path: Path) -> Iterator[None]:
    """Export snapshots a test takes go to its own folder, never the working directory."""
    saved = os.environ.get("DSUSTORE_SNAPSHOTS")
    os.environ["DSUSTORE_SNAPSHOTS"] = str(tmp_path / "snapshots")
    yield
    if saved is None:
        os.environ.pop("DSUSTORE_SNAPSHOTS", None)
    else:
        os.environ["DSUSTORE_SNAPSHOTS"] = saved


@pytest.fixture(autouse=True)
def _restore_shopmodels():
    """Tests that delete or replace classes of shopmodels get them back afterwards."""
    saved = dict(vars(shopmodels))
    yield
    for name in list(vars(shopmodels)):
        if name not in saved:
            delattr(shopmodels, name)
    for name, value in saved.items():
        setattr(shopmodels, name, value)


os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")
