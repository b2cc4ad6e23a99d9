"""Opening a database from a URI.

Supported forms: a FileStorage path or ``file://`` URI (the default), ``memory://``
(MappingStorage), ``zeo://host:port`` (ZEO client) and ``postgresql://...``
(RelStorage, imported only when used). Other schemes go to ``zodburi`` when it is
installed.

``zeo://host:port?storage=1&wait_timeout=10&server_sync=true`` (or
``zeo:///path/to/socket``) opens a ZEO client; ``server_sync`` is on unless turned
off, so each transaction starts after the client has heard of every commit before
it. ``postgresql://user[:password]@host[:port]/dbname?keep_history=false&...`` opens
RelStorage: query parameters that are RelStorage options (``keep_history``,
``cache_local_mb``, ``commit_lock_timeout``, ``driver``, ... -- the names of its
zodburi resolver, ``postgres://`` is accepted too) configure it, the others
(``connect_timeout``, ``sslmode``, ...) stay in the libpq connection URI.

A missing FileStorage is an error unless ``create=True``, so a typo in a path never
leaves an empty database behind; a FileStorage another process holds
open is reported as locked rather than as a lock-file traceback.

``read_only=True`` opens the storage so that nothing is written: a FileStorage then
takes no lock, writes no ``.index``/``.tmp`` file, builds a missing index in memory
and reads up to the end of its last whole transaction, never cutting what follows.
Opened for writing, ZODB cuts a damaged tail (an interrupted commit, a torn copy)
and moves it to a ``.trN`` file; :func:`open_db` looks first and refuses, saying
how many bytes from which position would go, unless ``repair=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import ZODB
from zc.lockfile import LockError, SimpleLockFile
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import POSKeyError
from ZODB.utils import z64

from ..errors import (
    DatabaseDamagedError,
    DatabaseLockedError,
    DatabaseMissingError,
    DatabaseOpenError,
    NoDatabaseConfiguredError,
)

log = logging.getLogger(__name__)


def open_db(uri: str | None, *, create: bool = False, read_only: bool = False,
            repair: bool = False) -> Any:
    """Open the ZODB database named by ``uri``.

    ``create`` allows a new FileStorage; ``read_only`` opens it without writing
    anything (a database with no root object yet reads as an empty one);
    ``repair`` lets opening for writing cut a damaged FileStorage tail.
    """
    if not uri:
        raise NoDatabaseConfiguredError(
            "no database given: pass --db URI, set DSUSTORE_DB, or add "
            '[tool.dsustore] db = "..." to pyproject.toml')
    storage, dbkw = open_storage(uri, create=create, read_only=read_only, repair=repair)
    if read_only and not _has_root(storage):
        # ZODB.DB would commit a root object, which a read-only storage refuses: the
        # database holds nothing yet, so it reads as an empty one
        name = storage.getName()
        storage.close()
        storage = MappingStorage(name=f"{name} (empty)")
    try:
        return ZODB.DB(storage, **dbkw)
    except Exception:
        storage.close()
        raise


def open_storage(uri: str, *, create: bool = False, read_only: bool = False,
                 repair: bool = False) -> tuple[Any, dict[str, Any]]:
    """The storage named by ``uri`` and keyword arguments for ``ZODB.DB``."""
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme in ("", "file"):
        return _file_storage(uri, create=create, read_only=read_only, repair=repair), {}
    if scheme in ("memory", "mem"):
        return MappingStorage(), {}
    if scheme == "zeo":
        return _zeo_storage(uri, read_only=read_only), {}
    if scheme in ("postgresql", "postgres"):
        return _postgres_storage(uri, read_only=read_only), {}
    return _zodburi_storage(uri)


def filestorage_path(uri: str) -> Path | None:
    """The file a FileStorage URI or path names, None for other schemes."""
    if "://" not in uri:
        return Path(uri).expanduser()
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return None
    return Path(unquote(parts.netloc + parts.path)).expanduser()


@dataclass(frozen=True)
class DamagedTail:
    """Bytes at the end of a FileStorage that are not a whole transaction."""

    path: Path
    #: where the last whole transaction ends (what ZODB would cut the file to)
    position: int
    #: how many bytes follow it
    cut: int


def damaged_tail(path: str | os.PathLike[str]) -> DamagedTail | None:
    """What opening the FileStorage at ``path`` for writing would cut, read without writing.

    ZODB reads a data file up to the end of its last whole transaction; opened for
    writing, it truncates what follows (moving it to ``.trN``). This opens the file
    read-only -- no lock, no index written -- and compares that end with the size.
    """
    path = Path(path)
    with _quiet(logging.getLogger("ZODB.FileStorage")):  # what it finds is said by the caller
        storage = _open_file_storage(path, read_only=True)
    try:
        end = storage.getSize()
    finally:
        storage.close()
    size = path.stat().st_size
    return DamagedTail(path, end, size - end) if size > end else None


def _file_storage(uri: str, *, create: bool, read_only: bool, repair: bool = False) -> Any:
    path = filestorage_path(uri)
    assert path is not None
    if not path.exists():
        if not create or read_only:
            raise DatabaseMissingError(
                f"no database at {path}, and nothing was created: check the path (--db, "
                "$DSUSTORE_DB, [tool.dsustore] db), or make a new database there with "
                "`dsustore init` or `dsustore upgrade --create` (create=True in Python)",
                path=str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise DatabaseOpenError(f"no database at {path} (it is not a file)")
    elif not os.access(path, os.R_OK):
        raise DatabaseOpenError(f"database at {path} is not readable")
    elif not read_only:
        _check_tail(path, repair=repair)
    storage = _open_file_storage(path, read_only=read_only)
    if read_only and path.stat().st_size > storage.getSize():
        log.warning("%s: the %s bytes from position %s are not a whole transaction (a commit "
                    "in progress, or a damaged tail); they are not read", path,
                    f"{path.stat().st_size - storage.getSize():,}", f"{storage.getSize():,}")
    return storage


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """``logger``'s warnings withheld for a moment."""
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _check_tail(path: Path, *, repair: bool) -> None:
    """Refuse to open for writing a file whose tail ZODB would cut, unless told to repair."""
    tail = damaged_tail(path)
    if tail is None:
        return
    if _locked(path):  # a commit in progress in the process holding it, not damage
        raise DatabaseLockedError(f"database {path} is locked by another process")
    where = (f"the {tail.cut:,} bytes at the end of {path}, from position {tail.position:,}, "
             "are not a whole transaction")
    if not repair:
        raise DatabaseDamagedError(
            f"{where}; opening it for writing would cut them (ZODB moves them to "
            f"{path}.trN). Nothing was changed: look at it with a read-only command, copy "
            "the file, then rerun with --repair (repair=True in Python) to cut them",
            path=str(path), position=tail.position, cut=tail.cut)
    log.warning("%s; cutting them (--repair): ZODB moves them to %s.trN", where, path)


def _locked(path: Path) -> bool:
    """Whether another process holds the FileStorage open for writing (asked without
    creating or writing its lock file)."""
    lock_path = Path(f"{path}.lock")
    if not lock_path.exists():
        return False
    try:
        lock = SimpleLockFile(str(lock_path))
    except LockError:
        return True
    lock.close()
    return False


def _open_file_storage(path: Path, *, read_only: bool) -> Any:
    try:
        return FileStorage(str(path), read_only=read_only)
    except LockError as err:
        raise DatabaseLockedError(f"database {path} is locked by another process") from err
    except OSError as err:
        raise DatabaseOpenError(f"cannot open database at {path}: {err.strerror or err}") from err
    except Exception as err:  # a corrupt or foreign file
        raise DatabaseOpenError(f"cannot open database at {path}: {err}") from err


def _has_root(storage: Any) -> bool:
    try:
        storage.load(z64)
    except POSKeyError:
        return False
    return True


_ZEO_OPTIONS = ("storage", "wait_timeout", "server_sync")


def _zeo_storage(uri: str, *, read_only: bool) -> Any:
    import ZEO.ClientStorage

    parts = urlsplit(uri)
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - set(_ZEO_OPTIONS))
    if unknown:
        raise DatabaseOpenError(f"unknown ZEO option(s) in {uri!r}: {', '.join(unknown)} "
                                f"(known: {', '.join(_ZEO_OPTIONS)})")
    if parts.hostname:
        address: Any = (parts.hostname, parts.port or 8100)
    else:
        address = unquote(parts.path)
    try:
        return ZEO.ClientStorage.ClientStorage(
            address, storage=options.get("storage", "1"), read_only=read_only,
            wait_timeout=float(options.get("wait_timeout", 10)),
            server_sync=_boolean(options.get("server_sync", "true")))
    except Exception as err:
        raise DatabaseOpenError(f"cannot connect to ZEO server at {uri}: {err}") from err


def _postgres_storage(uri: str, *, read_only: bool) -> Any:
    try:
        from relstorage.adapters.postgresql import PostgreSQLAdapter
        from relstorage.options import Options
        from relstorage.storage import RelStorage
        from relstorage.zodburi_resolver import postgresql_resolver
    except ImportError as err:
        raise DatabaseOpenError(
            f"{uri.split(':', 1)[0]}:// needs RelStorage and a PostgreSQL driver "
            "(pip install 'relstorage[postgresql]')") from err
    parts = urlsplit(uri)
    query = parse_qsl(parts.query)
    known = set(Options.valid_option_names())
    settings = {key: value for key, value in query if key in known}
    libpq = [(key, value) for key, value in query if key not in known]
    try:
        converted, rest = postgresql_resolver.interpret_kwargs(settings)
        options = Options(**dict(converted, **rest, read_only=read_only))
    except Exception as err:
        raise DatabaseOpenError(f"bad RelStorage option in {uri!r}: {err}") from err
    dsn = _libpq_dsn(parts, libpq)
    try:
        adapter = PostgreSQLAdapter(dsn=dsn, options=options)
        return RelStorage(adapter, options=options)
    except Exception as err:
        raise DatabaseOpenError(f"cannot open PostgreSQL database {parts.hostname}: {err}") from err


def _libpq_dsn(parts: Any, params: list[tuple[str, str]]) -> str:
    """A ``key='value'`` libpq connection string (RelStorage appends to it, so not a URI)."""
    fields = [("host", parts.hostname), ("port", parts.port),
              ("dbname", unquote(parts.path.lstrip("/")) or None),
              ("user", unquote(parts.username) if parts.username else None),
              ("password", unquote(parts.password) if parts.password else None), *params]

    def quoted(value: Any) -> str:
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quoted(value)}" for key, value in fields if value is not None)


def _boolean(text: str) -> bool:
    return text.strip().lower() not in ("0", "false", "no", "off")


def _zodburi_storage(uri: str) -> tuple[Any, dict[str, Any]]:
    try:
        import zodburi
    except ImportError as err:
        raise DatabaseOpenError(
            f"unsupported database URI {uri!r}: use a file path, file://, memory://, "
            "zeo:// or postgresql:// (install zodburi for more schemes)") from err
    try:
        factory, dbkw = zodburi.resolve_uri(uri)
        return factory(), dict(dbkw)
    except KeyError as err:
        raise DatabaseOpenError(f"unsupported database URI scheme in {uri!r}") from err
    except Exception as err:
        raise DatabaseOpenError(f"cannot open database {uri!r}: {err}") from err
