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
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import ZODB
from zc.lockfile import LockError
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage

from ..errors import DatabaseLockedError, DatabaseMissingError, DatabaseOpenError, NoDatabaseConfiguredError


def open_db(uri: str | None, *, create: bool = False, read_only: bool = False) -> Any:
    """Open the ZODB database named by ``uri``; ``create`` allows a new FileStorage."""
    if not uri:
        raise NoDatabaseConfiguredError(
            "no database given: pass --db URI, set DSUSTORE_DB, or add "
            '[tool.dsustore] db = "..." to pyproject.toml')
    storage, dbkw = open_storage(uri, create=create, read_only=read_only)
    try:
        return ZODB.DB(storage, **dbkw)
    except Exception:
        storage.close()
        raise


def open_storage(uri: str, *, create: bool = False, read_only: bool = False) -> tuple[Any, dict[str, Any]]:
    """The storage named by ``uri`` and keyword arguments for ``ZODB.DB``."""
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme in ("", "file"):
        return _file_storage(uri, create=create, read_only=read_only), {}
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


def _file_storage(uri: str, *, create: bool, read_only: bool) -> Any:
    path = filestorage_path(uri)
    assert path is not None
    if not path.exists():
        if not create:
            raise DatabaseMissingError(
                f"no database at {path}; create one with `dsustore init` or pass create=True",
                path=str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise DatabaseOpenError(f"no database at {path} (it is not a file)")
    elif not os.access(path, os.R_OK):
        raise DatabaseOpenError(f"database at {path} is not readable")
    try:
        return FileStorage(str(path), read_only=read_only)
    except LockError as err:
        raise DatabaseLockedError(f"database {path} is locked by another process") from err
    except OSError as err:
        raise DatabaseOpenError(f"cannot open database at {path}: {err.strerror or err}") from err
    except Exception as err:  # a corrupt or foreign file
        raise DatabaseOpenError(f"cannot open database at {path}: {err}") from err


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
