"""Shared fixtures: real ZODB databases in temporary folders, and a way to compare them."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

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

from dsustore.storage import adapter_for  # noqa: E402

if TYPE_CHECKING:
    from sampleserver import Served


def _plugin_installed() -> bool:
    """Whether pytest loads the dsustore plugin itself: installed with its entry point."""
    return not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD") and any(
        entry.name == "dsustore" for entry in importlib.metadata.entry_points(group="pytest11"))


# pytester runs the plugin's tests; the plugin itself when this checkout is not installed
pytest_plugins = ["pytester", *([] if _plugin_installed() else ["dsustore.pytest_plugin"])]


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
    return {oid: (tid, data) for oid, tid, data in adapter_for(database).current_records()}


def last_transaction(database: ZODB.DB) -> bytes:
    """The database's last committed transaction, asked afresh of its storage."""
    return adapter_for(database).last_committed()


def keeps_history(database: ZODB.DB) -> bool:
    """Whether the database's storage keeps old revisions."""
    return adapter_for(database).keeps_history


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


# -- the sample application -----------------------------------------------------------

ROOT = TESTS.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # sample_app is run from a checkout, not installed

from sample_app.releases import LATEST as LATEST_RELEASE  # noqa: E402

#: populate sizes for tests: small, but every class has instances
SAMPLE_SIZES = {"accounts": 30, "products": 10, "orders": 60, "sessions": 20}
SAMPLE_SEED = 7


def _sampleshop_modules() -> dict:
    return {name: module for name, module in sys.modules.items()
            if name == "sampleshop" or name.startswith("sampleshop.")}


@contextmanager
def code_restored() -> Iterator[None]:
    """Put ``sys.path`` and the ``sampleshop`` modules back as they were on leaving."""
    path, modules = list(sys.path), _sampleshop_modules()
    try:
        yield
    finally:
        sys.path[:] = path
        for name in _sampleshop_modules():
            del sys.modules[name]
        sys.modules.update(modules)


@pytest.fixture
def restore_code() -> Iterator[None]:
    """Tests that activate releases leave the process's code as they found it."""
    with code_restored():
        yield


@pytest.fixture
def latest_shop(restore_code):
    """The newest release's ``sampleshop`` package, active for the test."""
    from sample_app import releases

    return releases.activate(releases.LATEST)


@pytest.fixture(scope="session")
def release_data(tmp_path_factory) -> dict[int, Path]:
    """A small FileStorage per release, each created by that release's code in a subprocess.

    The populates run in parallel; tests work on copies (:func:`copy_release`).
    """
    from sample_app import releases

    folder = tmp_path_factory.mktemp("release-data")
    sizes = [arg for key, value in SAMPLE_SIZES.items() for arg in (f"--{key}", str(value))]
    running = {
        n: subprocess.Popen(
            [sys.executable, "-m", "sample_app.populate", "--db", str(folder / f"r{n}.fs"),
             "--release", str(n), "--seed", str(SAMPLE_SEED), *sizes],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(1, releases.LATEST + 1)
    }
    for n, proc in running.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"populate --release {n} failed:\n{out}\n{err}")
    return {n: folder / f"r{n}.fs" for n in running}


def copy_release(release_data: dict[int, Path], n: int, folder: Path) -> tuple[Path, dict]:
    """A private copy of release ``n``'s database in ``folder``, and its credentials record."""
    source = release_data[n]
    target = folder / f"r{n}" / "Data.fs"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target, json.loads(source.with_name(f"r{n}.credentials.json").read_text())


@pytest.fixture
def release_copy(release_data, tmp_path):
    """``release_copy(n)``: a private copy of release ``n``'s database and its credentials."""
    return lambda n: copy_release(release_data, n, tmp_path)


#: the admin token of the sample servers that tests start with live updates enabled
ADMIN_TOKEN = "test-admin-token"
#: the first release and the latest: the sample API as first shipped and as it is now
EDGE_RELEASES = (1, LATEST_RELEASE)


@pytest.fixture(params=EDGE_RELEASES, ids=lambda n: f"r{n}")
def served_release(request, release_copy) -> Iterator[Served]:
    """Release 1, then the latest, served by ``python -m sample_app.server`` over HTTP from a
    private copy of its data, with live updates enabled (:data:`ADMIN_TOKEN`)."""
    from sampleserver import Served, running_server

    path, credentials = release_copy(request.param)
    with running_server(path, request.param, admin_token=ADMIN_TOKEN) as (base, _):
        yield Served(request.param, base, credentials, ADMIN_TOKEN)


@pytest.fixture
def dsustore_db(release_data, tmp_path, latest_shop) -> Iterator[ZODB.DB]:
    """The plugin's built-in tests (pytest --dsustore) run the project's migrations on release 1's
    data, with the newest code active, as an upgrade of a deployment would."""
    from sample_app.database import open_database

    path, _credentials = copy_release(release_data, 1, tmp_path)
    database = open_database(str(path))
    yield database
    database.close()
