"""Real database servers for the test suite, bound to the loopback interface.

Tests start and stop these servers themselves:

* :class:`PostgresServer` -- a throw-away PostgreSQL cluster (``initdb`` +
  ``postgres``) in a temporary directory, listening on ``127.0.0.1`` on a free
  port, with durability switched off for speed.  When the current user is
  root the cluster runs as an unprivileged system user, because PostgreSQL
  refuses to run as root.
* :class:`ZEOServer` -- a ``ZEO.runzeo`` subprocess serving a FileStorage in
  a temporary directory.

plus helpers that open :class:`ZODB.DB` objects against them.  Nothing here
skips: when a server cannot be found or started, a ``RuntimeError`` explains
why (including the tail of the server log where there is one).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Iterable

import ZODB
import ZODB.FileStorage

__all__ = [
    "INSTALL_SCRIPT",
    "LOOPBACK",
    "PG_SYSTEM_USER",
    "PostgresServer",
    "ZEOServer",
    "find_pg_bin",
    "free_port",
    "open_filestorage_db",
    "open_relstorage_db",
    "open_zeo_db",
]

LOOPBACK = "127.0.0.1"

#: Unprivileged account that owns and runs test clusters when we are root.
PG_SYSTEM_USER = "dsustore-pg"

#: Script that installs the PostgreSQL server binaries.
INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "install-postgres.sh"

#: Binaries a usable PostgreSQL installation must provide.
_PG_REQUIRED = ("initdb", "pg_ctl", "postgres")

#: Longest path the kernel accepts for a unix socket (sun_path minus NUL).
_MAX_SOCKET_PATH = 107

_live_servers: set = set()
_live_lock = threading.Lock()
_db_counter = itertools.count(1)


# ---------------------------------------------------------------------------
# Generic helpers
# ---------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on *host* that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _bind_failed(path: Path, offset: int) -> bool:
    """Whether the log written after *offset* reports a port already taken."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace").lower()
    except OSError:
        return False
    return "already in use" in text or "could not bind" in text


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:]) or "<empty>"


def _register(server) -> None:
    with _live_lock:
        _live_servers.add(server)


def _unregister(server) -> None:
    with _live_lock:
        _live_servers.discard(server)


@atexit.register
def _stop_leftover_servers() -> None:
    # Safety net for servers whose owner never called stop().
    with _live_lock:
        leftovers = list(_live_servers)
    for server in leftovers:
        try:
            server.stop()
        except Exception:
            pass


class _PortLost(Exception):
    """The server could not bind the port it was given (lost a race)."""


def _die_with_parent(sig: str) -> list[str]:
    """Command prefix that delivers *sig* to the server if this process dies.

    Uses util-linux ``setpriv --pdeathsig``, which sets the signal and then
    execs the server in place, so the server stays a direct child.  The
    signal is tied to the thread that started the server.  Empty when
    ``setpriv`` is unavailable: then only :meth:`stop` and the ``atexit``
    hook end the server.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig, "--"] if setpriv else []


def _clean_env(extra: dict | None = None) -> dict:
    """Environment for server subprocesses, without libpq overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    env["LANG"] = "C"
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------


def _version_key(path: Path) -> tuple:
    name = path.parent.name  # /usr/lib/postgresql/<ver>/bin
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def find_pg_bin() -> Path:
    """Directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Looks at ``$DSUSTORE_PG_BIN``, then Debian's ``/usr/lib/postgresql/<ver>/bin``
    (newest version first), then ``pg_config --bindir``, then ``$PATH``.
    """
    candidates: list[Path] = []
    override = os.environ.get("DSUSTORE_PG_BIN")
    if override:
        candidates.append(Path(override))
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            if bindir:
                candidates.append(Path(bindir))
        except (OSError, subprocess.CalledProcessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)

    candidates = list(dict.fromkeys(candidates))
    for directory in candidates:
        if all(os.access(directory / exe, os.X_OK) for exe in _PG_REQUIRED):
            return directory
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found "
        f"(looked in: {', '.join(map(str, candidates)) or 'nothing'}). "
        f"Install them with: sudo sh {INSTALL_SCRIPT}  "
        "(or point $DSUSTORE_PG_BIN at their directory)."
    )


def _ensure_pg_user() -> str:
    """Name of an unprivileged account to run PostgreSQL as (root only)."""
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
        return PG_SYSTEM_USER
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--no-create-home",
            "--home-dir", "/nonexistent",
            "--shell", "/usr/sbin/nologin",
            "--user-group",
            PG_SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
    )
    try:
        pwd.getpwnam(PG_SYSTEM_USER)  # created now, or concurrently by another process
        return PG_SYSTEM_USER
    except KeyError:
        pass
    try:
        pwd.getpwnam("nobody")
        return "nobody"
    except KeyError:
        raise RuntimeError(
            f"cannot create system user {PG_SYSTEM_USER!r} to run PostgreSQL "
            f"(useradd said: {result.stderr.strip() or result.returncode}) "
            "and there is no 'nobody' account"
        ) from None


def _check_traversable(path: Path) -> bool:
    """True if every ancestor of *path* can be searched by other users."""
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1, for tests.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with PostgresServer() as pg:
            dsn = pg.create_database()

    The postmaster is a direct child of the current process (started with
    the cluster owner's uid when running as root), so stopping it reaps it
    and no orphaned or zombie server outlives the tests.

    *max_locks_per_transaction* defaults to a large value because RelStorage
    takes one advisory lock per modified object during commit; pass 64 (the
    PostgreSQL default) to test behaviour under stock settings.
    """

    superuser = "postgres"

    def __init__(
        self,
        *,
        max_locks_per_transaction: int = 2048,
        max_connections: int = 100,
        settings: dict | None = None,
        startup_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        base_dir: str | os.PathLike | None = None,
    ) -> None:
        self.max_locks_per_transaction = int(max_locks_per_transaction)
        self.max_connections = int(max_connections)
        self.extra_settings = dict(settings or {})
        self.startup_timeout = float(startup_timeout)
        self.stop_timeout = float(stop_timeout)
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.host = LOOPBACK
        self.port: int | None = None
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        #: Seconds spent in initdb, and from initdb start to accepting
        #: connections (the whole start-up), for the last start().
        self.initdb_seconds: float | None = None
        self.startup_seconds: float | None = None
        self._bin: Path | None = None
        self._run_as: pwd.struct_passwd | None = None
        self._log_file = None
        self._databases: list[str] = []

    # -- paths --------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self._require_root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._require_root()

    @property
    def log_path(self) -> Path:
        return self._require_root() / "postgres.log"

    @property
    def pid(self) -> int | None:
        """Process id of the postmaster, while running."""
        return self.process.pid if self.process is not None else None

    def _require_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("PostgresServer has not been started")
        return self.root

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "PostgresServer":
        if self.process is not None:
            return self
        self._bin = find_pg_bin()
        self._run_as = pwd.getpwnam(_ensure_pg_user()) if os.geteuid() == 0 else None
        try:
            self._make_root()
            t0 = time.monotonic()
            self._initdb()
            self.initdb_seconds = time.monotonic() - t0
            self._start_with_free_port()
            self.startup_seconds = time.monotonic() - t0
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (as ``pg_ctl stop -m fast``), then remove the cluster.

        Escalates to immediate shutdown and finally SIGKILL if the server
        does not exit in time.  Idempotent.
        """
        _unregister(self)
        try:
            self._terminate()
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            self._databases.clear()
            root, self.root = self.root, None
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    def _terminate(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        # SIGINT = fast shutdown, SIGQUIT = immediate shutdown.
        for sig, timeout in (
            (signal.SIGINT, self.stop_timeout),
            (signal.SIGQUIT, 10.0),
            (signal.SIGKILL, 10.0),
        ):
            if proc.poll() is not None:
                return
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def _make_root(self) -> None:
        base = self.base_dir or Path(tempfile.gettempdir())
        if self._run_as is not None and not _check_traversable(base / "x"):
            fallback = Path("/tmp")
            if self.base_dir is None and _check_traversable(fallback / "x"):
                base = fallback
            else:
                raise RuntimeError(
                    f"{base} is not searchable by other users, so the PostgreSQL "
                    f"user {self._run_as.pw_name!r} could not reach its data "
                    "directory; pass base_dir= or set TMPDIR to a world-searchable "
                    "directory"
                )
        self.root = Path(tempfile.mkdtemp(prefix="dsustore-pg-", dir=base))
        _register(self)
        longest_socket = self.root / ".s.PGSQL.65535.lock"
        if len(str(longest_socket)) > _MAX_SOCKET_PATH:
            raise RuntimeError(
                f"temporary directory {self.root} is too long for a unix socket path; "
                "pass a shorter base_dir="
            )
        self._chown(self.root)
        os.chmod(self.root, 0o700)

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _popen_kwargs(self) -> dict:
        kwargs = dict(
            cwd=self.root,
            env=_clean_env({"HOME": str(self.root)}),
            stdin=subprocess.DEVNULL,
        )
        if self._run_as is not None:
            kwargs.update(
                user=self._run_as.pw_uid,
                group=self._run_as.pw_gid,
                extra_groups=[],
            )
        return kwargs

    def _initdb(self) -> None:
        argv = [
            str(self._bin / "initdb"),
            "--pgdata", str(self.data_dir),
            "--username", self.superuser,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        ]
        timeout = max(self.startup_timeout, 120.0)
        try:
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout,
                **self._popen_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"initdb timed out after {timeout:.0f}s") from exc
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed (exit {result.returncode}): {' '.join(argv)}\n"
                f"--- stdout ---\n{result.stdout.strip()}\n"
                f"--- stderr ---\n{result.stderr.strip()}"
            )
        # Only loopback TCP and the private unix socket, no password.
        (self.data_dir / "pg_hba.conf").write_text(
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            "local   all       all                 trust\n"
            "host    all       all   127.0.0.1/32  trust\n"
        )

    def _settings(self, port: int) -> dict:
        settings = {
            "listen_addresses": LOOPBACK,
            "port": port,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": self.max_connections,
            "max_locks_per_transaction": self.max_locks_per_transaction,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "32MB",
            "max_wal_size": "1GB",
            "checkpoint_timeout": "1h",
            "logging_collector": "off",
            "log_min_messages": "warning",
            "log_line_prefix": "%m [%p] ",
            "timezone": "UTC",
        }
        settings.update(self.extra_settings)
        return settings

    def _write_conf(self, port: int) -> None:
        lines = []
        for key, value in self._settings(port).items():
            if isinstance(value, str):
                value = "'" + value.replace("'", "''") + "'"
            lines.append(f"{key} = {value}")
        conf = self.data_dir / "postgresql.auto.conf"
        conf.write_text("# Settings for the test cluster.\n" + "\n".join(lines) + "\n")
        self._chown(conf)

    def _start_with_free_port(self, attempts: int = 3) -> None:
        for attempt in range(attempts):
            self.port = free_port(LOOPBACK)
            self._write_conf(self.port)
            try:
                self._spawn_and_wait()
                return
            except _PortLost:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        "PostgreSQL could not bind a free port "
                        f"after {attempts} attempts\n"
                        f"--- server log ({self.log_path}) ---\n{self.log_tail()}"
                    ) from None

    def _spawn_and_wait(self) -> None:
        import psycopg2

        if self._log_file is None:
            self._log_file = open(self.log_path, "ab")
        log_offset = _log_size(self.log_path)
        self.process = subprocess.Popen(
            # SIGINT is PostgreSQL's fast shutdown.
            [*_die_with_parent("INT"), str(self._bin / "postgres"), "-D", str(self.data_dir)],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **self._popen_kwargs(),
        )
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self.process = None
                if _bind_failed(self.log_path, log_offset):
                    raise _PortLost(f"port {self.port} taken")
                raise RuntimeError(
                    f"PostgreSQL exited with status {code} during start-up\n"
                    f"--- server log ({self.log_path}) ---\n{self.log_tail()}"
                )
            try:
                conn = psycopg2.connect(self.dsn(), connect_timeout=2)
            except psycopg2.OperationalError as exc:
                last_error = exc
                time.sleep(0.02)
                continue
            conn.close()
            return
        raise RuntimeError(
            f"PostgreSQL on {self.host}:{self.port} did not accept connections within "
            f"{self.startup_timeout:.0f}s: {last_error}\n"
            f"--- server log ({self.log_path}) ---\n{self.log_tail()}"
        )

    # -- databases ----------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string for *dbname* over loopback TCP."""
        if self.port is None:
            raise RuntimeError("PostgresServer has not been started")
        return f"host={self.host} port={self.port} dbname={dbname} user={self.superuser}"

    def _admin_connect(self):
        import psycopg2

        conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        conn.autocommit = True
        return conn

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (unique name unless given); return its DSN."""
        if name is None:
            name = f"dsustore_{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:8]}"
        conn = self._admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{_ident(name)}" TEMPLATE template0')
        finally:
            conn.close()
        self._databases.append(name)
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop *name*, disconnecting any remaining sessions."""
        conn = self._admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')
        finally:
            conn.close()
        if name in self._databases:
            self._databases.remove(name)

    @property
    def databases(self) -> list[str]:
        """Names of databases created through :meth:`create_database`."""
        return list(self._databases)

    def query(self, sql: str, params: Iterable | None = None, dbname: str = "postgres"):
        """Run *sql* in *dbname* and return all rows (empty list if none)."""
        import psycopg2

        conn = psycopg2.connect(self.dsn(dbname), connect_timeout=10)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()

    def log_tail(self, lines: int = 40) -> str:
        if self.root is None:
            return "<no log: server not started>"
        return _tail(self.log_path, lines)

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"<PostgresServer {self.host}:{self.port} {state} root={self.root}>"


def _ident(name: str) -> str:
    if not name or '"' in name or "\0" in name:
        raise ValueError(f"invalid database name: {name!r}")
    return name


# ---------------------------------------------------------------------------
# ZEO
# ---------------------------------------------------------------------------


class ZEOServer:
    """A ``ZEO.runzeo`` subprocess serving a FileStorage on 127.0.0.1.

    ``address`` is ``(host, port)``, ``uri`` is ``zeo://host:port`` and
    ``data_path`` the FileStorage file behind the server.
    """

    def __init__(
        self,
        *,
        blobs: bool = False,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
        base_dir: str | os.PathLike | None = None,
        python: str | None = None,
    ) -> None:
        self.blobs = blobs
        self.startup_timeout = float(startup_timeout)
        self.stop_timeout = float(stop_timeout)
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.python = python or sys.executable
        self.host = LOOPBACK
        self.port: int | None = None
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        #: Seconds from spawning runzeo to the port accepting connections.
        self.startup_seconds: float | None = None
        self._log_file = None

    @property
    def address(self) -> tuple[str, int]:
        if self.port is None:
            raise RuntimeError("ZEOServer has not been started")
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        host, port = self.address
        return f"zeo://{host}:{port}"

    @property
    def data_path(self) -> Path:
        return self._require_root() / "Data.fs"

    @property
    def blob_dir(self) -> Path | None:
        return self._require_root() / "blobs" if self.blobs else None

    @property
    def log_path(self) -> Path:
        return self._require_root() / "zeo.log"

    @property
    def conf_path(self) -> Path:
        return self._require_root() / "zeo.conf"

    def _require_root(self) -> Path:
        if self.root is None:
            raise RuntimeError("ZEOServer has not been started")
        return self.root

    def __enter__(self) -> "ZEOServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        if self.root is None:
            return "<no log: server not started>"
        return _tail(self.log_path, lines)

    def start(self) -> "ZEOServer":
        if self.process is not None:
            return self
        base = self.base_dir or Path(tempfile.gettempdir())
        self.root = Path(tempfile.mkdtemp(prefix="dsustore-zeo-", dir=base))
        _register(self)
        try:
            last_error = None
            for _ in range(3):
                try:
                    self._spawn_and_wait()
                    return self
                except _PortLost as exc:
                    last_error = exc
            raise RuntimeError(f"ZEO server could not bind a free port: {last_error}")
        except BaseException:
            self.stop()
            raise

    def _write_conf(self) -> None:
        blob_line = f"  blob-dir {self.blob_dir}\n" if self.blobs else ""
        self.conf_path.write_text(
            "<zeo>\n"
            f"  address {self.host}:{self.port}\n"
            "</zeo>\n"
            "<filestorage 1>\n"
            f"  path {self.data_path}\n"
            f"{blob_line}"
            "</filestorage>\n"
        )

    def _spawn_and_wait(self) -> None:
        self.port = free_port(self.host)
        self._write_conf()
        if self._log_file is not None:
            self._log_file.close()
        self._log_file = open(self.log_path, "ab")
        log_offset = _log_size(self.log_path)
        t0 = time.monotonic()
        self.process = subprocess.Popen(
            [*_die_with_parent("TERM"), self.python, "-m", "ZEO.runzeo",
             "-C", str(self.conf_path)],
            cwd=self.root,
            env=_clean_env({"PYTHONUNBUFFERED": "1"}),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = t0 + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                if _bind_failed(self.log_path, log_offset):
                    raise _PortLost(f"port {self.port} taken")
                raise RuntimeError(
                    f"ZEO server exited with status {code} during start-up\n"
                    f"--- server log ({self.log_path}) ---\n{_tail(self.log_path)}"
                )
            if _zeo_ruok(self.host, self.port) is not None:
                self.startup_seconds = time.monotonic() - t0
                return
            time.sleep(0.02)
        raise RuntimeError(
            f"ZEO server on {self.host}:{self.port} did not accept connections within "
            f"{self.startup_timeout:.0f}s\n"
            f"--- server log ({self.log_path}) ---\n{_tail(self.log_path)}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``stop_timeout``; remove files. Idempotent."""
        _unregister(self)
        proc, self.process = self.process, None
        try:
            if proc is not None and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.stop_timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait(timeout=self.stop_timeout)
        finally:
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            root, self.root = self.root, None
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.process is not None else "stopped"
        return f"<ZEOServer {self.host}:{self.port} {state} root={self.root}>"


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _recv_frame(sock: socket.socket) -> bytes:
    (size,) = struct.unpack(">I", _recv_exactly(sock, 4))
    return _recv_exactly(sock, size)


def _zeo_ruok(host: str, port: int, timeout: float = 1.0) -> dict | None:
    """Status of the ZEO server at (host, port), or None if it does not answer.

    Speaks ZEO's own handshake (the server announces its protocol, the
    client answers ``ruok``), so a foreign listener on the port does not
    count as a ready ZEO server.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            announce = _recv_frame(sock)
            if announce[:1] not in (b"Z", b"M"):
                return None
            sock.sendall(struct.pack(">I", 4) + b"ruok")
            return json.loads(_recv_frame(sock).decode("ascii"))
    except (OSError, ValueError, struct.error):
        return None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# Opening ZODB databases
# ---------------------------------------------------------------------------


def open_filestorage_db(path: str | os.PathLike, **db_kwargs) -> ZODB.DB:
    """A :class:`ZODB.DB` on a FileStorage at *path* (created if missing)."""
    storage = ZODB.FileStorage.FileStorage(str(path))
    try:
        return ZODB.DB(storage, **db_kwargs)
    except BaseException:
        storage.close()
        raise


def open_zeo_db(
    server: ZEOServer | tuple[str, int],
    *,
    wait_timeout: float = 30.0,
    storage_kwargs: dict | None = None,
    **db_kwargs,
) -> ZODB.DB:
    """A :class:`ZODB.DB` backed by a ZEO ``ClientStorage`` talking to *server*.

    Each call makes an independent client (its own connection and cache).
    ``server_sync`` defaults to True here (ZEO's default is False): starting a
    transaction then makes a server round trip, so changes committed by other
    clients are seen deterministically.
    """
    import ZEO.ClientStorage

    address = server.address if isinstance(server, ZEOServer) else tuple(server)
    storage_kwargs = dict(storage_kwargs or {})
    # Make each new transaction wait for the server's pending invalidations,
    # so a commit by one client is visible to the next transaction of another.
    storage_kwargs.setdefault("server_sync", True)
    if isinstance(server, ZEOServer) and server.blobs:
        storage_kwargs.setdefault(
            "blob_dir", tempfile.mkdtemp(prefix="zeo-client-blobs-", dir=server.root)
        )
    storage = ZEO.ClientStorage.ClientStorage(
        address, wait_timeout=wait_timeout, **storage_kwargs
    )
    try:
        return ZODB.DB(storage, **db_kwargs)
    except BaseException:
        storage.close()
        raise


def open_relstorage_db(
    dsn: str,
    *,
    keep_history: bool,
    options: dict | None = None,
    **db_kwargs,
) -> ZODB.DB:
    """A :class:`ZODB.DB` on RelStorage/PostgreSQL at *dsn* (psycopg2 driver).

    The RelStorage schema is created on first open.  A database must be
    opened with the same *keep_history* it was created with; use a fresh
    database from :meth:`PostgresServer.create_database` per test.
    Extra RelStorage options (e.g. ``commit_lock_timeout``) go in *options*.
    """
    from relstorage.adapters.postgresql import PostgreSQLAdapter
    from relstorage.options import Options
    from relstorage.storage import RelStorage

    opts = {"driver": "psycopg2", "keep_history": keep_history}
    opts.update(options or {})
    rs_options = Options(**opts)
    adapter = PostgreSQLAdapter(dsn=dsn, options=rs_options)
    storage = RelStorage(adapter, options=rs_options)
    try:
        return ZODB.DB(storage, **db_kwargs)
    except BaseException:
        storage.close()
        raise
