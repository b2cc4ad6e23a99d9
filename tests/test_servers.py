"""The test servers really start, serve ZODB clients, and go away again."""

from __future__ import annotations

import os
import socket

import pytest
import transaction
from BTrees.OOBTree import OOBTree
from persistent.mapping import PersistentMapping
from ZODB.interfaces import IStorageUndoable
from ZODB.utils import u64

from servers import (
    LOOPBACK,
    PostgresServer,
    ZEOServer,
    find_pg_bin,
    open_filestorage_db,
    open_relstorage_db,
    open_zeo_db,
)


@pytest.fixture(scope="module")
def pg_server():
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def zeo_server():
    server = ZEOServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _pid_alive(pid: int) -> bool:
    """True if *pid* exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _accepts(address) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


def _write_then_read(open_db):
    """Commit through one DB, read back through a second, independent DB."""
    writer = open_db()
    reader = None
    try:
        tm_w = transaction.TransactionManager()
        conn_w = writer.open(tm_w)
        root = conn_w.root()
        assert "doc" not in root, "database is not fresh"
        root["doc"] = PersistentMapping(title="hello", items=[1, 2, 3])
        root["index"] = OOBTree({"a": 1, "b": 2})
        tm_w.commit()

        reader = open_db()
        tm_r = transaction.TransactionManager()
        conn_r = reader.open(tm_r)
        doc = conn_r.root()["doc"]
        assert doc["title"] == "hello"
        assert doc["items"] == [1, 2, 3]
        assert dict(conn_r.root()["index"].items()) == {"a": 1, "b": 2}
        tm_r.abort()

        # A later commit by the first client becomes visible to the second.
        root["doc"]["title"] = "changed"
        tm_w.commit()
        tm_r.begin()
        assert conn_r.root()["doc"]["title"] == "changed"
        tm_r.abort()
        conn_r.close()
        conn_w.close()
        return writer, reader
    except BaseException:
        writer.close()
        if reader is not None:
            reader.close()
        raise


# ---------------------------------------------------------------------------
# FileStorage
# ---------------------------------------------------------------------------


def test_filestorage_round_trip(tmp_path):
    path = tmp_path / "Data.fs"
    db = open_filestorage_db(path)
    try:
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        conn.root()["doc"] = PersistentMapping(title="hello")
        tm.commit()
        conn.close()
    finally:
        db.close()

    db = open_filestorage_db(path)
    try:
        conn = db.open()
        assert conn.root()["doc"]["title"] == "hello"
        conn.close()
    finally:
        db.close()


# ---------------------------------------------------------------------------
# ZEO
# ---------------------------------------------------------------------------


def test_zeo_server_attributes(zeo_server):
    host, port = zeo_server.address
    assert host == LOOPBACK
    assert zeo_server.uri == f"zeo://{LOOPBACK}:{port}"
    assert zeo_server.process.poll() is None
    assert zeo_server.data_path.name == "Data.fs"
    assert zeo_server.data_path.exists()


def test_zeo_round_trip(zeo_server):
    writer, reader = _write_then_read(lambda: open_zeo_db(zeo_server))
    writer.close()
    reader.close()


def test_zeo_server_stop_cleans_up():
    server = ZEOServer()
    try:
        server.start()
        address, proc, root = server.address, server.process, server.root
        db = open_zeo_db(server)
        db.close()
        assert server.startup_seconds is not None
    finally:
        server.stop()
    assert proc.poll() is not None
    assert not _accepts(address)
    assert not root.exists()
    server.stop()  # idempotent


# ---------------------------------------------------------------------------
# PostgreSQL / RelStorage
# ---------------------------------------------------------------------------


def test_find_pg_bin():
    bindir = find_pg_bin()
    for exe in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bindir / exe, os.X_OK)


def test_postgres_settings(pg_server):
    def show(name):
        return pg_server.query(f"SHOW {name}")[0][0]

    assert show("listen_addresses") == LOOPBACK
    assert show("port") == str(pg_server.port)
    assert show("fsync") == "off"
    assert show("synchronous_commit") == "off"
    assert show("full_page_writes") == "off"
    assert show("max_locks_per_transaction") == "2048"
    assert show("unix_socket_directories") == str(pg_server.socket_dir)


def test_postgres_create_database_is_fresh(pg_server):
    dsn1 = pg_server.create_database()
    dsn2 = pg_server.create_database()
    assert dsn1 != dsn2
    assert f"host={LOOPBACK}" in dsn1 and f"port={pg_server.port}" in dsn1
    name = dsn1.split("dbname=")[1].split()[0]
    assert pg_server.query("SELECT current_database()", dbname=name) == [(name,)]
    pg_server.drop_database(name)
    assert name not in pg_server.databases


@pytest.mark.parametrize("keep_history", [True, False], ids=["history", "history-free"])
def test_relstorage_round_trip(pg_server, keep_history):
    dsn = pg_server.create_database()
    writer, reader = _write_then_read(
        lambda: open_relstorage_db(dsn, keep_history=keep_history)
    )
    try:
        assert IStorageUndoable.providedBy(writer.storage) is keep_history
        conn = writer.open()
        oid = u64(conn.root()["doc"]._p_oid)
        conn.close()
    finally:
        writer.close()
        reader.close()

    # The schema matches the requested mode: a history-preserving database
    # has a transaction table and keeps both revisions of the document.
    dbname = dsn.split("dbname=")[1].split()[0]
    [(table,)] = pg_server.query("SELECT to_regclass('transaction')::text", dbname=dbname)
    assert (table is not None) is keep_history
    [(revisions,)] = pg_server.query(
        "SELECT count(*) FROM object_state WHERE zoid = %s", (oid,), dbname=dbname
    )
    assert revisions == (2 if keep_history else 1)

    # Another fresh database starts out empty.
    other = open_relstorage_db(pg_server.create_database(), keep_history=keep_history)
    try:
        conn = other.open()
        assert "doc" not in conn.root()
        conn.close()
    finally:
        other.close()


def test_postgres_default_lock_setting_and_cleanup():
    server = PostgresServer(max_locks_per_transaction=64)
    try:
        server.start()
        assert server.query("SHOW max_locks_per_transaction") == [("64",)]
        root = server.root
        pid = int((server.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        assert pid == server.pid
        assert _pid_alive(pid)
        address = (server.host, server.port)
    finally:
        server.stop()
    assert not _pid_alive(pid)
    assert not _accepts(address)
    assert not root.exists()
    server.stop()  # idempotent
