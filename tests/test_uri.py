"""Database URIs: each storage kind opens from the URI the README documents."""

from __future__ import annotations

import pytest

from dsustore import open_db
from conftest import keeps_history
from dsustore.errors import DatabaseOpenError
from servers import free_port

URI_KINDS = ["file", "zeo", "relstorage-hp", "relstorage-hf"]


@pytest.mark.parametrize("storage_kind", URI_KINDS)
def test_open_db_opens_the_database_its_uri_names(backend):
    """What a client opened from the URI writes, another client of the same database reads."""
    db = open_db(backend.uri, create=True)
    try:
        with db.transaction() as conn:
            conn.root()["via"] = "uri"
        assert keeps_history(db) is backend.keep_history
    finally:
        db.close()
    other = backend.open()
    with other.transaction() as conn:
        assert conn.root()["via"] == "uri"


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_zeo_uris_sync_with_the_server_unless_told_not_to(backend):
    """A zeo:// client makes a server round trip per transaction by default."""
    synced = open_db(backend.uri)
    unsynced = open_db(backend.uri + "?server_sync=false&wait_timeout=5")
    try:
        assert synced.storage.server_sync is True
        assert unsynced.storage.server_sync is False
    finally:
        synced.close()
        unsynced.close()


@pytest.mark.parametrize("storage_kind", ["relstorage-hf"])
def test_postgres_uris_take_relstorage_options_and_libpq_parameters(backend):
    """The zodburi spelling postgres:// works; RelStorage options and libpq ones mix."""
    uri = backend.uri.replace("postgresql://", "postgres://", 1)
    db = open_db(uri + "&cache_local_mb=0&connect_timeout=5")
    try:
        options = db.storage._options
        assert options.keep_history is False and options.cache_local_mb == 0
        with db.transaction() as conn:
            conn.root()["ok"] = True
    finally:
        db.close()


def test_bad_uris_are_refused_with_the_reason():
    """A misspelt option or an unreachable server is a DatabaseOpenError naming it."""
    with pytest.raises(DatabaseOpenError, match="server_snyc"):
        open_db(f"zeo://127.0.0.1:{free_port()}?server_snyc=true")
    with pytest.raises(DatabaseOpenError, match="keep_history"):
        open_db(f"postgresql://postgres@127.0.0.1:{free_port()}/x?keep_history=maybe")
    with pytest.raises(DatabaseOpenError, match="cannot open PostgreSQL database"):
        open_db(f"postgresql://postgres@127.0.0.1:{free_port()}/x?connect_timeout=2")
