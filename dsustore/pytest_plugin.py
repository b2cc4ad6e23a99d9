"""The dsustore pytest plugin: built-in tests of a project's migrations, and fixtures for its own.

``pytest --dsustore`` adds four tests, collected as if they were written in the
project's ``tests/conftest.py`` (the ``dsustore_tests_path`` ini option names
another file), so they see its fixtures:

``test_single_head``
    the migrations have one head: nobody forked the history unmerged.
``test_upgrade``
    the migrations run from the data of ``dsustore_db`` up to every head.
``test_up_down_consistency``
    each step up, then down, leaves every reachable record -- class and decoded
    state -- as it was before the step; a downgrade that forgets to undo something
    fails, naming the step and the objects that differ. Steps without
    ``downgrade()``, and steps of a fork that cannot be undone without undoing the
    other branch, are upgraded and named in a warning.
``test_no_drift``
    at the head, the stored schema matches the code: what ``dsustore status
    --check`` checks.

The data is the project's: a ``dsustore_db`` fixture in its ``conftest.py``
returning a ``ZODB.DB`` at the base revision (or any revision below the head),
holding data as the oldest release stored it. Without one, an empty in-memory
database is used. The migrations folder is ``[tool.dsustore] migrations`` in the
project's ``pyproject.toml`` (``dsustore_migrations`` in pytest's ini options wins),
and ``[tool.dsustore] sys_path`` is put on ``sys.path``, as the command does.

A test of the project's own takes ``dsustore_runner`` (a
:class:`dsustore.testing.MigrationRunner` on ``dsustore_db``) to move the database
between revisions and read its records. The built-in tests can also be imported
into a test module by name, and then run without ``--dsustore``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ZODB

from .runtime.config import Settings, prepend_sys_path, resolve_settings
from .testing import IrreversibleStepWarning, MigrationRunner, differences

#: the built-in tests, in the order they run
BUILTIN_TESTS = ("test_single_head", "test_upgrade", "test_up_down_consistency", "test_no_drift")
DEFAULT_TESTS_PATH = "tests/conftest.py"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dsustore", "dsustore migrations")
    group.addoption("--dsustore", action="store_true", default=False,
                    help="run the built-in tests of the migrations: " + ", ".join(BUILTIN_TESTS))
    parser.addini("dsustore_migrations",
                  "the migrations folder (default: [tool.dsustore] migrations, else migrations)")
    parser.addini("dsustore_tests_path",
                  "the file the built-in tests are collected in, whose fixtures they see "
                  f"(default: {DEFAULT_TESTS_PATH})")


# -- collection: the built-in tests as if written in the project's conftest ---------------


class BuiltinTests(pytest.File):
    """The built-in tests, collected under the project's tests path."""

    def collect(self) -> Iterator[pytest.Item]:
        for name in BUILTIN_TESTS:
            yield BuiltinTest.from_parent(self, name=name, callobj=globals()[name])


class BuiltinTest(pytest.Function):
    """One built-in test: reported by its name, where it is collected."""

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


def _tests_path(config: pytest.Config) -> Path:
    named = config.getini("dsustore_tests_path") or DEFAULT_TESTS_PATH
    return (config.rootpath / str(named)).resolve()


_COLLECTED = pytest.StashKey[bool]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if not config.getoption("dsustore") or file_path.resolve() != _tests_path(config):
        return None
    config.stash[_COLLECTED] = True
    return BuiltinTests.from_parent(parent, path=file_path)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    """Without a tests path file, the built-in tests go under the root (default fixtures only)."""
    if not config.getoption("dsustore") or config.stash.get(_COLLECTED, False):
        return
    if _tests_path(config).exists():
        return  # the file is there but was not collected: this run is about other tests
    collector = BuiltinTests.from_parent(session, path=config.rootpath / "dsustore")
    items.extend(collector.collect())


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dsustore_settings(pytestconfig: pytest.Config) -> Settings:
    """The project's settings, read as the command reads them, from the root folder; its
    ``sys_path`` is put on ``sys.path``."""
    migrations = pytestconfig.getini("dsustore_migrations") or None
    settings = resolve_settings(migrations=os.fspath(migrations) if migrations else None,
                                cwd=pytestconfig.rootpath)
    prepend_sys_path(settings.sys_path)
    return settings


@pytest.fixture(scope="session")
def dsustore_migrations(dsustore_settings: Settings) -> Path:
    """The project's migrations folder."""
    return dsustore_settings.migrations


@pytest.fixture
def dsustore_db() -> Iterator[Any]:
    """The database the built-in tests migrate: define your own in ``conftest.py``, at the base
    revision and holding data as your oldest release stored it. This one is empty, in memory."""
    db = ZODB.DB(None)
    try:
        yield db
    finally:
        db.close()


@pytest.fixture
def dsustore_runner(dsustore_db: Any, dsustore_migrations: Path) -> MigrationRunner:
    """A :class:`~dsustore.testing.MigrationRunner` over ``dsustore_db`` and the migrations."""
    return MigrationRunner(dsustore_db, dsustore_migrations)


# -- the built-in tests ----------------------------------------------------------------------


def test_single_head(dsustore_runner: MigrationRunner) -> None:
    """The migrations have a single head: no fork was left unmerged."""
    heads = dsustore_runner.heads
    if not heads:
        pytest.skip(f"no migrations in {dsustore_runner.migrations}")
    assert len(heads) == 1, (
        f"the migrations have {len(heads)} heads, {', '.join(heads)}: join them with "
        "`dsustore merge -m MESSAGE`")


def test_upgrade(dsustore_runner: MigrationRunner) -> None:
    """Every migration runs, from the data of ``dsustore_db`` up to every head."""
    dsustore_runner.upgrade("heads")
    assert set(dsustore_runner.current()) == set(dsustore_runner.heads)


def test_up_down_consistency(dsustore_runner: MigrationRunner) -> None:
    """Each step up, then down, leaves every reachable record as it was before the step."""
    irreversible, entangled = [], []
    for script in dsustore_runner.pending():
        before = dsustore_runner.records()
        dsustore_runner.upgrade(script.revision)
        if not script.has_downgrade:
            irreversible.append(script.revision)
            continue
        back_to = script.down_revisions[0] if script.down_revisions else "base"
        if [s.revision for s in dsustore_runner.downgrade_path(back_to)] != [script.revision]:
            entangled.append(script.revision)  # a branch beside it would be undone with it
            continue
        dsustore_runner.downgrade(back_to)
        changed = differences(before, dsustore_runner.records())
        if changed:
            pytest.fail(f"{script.label}: its upgrade then its downgrade do not leave the records "
                        f"as they were:\n  " + "\n  ".join(changed), pytrace=False)
        dsustore_runner.upgrade(script.revision)
    if irreversible:
        warnings.warn(IrreversibleStepWarning(
            f"{', '.join(irreversible)} define no downgrade(): upgraded without a way back to check"),
            stacklevel=1)
    if entangled:
        warnings.warn(IrreversibleStepWarning(
            f"{', '.join(entangled)} cannot be undone alone (another branch of a fork was applied "
            "on the same parent): upgraded without a way back to check"), stacklevel=1)


def test_no_drift(dsustore_runner: MigrationRunner) -> None:
    """At the head, the stored schema matches the code (what ``dsustore status --check`` checks)."""
    dsustore_runner.upgrade("heads")
    status = dsustore_runner.status()
    if status["problems"]:
        lines = [*status["problems"], *(d["python"] for d in status["drift"]),
                 *(f"{f['class']} does not import: {f['cause']}" for f in status["import_failed"])]
        pytest.fail("at the head the database is not in line with the code:\n  "
                    + "\n  ".join(lines), pytrace=False)
