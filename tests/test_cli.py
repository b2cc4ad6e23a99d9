"""The real ``dsustore`` console script, run in subprocesses against FileStorage databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ZODB
from conftest import storage_image
from ZODB.FileStorage import FileStorage

import shopmodels
from dsustore.cli import EXIT_LOCKED, EXIT_PENDING

TESTS = Path(__file__).parent

MIGRATION = '''\
"""add email to users"""

revision = "0001"
down_revision = None


def upgrade(patch):
    patch.add_field("shopmodels.User", "email", "nobody@example.com")


def downgrade(patch):
    patch.remove_field("shopmodels.User", "email")
'''


def run(cwd: Path, *args: str, executable: list[str] | None = None,
        db: str = "Data.fs") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env.pop("DSUSTORE_DB", None)
    command = executable or [sys.executable, "-m", "dsustore.cli"]
    return subprocess.run([*command, "--db", db, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess, *, code: int | None = None) -> str:
    assert result.returncode != 0
    if code is not None:
        assert result.returncode == code
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("dsustore: error: ")
    return lines[0]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with a shop database and an initialised, empty migrations folder."""
    db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    db.close()
    assert run(tmp_path, "init").returncode == 0
    return tmp_path


def image(folder: Path) -> dict:
    db = ZODB.DB(FileStorage(str(folder / "Data.fs"), read_only=True))
    try:
        return storage_image(db)
    finally:
        db.close()


def test_init_creates_migrations_folder(tmp_path):
    """init makes the folder with a README and prints the pyproject hint."""
    result = run(tmp_path, "init")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "migrations" / "README.md").exists()
    assert "[tool.dsustore]" in result.stdout


def test_revision_writes_a_script(project):
    """revision -m writes a numbered script that lists as the head."""
    result = run(project, "revision", "-m", "add email")
    assert result.returncode == 0, result.stderr
    assert (project / "migrations" / "0001_add_email.py").exists()
    assert run(project, "heads").stdout.split() == ["0001"]


def test_upgrade_applies_and_status_check_reports_pending(project):
    """status --check exits 3 while a migration is pending, upgrade applies it, then 0."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    assert run(project, "status", "--check").returncode == EXIT_PENDING
    result = run(project, "upgrade")
    assert result.returncode == 0, result.stderr
    assert "0001" in result.stdout
    assert run(project, "status", "--check").returncode == 0
    assert run(project, "current").stdout.strip() == "0001"
    db = ZODB.DB(FileStorage(str(project / "Data.fs"), read_only=True))
    with db.transaction() as conn:
        assert conn.root()["users"]["user1"].email == "nobody@example.com"
    db.close()


def test_plan_lists_operations_without_writing(project):
    """plan prints each pending migration's operations and changes nothing."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    before = image(project)
    result = run(project, "plan")
    assert result.returncode == 0, result.stderr
    assert "add_field(shopmodels.User, 'email'" in result.stdout
    assert image(project) == before


def test_scan_prints_counts_and_json(project):
    """scan prints instance counts per class; --json gives the same as data."""
    result = run(project, "scan")
    assert result.returncode == 0, result.stderr
    assert "shopmodels.User" in result.stdout
    data = json.loads(run(project, "--json", "scan").stdout)
    assert data["classes"]["shopmodels.User"] == 4
    assert data["classes"]["shopmodels.Admin"] == 1


def test_verify_passes_on_a_sound_database(project):
    """verify finds no broken classes or dangling references in a sound database."""
    result = run(project, "--json", "verify")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def test_snapshot_create_list_restore(project):
    """A snapshot taken before an upgrade restores the data as it was."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    assert run(project, "snapshot", "create", "before").returncode == 0
    assert run(project, "upgrade").returncode == 0
    listed = [s["name"] for s in json.loads(run(project, "--json", "snapshot", "list").stdout)]
    assert listed[0] == "before"
    assert len(listed) == 2 and listed[1].startswith("before-upgrade-0001-")  # every upgrade takes one
    result = run(project, "snapshot", "restore", "before")
    assert result.returncode == 0, result.stderr
    assert "before-restore-before" in result.stdout
    assert run(project, "status", "--check").returncode == EXIT_PENDING
    db = ZODB.DB(FileStorage(str(project / "Data.fs"), read_only=True))
    with db.transaction() as conn:
        assert not hasattr(conn.root()["users"]["user1"], "email")
    db.close()


@pytest.mark.parametrize("storage_kind", ["file", "zeo", "relstorage-hp", "relstorage-hf"])
def test_snapshot_commands_over_a_uri_say_which_kind_of_snapshot_they_used(backend, tmp_path):
    """On ZEO and RelStorage too: a transaction id where history is kept, else an export file."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    db.close()  # the command opens the database itself (a FileStorage only once)
    project = tmp_path / "project"
    project.mkdir()
    assert run(project, "init", db=backend.uri).returncode == 0
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)

    created = run(project, "snapshot", "create", "before", db=backend.uri)
    upgraded = run(project, "upgrade", db=backend.uri)
    restored = run(project, "snapshot", "restore", "before", db=backend.uri)

    for result in (created, upgraded, restored):
        assert result.returncode == 0, result.stderr
    if backend.keep_history:
        assert created.stdout.startswith("created snapshot before as transaction id 0x")
        assert restored.stdout.startswith("restored before from transaction id 0x")
    else:
        export = tmp_path / "snapshots" / "before.zexp"  # $DSUSTORE_SNAPSHOTS of the test
        assert created.stdout.strip() == (f"created snapshot before as export {export} "
                                          "(the storage keeps no history)")
        assert restored.stdout.startswith(f"restored before from export {export}")
        assert "cannot be told apart" in restored.stdout
    assert "7 objects rewritten" in restored.stdout  # 5 users, the applied records, the schema
    db = backend.open()
    with db.transaction() as conn:
        assert not any(hasattr(user, "email") for user in conn.root()["users"].values())


def test_installed_console_script_runs(project):
    """The dsustore executable installed next to the interpreter works."""
    exe = Path(sys.executable).parent / "dsustore"
    result = run(project, "scan", executable=[str(exe)])
    assert result.returncode == 0, result.stderr
    assert "shopmodels.User" in result.stdout


def test_help_documents_exit_codes(tmp_path):
    """--help lists the exit codes."""
    result = subprocess.run([sys.executable, "-m", "dsustore.cli", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "exit codes" in result.stdout and "pending migrations" in result.stdout


# -- bad input: one line, non-zero, database untouched --------------------------------


def test_syntax_error_in_migration(project):
    """A migration with a syntax error is reported in one line and nothing is written."""
    (project / "migrations" / "0001_broken.py").write_text('revision = "0001"\ndown_revision = None\ndef upgrade(patch:\n')
    before = image(project)
    line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert "0001_broken.py" in line
    assert image(project) == before


def test_missing_revision_in_migration(project):
    """A script without ``revision`` is refused in one line."""
    (project / "migrations" / "0001_norev.py").write_text('"""x"""\ndown_revision = None\ndef upgrade(patch):\n    pass\n')
    before = image(project)
    line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert "revision" in line
    assert image(project) == before


def test_unknown_target(project):
    """Upgrading to a revision no script declares fails cleanly."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    before = image(project)
    line = assert_one_line_error(run(project, "upgrade", "nope"), code=1)
    assert "nope" in line
    assert image(project) == before


def test_missing_database_is_not_created(tmp_path):
    """A missing database file is an error, and the command does not create it."""
    line = assert_one_line_error(run(tmp_path, "scan"), code=1)
    assert "no database at Data.fs" in line
    assert not (tmp_path / "Data.fs").exists()


def test_locked_database(project):
    """A database another process holds open gives exit code 4 and one line."""
    held = FileStorage(str(project / "Data.fs"))
    try:
        line = assert_one_line_error(run(project, "scan"), code=EXIT_LOCKED)
        assert "locked by another process" in line
    finally:
        held.close()


def test_unknown_snapshot(project):
    """Restoring a snapshot that does not exist fails in one line, JSON facts on request."""
    before = image(project)
    line = assert_one_line_error(run(project, "snapshot", "restore", "nope"), code=1)
    assert "no snapshot named 'nope'" in line
    result = run(project, "--json", "snapshot", "restore", "nope")
    assert json.loads(result.stdout)["error"] == "UnknownSnapshotError"
    assert image(project) == before


def test_usage_error_exit_code(project):
    """An unknown command is a usage error (exit 2) in one line."""
    assert_one_line_error(run(project, "frobnicate"), code=2)


def test_progress_reporter_draws_a_bar_on_a_tty_and_lines_elsewhere():
    """On a TTY the line is redrawn with \\r; in a log each report is its own line."""
    import io

    from dsustore import Progress
    from dsustore.cli.progress import ProgressReporter

    tty = io.StringIO()
    reporter = ProgressReporter(tty, tty=True, interval=0)
    reporter(Progress("migrate", scanned=50, migrated=10, total=100, elapsed=1.0))
    reporter.close()
    assert tty.getvalue().startswith("\r[") and "50%" in tty.getvalue() and "ETA 1s" in tty.getvalue()
    log = io.StringIO()
    reporter = ProgressReporter(log, tty=False, interval=0)
    reporter(Progress("migrate", scanned=100, migrated=10, total=100, elapsed=2.0))
    assert log.getvalue() == "migrate: 100/100 scanned, 10 migrated, 50/s, ETA 0s\n"


def test_database_from_pyproject_and_environment(project):
    """Without --db the database comes from DSUSTORE_DB, else from [tool.dsustore] in pyproject.toml."""
    (project / "pyproject.toml").write_text('[tool.dsustore]\ndb = "Data.fs"\nmigrations = "migrations"\n')
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    env.pop("DSUSTORE_DB", None)
    command = [sys.executable, "-m", "dsustore.cli", "--json", "scan"]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    env["DSUSTORE_DB"] = str(project / "Other.fs")
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert "no database at" in result.stderr and "Other.fs" in result.stderr


def test_upgrade_one_transaction_applies_all_in_one_commit_and_names_the_snapshot(project):
    """--one-transaction: every pending migration in one commit; the snapshot taken first is printed."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    (project / "migrations" / "0002_add_active.py").write_text(
        '"""activate users"""\nrevision = "0002"\ndown_revision = "0001"\n\n\n'
        'def upgrade(patch):\n    patch.add_field("shopmodels.User", "active", True)\n')
    result = run(project, "upgrade", "--one-transaction")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("snapshot before-upgrade-0002-") and "(tid) taken first" in result.stdout
    db = ZODB.DB(FileStorage(str(project / "Data.fs"), read_only=True))
    try:
        migrations = [t for t in db.storage.iterator() if t.description.startswith(b"dsustore migration")]
        assert len(migrations) == 1
        with db.transaction() as conn:
            user = conn.root()["users"]["user1"]
            assert user.email == "nobody@example.com" and user.active is True
    finally:
        db.close()


def test_verify_reports_a_reference_to_a_missing_object(db):
    """A record that references an oid no record has is reported with its holder."""
    from io import BytesIO

    from persistent.mapping import PersistentMapping
    from ZODB.Connection import TransactionMetaData
    from ZODB._compat import PersistentPickler, _protocol

    from dsustore import commands

    with db.transaction() as conn:
        conn.root()["holder"] = holder = PersistentMapping()
    missing = b"\0" * 7 + b"\x77"
    out = BytesIO()
    pickler = PersistentPickler(lambda obj: (missing, PersistentMapping) if obj == "ref" else None,
                                out, _protocol)
    pickler.dump(PersistentMapping)
    pickler.dump({"data": {"gone": "ref"}})
    storage = db.storage
    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    storage.store(holder._p_oid, holder._p_serial, out.getvalue(), "", txn)
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)
    report = commands.verify(db)
    assert report["ok"] is False
    assert report["dangling"] == [{"oid": "0x77", "referenced_by": commands._hex(holder._p_oid)}]


# -- operations that would match nothing, or change nothing ---------------------------

MISSPELT = '''\
"""add email to users"""

revision = "0001"
down_revision = None


def upgrade(patch):
    patch.add_field("shopmodels.Usr", "email", "nobody@example.com")
'''


def test_upgrade_of_a_misspelt_class_fails_in_one_line_and_writes_nothing(project):
    """The error names the migration, the operation, the class and the stored class meant;
    nothing is written and nothing recorded as applied."""
    (project / "migrations" / "0001_add_email.py").write_text(MISSPELT)
    before = image(project)
    line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert "migration 0001" in line
    assert "operation add_field(shopmodels.Usr, 'email'" in line
    assert "class shopmodels.Usr" in line and "did you mean shopmodels.User" in line
    facts = json.loads(run(project, "--json", "upgrade").stdout)
    assert facts["error"] == "UnknownClassError" and facts["migration"] == "0001"
    assert facts["suggestions"][0] == "shopmodels.User"
    assert image(project) == before
    assert run(project, "current").stdout.strip() == "(base)"


def test_plan_and_dry_run_show_the_misspelt_class_too(project):
    """plan and upgrade --dry-run refuse the class with the same line as the upgrade."""
    (project / "migrations" / "0001_add_email.py").write_text(MISSPELT)
    before = image(project)
    upgrade_line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert assert_one_line_error(run(project, "plan"), code=1) == upgrade_line
    assert assert_one_line_error(run(project, "upgrade", "--dry-run"), code=1) == upgrade_line
    assert image(project) == before


def test_upgrade_says_what_changed_and_what_already_had_it(project):
    """A second migration adding the same field changes nothing: the output says so, --json too."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    (project / "migrations" / "0002_email_again.py").write_text(
        '"""email again"""\nrevision = "0002"\ndown_revision = "0001"\n\n\n'
        'def upgrade(patch):\n    patch.add_field("shopmodels.User", "email", "other@example.com")\n')
    result = run(project, "upgrade", "0001")
    assert result.returncode == 0, result.stderr
    assert "ran 0001: add email to users (5 changed, 0 already had it, 5 records rewritten)" \
        in result.stdout
    text = run(project, "upgrade", "--dry-run")
    assert "would run 0002: email again (0 changed, 5 already had it, 0 records rewritten)" \
        in text.stdout
    data = json.loads(run(project, "--json", "upgrade").stdout)
    [migration] = data["migrations"]
    assert migration["migrated"] == {}
    assert migration["unchanged"] == {"shopmodels.User": 4, "shopmodels.Admin": 1}
    assert migration["records_rewritten"] == 0


def test_a_rename_onto_a_class_with_instances_needs_merge(project):
    """Renaming Session onto User would merge them: refused in one line naming merge=True."""
    (project / "migrations" / "0001_merge.py").write_text(
        '"""sessions are users"""\nrevision = "0001"\ndown_revision = None\n\n\n'
        'def upgrade(patch):\n    patch.rename_class("shopmodels.Session", "shopmodels.User")\n')
    before = image(project)
    line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert "class shopmodels.User" in line and "merge=True" in line
    assert image(project) == before


# -- a class moved, and the move undone with the new code in place ---------------------

RELEASE_1 = {"models.py": '''\
import persistent


class Product(persistent.Persistent):
    def __init__(self, title):
        self.title = title


class Order(persistent.Persistent):
    def __init__(self, product):
        self.product = product
'''}

RELEASE_2 = {
    "catalog.py": '''\
import persistent


class Product(persistent.Persistent):
    def __init__(self, title):
        self.title = title
''',
    "models.py": '''\
import persistent


class Order(persistent.Persistent):
    def __init__(self, product):
        self.product = product
'''}

MOVE = '''\
"""move Product to the catalog"""

revision = "0001"
down_revision = None


def upgrade(patch):
    patch.rename_class("moveshop.models.Product", "moveshop.catalog.Product")


def downgrade(patch):
    patch.rename_class("moveshop.catalog.Product", "moveshop.models.Product")
'''

POPULATE = '''\
import ZODB
from ZODB.FileStorage import FileStorage
from persistent.mapping import PersistentMapping
from moveshop.models import Order, Product

db = ZODB.DB(FileStorage("Data.fs"))
with db.transaction() as conn:
    products = [Product(f"p{i}") for i in range(3)]
    conn.root()["products"] = PersistentMapping({p.title: p for p in products})
    conn.root()["orders"] = PersistentMapping({f"o{i}": Order(p) for i, p in enumerate(products)})
db.close()
'''


def _release(folder: Path, files: dict[str, str]) -> None:
    package = folder / "moveshop"
    package.mkdir(exist_ok=True)
    for stale in package.glob("*.py"):
        stale.unlink()
    (package / "__init__.py").write_text("")
    for name, source in files.items():
        (package / name).write_text(source)


@pytest.mark.parametrize("re_export", [False, True], ids=["moved", "re-exported"])
def test_a_downgrade_with_the_new_code_writes_the_old_class_name_back(tmp_path, re_export):
    """Release 2 moved Product (leaving, or not, an import of it in its old module); its
    downgrade runs with release 2's code and gives every record and reference the old name."""
    _release(tmp_path, RELEASE_1)
    populated = subprocess.run([sys.executable, "-c", POPULATE], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
    assert populated.returncode == 0, populated.stderr
    assert run(tmp_path, "init").returncode == 0
    (tmp_path / "migrations" / "0001_move.py").write_text(MOVE)
    release_2 = dict(RELEASE_2)
    if re_export:
        release_2["models.py"] = "from moveshop.catalog import Product  # noqa: F401\n" + \
            release_2["models.py"]
    _release(tmp_path, release_2)

    up = run(tmp_path, "upgrade")
    assert up.returncode == 0, up.stderr
    # the products, and the orders and the mapping that reference them
    assert "(3 changed, 0 already had it, 7 records rewritten)" in up.stdout
    down = run(tmp_path, "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert "(3 changed, 0 already had it, 7 records rewritten)" in down.stdout

    counts = json.loads(run(tmp_path, "--json", "scan").stdout)["classes"]
    assert counts["moveshop.models.Product"] == 3 and "moveshop.catalog.Product" not in counts
    db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs"), read_only=True))
    try:
        with db.transaction() as conn:
            for order in conn.root()["orders"].values():
                data, _serial = db.storage.load(order._p_oid)
                assert b"moveshop.models\nProduct\n" in data
                assert b"moveshop.catalog" not in data
    finally:
        db.close()
