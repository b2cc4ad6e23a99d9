"""Database URIs: each storage kind opens from the URI the README documents."""

from __future__ import annotations

from pathlib import Path

import pytest
import ZODB
from ZODB.FileStorage import FileStorage

from dsustore import open_db
from conftest import keeps_history
from dsustore.errors import DatabaseDamagedError, DatabaseMissingError, DatabaseOpenError
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


# -- FileStorage: read-only opening, damaged tails, missing files ------------------------


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder and its bytes."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def _damaged(folder: Path, cut: int = 100) -> tuple[Path, int]:
    """A FileStorage whose last transaction lost its last ``cut`` bytes (an interrupted
    write), and where that transaction began."""
    path = folder / "Data.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        conn.root()["users"] = {"ann": 1}
    last_start = path.stat().st_size
    with db.transaction() as conn:
        conn.root()["users"] = {"ann": 1, "bob": 2}
    db.close()
    for leftover in (".lock", ".tmp"):
        Path(f"{path}{leftover}").unlink()
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size - cut)
    return path, last_start


def test_read_only_opening_changes_no_file(tmp_path):
    """Read-only, a FileStorage with a damaged tail and no index is read up to its last whole
    transaction; the data file stays byte for byte, and no .index, .lock, .tmp or .tr0 appears."""
    path, last_start = _damaged(tmp_path)
    Path(f"{path}.index").unlink()
    before = _files(tmp_path)
    db = open_db(str(path), read_only=True)
    try:
        with db.transaction() as conn:
            assert conn.root()["users"] == {"ann": 1}
    finally:
        db.close()
    assert _files(tmp_path) == before


def test_read_only_opening_of_an_empty_file_writes_no_header(tmp_path):
    """An empty file reads as an empty database and stays empty."""
    path = tmp_path / "Data.fs"
    path.write_bytes(b"")
    db = open_db(str(path), read_only=True)
    try:
        with db.transaction() as conn:
            assert dict(conn.root()) == {}
    finally:
        db.close()
    assert _files(tmp_path) == {"Data.fs": b""}


def test_opening_a_damaged_file_for_writing_says_what_would_be_cut_and_refuses(tmp_path):
    """Opening for writing names the file, the position and the bytes ZODB would cut, and cuts
    nothing; repair=True lets ZODB cut them (into .tr0)."""
    path, last_start = _damaged(tmp_path)
    size = path.stat().st_size
    before = path.read_bytes()
    with pytest.raises(DatabaseDamagedError) as refused:
        open_db(str(path))
    assert (refused.value.path, refused.value.position, refused.value.cut) == (
        str(path), last_start, size - last_start)
    assert f"{size - last_start:,} bytes" in str(refused.value) and "--repair" in str(refused.value)
    assert path.read_bytes() == before and not Path(f"{path}.tr0").exists()
    open_db(str(path), repair=True).close()
    assert path.stat().st_size == last_start
    assert Path(f"{path}.tr0").read_bytes() == before[last_start:]


def test_a_missing_filestorage_is_neither_created_nor_its_folders(tmp_path):
    """A path with no database is an error naming it and the way to create one; nothing is made."""
    path = tmp_path / "typo" / "Data.fs"
    with pytest.raises(DatabaseMissingError) as missing:
        open_db(str(path))
    assert missing.value.path == str(path)
    assert "dsustore init" in str(missing.value) and "upgrade --create" in str(missing.value)
    with pytest.raises(DatabaseMissingError):
        open_db(str(path), read_only=True)
    assert not (tmp_path / "typo").exists()
    open_db(str(path), create=True).close()
    assert path.exists()
