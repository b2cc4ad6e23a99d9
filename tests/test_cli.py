"""The real ``dsustore`` console script, run in subprocesses against FileStorage databases."""

from __future__ import annotations

import argparse
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
from dsustore.cli import EXIT_DRIFT, EXIT_LOCKED, EXIT_PARTIAL, EXIT_PENDING, EXIT_VALIDATION

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
    """status --check exits 3 while a migration is pending; once upgrade applied it, nothing is
    pending, and the email it gave every user, which the tests' User does not declare, is drift."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    assert run(project, "status", "--check").returncode == EXIT_PENDING
    result = run(project, "upgrade")
    assert result.returncode == 0, result.stderr
    assert "0001" in result.stdout
    status = run(project, "status", "--check")
    assert status.returncode == EXIT_DRIFT
    assert 'drift: patch.remove_field("shopmodels.User", "email")' in status.stdout
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
    assert 'patch.add_field("shopmodels.User", "email", "nobody@example.com")' in result.stdout
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
    assert "exit codes" in result.stdout and "migrations are pending" in result.stdout
    assert f"{EXIT_PARTIAL}  partial run" in result.stdout and f"{EXIT_DRIFT}  status --check" in result.stdout


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
    """A database another process holds open refuses a write command with exit code 4 and one
    line; a read-only command reads it all the same."""
    held = FileStorage(str(project / "Data.fs"))
    try:
        line = assert_one_line_error(run(project, "stamp", "base"), code=EXIT_LOCKED)
        assert "locked by another process" in line
        assert run(project, "scan").returncode == 0
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


def test_the_eta_is_the_records_left_at_the_rate_so_far_and_never_a_guess():
    """A sequence of Progress values: the ETA is (total - scanned) / (scanned / elapsed); once a
    scan has gone past its total, that total was wrong and no ETA (nor bar) is shown."""
    import io

    from dsustore import Progress
    from dsustore.cli.progress import ProgressReporter, bar

    sequence = [Progress("migrate", scanned=1000, migrated=0, total=4000, elapsed=1.0),
                Progress("migrate", scanned=2000, migrated=0, total=4000, elapsed=4.0),
                Progress("migrate", scanned=5000, migrated=0, total=4000, elapsed=6.0),
                Progress("migrate", scanned=7000, migrated=0, total=7000, elapsed=7.0)]
    assert [p.eta for p in sequence] == [3.0, 4.0, None, 0.0]
    log = io.StringIO()
    reporter = ProgressReporter(log, tty=False, interval=0)
    for progress in sequence:
        reporter(progress)
    assert [line.rsplit(", ", 1)[-1] for line in log.getvalue().splitlines()] == [
        "ETA 3s", "ETA 4s", "ETA ?", "ETA 0s"]
    assert "5,000 scanned" in log.getvalue() and "5,000/4,000" not in log.getvalue()
    assert bar(sequence[2]).strip("[ ]") == "" and bar(sequence[1]).endswith(" 50%")


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


# -- issue 12: fail loud, recover cleanly ------------------------------------------------


def script(revision: str, down: str | None, body: str, undo: str = "pass", message: str = "") -> str:
    """The source of a migration script."""
    return (f'"""{message or "migration " + revision}"""\n\nrevision = {revision!r}\n'
            f"down_revision = {down!r}\n\n\ndef upgrade(patch):\n    {body}\n\n\n"
            f"def downgrade(patch):\n    {undo}\n")


def fork(project: Path) -> None:
    """0001, then two scripts on top of it: a forked history with heads 0002 and 0003."""
    migrations = project / "migrations"
    (migrations / "0001_add_email.py").write_text(MIGRATION)
    (migrations / "0002_paid.py").write_text(
        script("0002", "0001", 'patch.add_field("shopmodels.Order", "paid", False)'))
    (migrations / "0003_sent.py").write_text(
        script("0003", "0001", 'patch.add_field("shopmodels.Order", "sent", False)'))


def test_a_plain_upgrade_refuses_a_forked_history_and_names_the_way_on(project):
    """upgrade (no target) on two heads: exit 1, one line naming both heads, merge and
    upgrade heads; --json carries the heads; nothing is written."""
    fork(project)
    before = image(project)
    line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert "0002 (0002_paid.py), 0003 (0003_sent.py)" in line
    assert "`dsustore merge -m MESSAGE`" in line and "`dsustore upgrade heads`" in line
    data = json.loads(run(project, "upgrade", "--json").stdout)
    assert (data["error"], data["heads"], data["exit_code"]) == ("MultipleHeadsError", ["0002", "0003"], 1)
    assert image(project) == before
    result = run(project, "upgrade", "heads")
    assert result.returncode == 0, result.stderr
    assert run(project, "current").stdout.split() == ["0002,", "0003"]


def test_status_shows_a_fork(project):
    """status says the scripts forked, naming the heads, in text and JSON."""
    fork(project)
    text = run(project, "status").stdout
    assert ("forked: the scripts have 2 heads, 0002, 0003; join them with `dsustore merge -m "
            "MESSAGE`") in text
    data = json.loads(run(project, "--json", "status").stdout)
    assert data["forked"] is True and data["heads"] == ["0002", "0003"]
    assert [p["revision"] for p in data["pending"]] == ["0001", "0002", "0003"]


def test_merge_writes_a_revision_joining_the_heads(project):
    """merge -m writes a script whose down_revision is both heads; then a plain upgrade runs."""
    fork(project)
    result = run(project, "merge", "-m", "join paid and sent")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote ") and "(revision 0004 merging 0002, 0003)" in result.stdout
    assert run(project, "heads").stdout.split() == ["0004"]
    assert 'down_revision = ("0002", "0003")' in (
        project / "migrations" / "0004_join_paid_and_sent.py").read_text()
    assert json.loads(run(project, "--json", "status").stdout)["forked"] is False
    result = run(project, "upgrade")
    assert result.returncode == 0, result.stderr
    assert run(project, "current").stdout.strip() == "0004"


def test_merge_refuses_a_single_head(project):
    """Nothing to merge is an error in one line, and no script is written."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    line = assert_one_line_error(run(project, "merge", "-m", "nothing"), code=1)
    assert "nothing to merge" in line
    assert sorted(p.name for p in (project / "migrations").glob("*.py")) == ["0001_add_email.py"]


def five_migrations(project: Path, *, failing_downgrade: str) -> None:
    """0001-0005, each adding a field to orders; ``failing_downgrade``'s downgrade raises."""
    for n in range(1, 6):
        rev = f"000{n}"
        undo = (f'raise RuntimeError("cannot undo {rev}")' if rev == failing_downgrade
                else f'patch.remove_field("shopmodels.Order", "f{n}")')
        (project / "migrations" / f"{rev}_f{n}.py").write_text(
            script(rev, f"000{n - 1}" if n > 1 else None, f'patch.add_field("shopmodels.Order", "f{n}", {n})',
                   undo))


def test_a_partial_run_says_what_committed_failed_and_is_pending(project):
    """downgrade base commits 0005-0003, then 0002 fails: exit 6, one line naming all three
    groups; --json has committed, failed, pending and the cause's facts."""
    five_migrations(project, failing_downgrade="0002")
    assert run(project, "upgrade").returncode == 0
    line = assert_one_line_error(run(project, "downgrade", "base"), code=EXIT_PARTIAL)
    assert "downgrade stopped part-way: 0005, 0004, 0003 committed" in line
    assert "then 0002 failed: RuntimeError: cannot undo 0002; not run: 0001" in line
    assert "the database is at 0002" in line and "dsustore snapshot restore before-downgrade-" in line
    assert run(project, "current").stdout.strip() == "0002"

    # no snapshots this time: runs in the same second would name theirs alike
    assert run(project, "upgrade", "--no-snapshot").returncode == 0
    result = run(project, "--json", "downgrade", "base", "--no-snapshot")
    assert result.returncode == EXIT_PARTIAL, result.stderr
    data = json.loads(result.stdout)
    assert (data["error"], data["exit_code"], data["direction"]) == ("PartialRunError", EXIT_PARTIAL, "downgrade")
    assert (data["committed"], data["failed"], data["pending"]) == (["0005", "0004", "0003"], "0002", ["0001"])
    assert data["cause"]["error"] == "MigrationError" and data["cause"]["migration"] == "0002"


def test_a_failing_first_migration_is_not_a_partial_run(project):
    """When nothing of the run committed, the failure is reported as itself (exit 1)."""
    five_migrations(project, failing_downgrade="0005")
    assert run(project, "upgrade").returncode == 0
    data = json.loads(run(project, "--json", "downgrade", "base").stdout)
    assert (data["error"], data["exit_code"], data["migration"]) == ("MigrationError", 1, "0005")


READ_ONLY_COMMANDS = [["current"], ["history"], ["heads"], ["status"], ["plan"], ["scan"], ["verify"],
                      ["snapshot", "list"]]


def damage_the_tail(project: Path, cut: int = 100) -> tuple[int, int]:
    """Cut the last ``cut`` bytes of the project's Data.fs, as an interrupted write would;
    the file's new size, and where its last whole transaction ends."""
    path = project / "Data.fs"
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size - cut)
    storage = FileStorage(str(path), read_only=True)
    end = storage.getSize()
    storage.close()
    return path.stat().st_size, end


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_read_only_commands_never_change_a_file(project):
    """On a Data.fs with a damaged tail and no index, every read-only command succeeds and
    leaves every file byte for byte: nothing cut, no .tr0, .index, .lock or .tmp."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    assert run(project, "upgrade").returncode == 0
    damage_the_tail(project)
    for leftover in ("Data.fs.index", "Data.fs.lock", "Data.fs.tmp"):
        (project / leftover).unlink()
    before = folder_bytes(project)
    for command in READ_ONLY_COMMANDS:
        result = run(project, *command)
        assert result.returncode == 0, (command, result.stderr)
        assert folder_bytes(project) == before, command
    assert "are not a whole transaction" in run(project, "current").stderr


def test_read_only_commands_on_an_empty_file_write_no_header(tmp_path):
    """An empty Data.fs reads as an empty database and stays empty."""
    (tmp_path / "migrations").mkdir()
    (tmp_path / "Data.fs").write_bytes(b"")
    for command in READ_ONLY_COMMANDS:
        assert run(tmp_path, *command).returncode == 0, command
    assert run(tmp_path, "current").stdout.strip() == "(base)"
    assert folder_bytes(tmp_path) == {"Data.fs": b""}


def test_a_write_command_refuses_a_damaged_tail_unless_asked_to_repair(project):
    """upgrade on a damaged Data.fs says what would be cut, from where, and how to cut it;
    the file stays as it was. --repair lets ZODB cut it (keeping .tr0) and runs."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    size, end = damage_the_tail(project)
    before = folder_bytes(project)
    line = assert_one_line_error(run(project, "upgrade"), code=1)
    assert f"the {size - end:,} bytes at the end of Data.fs, from position {end:,}" in line
    assert "--repair" in line
    data = json.loads(run(project, "upgrade", "--json").stdout)
    assert (data["error"], data["path"], data["position"], data["cut"]) == (
        "DatabaseDamagedError", "Data.fs", end, size - end)
    assert folder_bytes(project) == before
    result = run(project, "upgrade", "--repair")
    assert result.returncode == 0, result.stderr
    assert (project / "Data.fs.tr0").stat().st_size == size - end
    assert run(project, "current").stdout.strip() == "0001"


def test_a_write_command_refuses_a_database_that_does_not_exist(project):
    """A typo in --db is an error naming the path and the commands that create a database;
    no folder and no database is made. upgrade --create makes one on purpose."""
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    typo = project / "dta" / "Data.fs"
    line = assert_one_line_error(run(project, "upgrade", db=str(typo)), code=1)
    assert f"no database at {typo}" in line and "`dsustore init`" in line and "upgrade --create" in line
    data = json.loads(run(project, "--json", "upgrade", db=str(typo)).stdout)
    assert (data["error"], data["path"]) == ("DatabaseMissingError", str(typo))
    assert not (project / "dta").exists()
    result = run(project, "upgrade", "--create", db=str(typo))
    assert result.returncode == 0, result.stderr
    assert typo.exists()


MODELS = '''\
import persistent


class Customer(persistent.Persistent):
    def __init__(self, name):
        self.name = name
'''


@pytest.fixture
def own_project(tmp_path: Path) -> Path:
    """A project whose classes live in its own src/ folder (not on PYTHONPATH), with one
    migration applied: Data.fs holds 3 customers."""
    (tmp_path / "src" / "crm").mkdir(parents=True)
    (tmp_path / "src" / "crm" / "__init__.py").write_text("")
    (tmp_path / "src" / "crm" / "models.py").write_text(MODELS)
    (tmp_path / "pyproject.toml").write_text('[tool.dsustore]\ndb = "Data.fs"\nsys_path = "src"\n')
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_customers.py").write_text(script(
        "0001", None, 'from crm.models import Customer\n    root = patch.new_ns.root\n'
        '    root["customers"] = [Customer(n) for n in ("ann", "bob", "cyd")]'))
    result = run(tmp_path, "upgrade", "--create")
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_sys_path_from_pyproject_makes_the_project_code_import(own_project):
    """With [tool.dsustore] sys_path the project's classes import: verify is clean, no drift."""
    result = run(own_project, "--json", "verify")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["classes"]["crm.models.Customer"] == 3
    status = json.loads(run(own_project, "--json", "status").stdout)
    assert status["drift"] == [] and status["ok"] is True


def test_the_default_sys_path_is_the_project_folder(own_project):
    """Without sys_path, the folder of pyproject.toml is on sys.path (for the installed command too)."""
    (own_project / "src" / "crm").rename(own_project / "crm")
    (own_project / "pyproject.toml").write_text('[tool.dsustore]\ndb = "Data.fs"\n')
    exe = Path(sys.executable).parent / "dsustore"
    result = run(own_project, "verify", executable=[str(exe)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_classes_that_do_not_import_are_reported_once_with_their_cause(own_project):
    """sys_path pointing elsewhere: verify gives one line per class with a count and the
    ImportError, status one line for the cause, and autogenerate drafts nothing."""
    (own_project / "pyproject.toml").write_text('[tool.dsustore]\ndb = "Data.fs"\nsys_path = "lib"\n')
    result = run(own_project, "verify")
    assert result.returncode == EXIT_VALIDATION
    broken = [line for line in result.stdout.splitlines() if line.startswith("broken:")]
    assert broken == [line for line in broken if "crm.models.Customer" in line] and len(broken) == 1
    assert broken[0].startswith("broken: 3 objects of class crm.models.Customer do not import: "
                                "ModuleNotFoundError: No module named 'crm'")
    assert "[tool.dsustore] sys_path" in result.stdout
    data = json.loads(run(own_project, "--json", "verify").stdout)
    assert [(b["class"], b["count"], b["cause"]) for b in data["broken"]] == [
        ("crm.models.Customer", 3, "ModuleNotFoundError: No module named 'crm'")]
    status = run(own_project, "status").stdout
    assert ("does not import: 1 stored class (crm.models.Customer): ModuleNotFoundError: "
            "No module named 'crm'") in status
    assert "class_missing" not in status
    line = assert_one_line_error(run(own_project, "revision", "-m", "drift", "--autogenerate"), code=1)
    assert "cannot draft a migration" in line and "No module named 'crm'" in line
    assert [p.name for p in (own_project / "migrations").glob("*.py")] == ["0001_customers.py"]


def test_status_check_fails_on_drift_and_on_edited_scripts(own_project):
    """status --check: 0 when in line, 7 with the reason for schema drift or an edited script,
    3 while a migration is pending."""
    assert run(own_project, "status", "--check").returncode == 0
    models = own_project / "src" / "crm" / "models.py"
    models.write_text(MODELS + "        self.email = None\n")
    result = run(own_project, "status", "--check")
    assert result.returncode == EXIT_DRIFT
    assert 'drift: patch.add_field("crm.models.Customer", "email", None)  # TODO value' in result.stdout
    assert "not in line with the code: schema drift in 1 class(es) without a migration" in result.stdout
    models.write_text(MODELS)
    first = own_project / "migrations" / "0001_customers.py"
    first.write_text(first.read_text().replace('"cyd"', '"dee"'))
    result = run(own_project, "--json", "status", "--check")
    assert result.returncode == EXIT_DRIFT
    assert json.loads(result.stdout)["problems"] == ["applied script(s) edited since: 0001"]
    (own_project / "migrations" / "0002_more.py").write_text(script("0002", "0001", "pass"))
    assert run(own_project, "status", "--check").returncode == EXIT_PENDING


def test_global_options_go_before_or_after_the_command(project):
    """--json, --db, -q and -v work after the subcommand as well as before it."""
    assert json.loads(run(project, "current", "--json").stdout) == {"current": []}
    assert json.loads(run(project, "snapshot", "list", "--json").stdout) == []
    moved = project / "moved"
    moved.mkdir()
    (project / "Data.fs").rename(moved / "Data.fs")
    result = run(project, "scan", "--db", str(moved / "Data.fs"), db="nowhere.fs")
    assert result.returncode == 0, result.stderr
    assert run(project, "current", "-q", db=str(moved / "Data.fs")).stdout == ""
    assert "Traceback" in run(project, "snapshot", "restore", "nope", "-v",
                              db=str(moved / "Data.fs")).stderr


def test_usage_errors_are_json_under_json(project):
    """A usage error under --json is one JSON object on stdout with exit code 2, wherever
    --json stands; the one-line message is on stderr as always."""
    for args in (["--json", "frobnicate"], ["status", "--bogus", "--json"], ["downgrade", "--json"],
                 ["snapshot", "--json"]):
        result = run(project, *args)
        assert result.returncode == 2, args
        data = json.loads(result.stdout)
        assert (data["ok"], data["exit_code"], data["error"]) == (False, 2, "UsageError"), args
        assert data["message"] and data["usage"].startswith("usage: dsustore")
        assert_one_line_error(result, code=2)
    data = json.loads(run(project, "--json", "upgrade", "--help").stdout)
    assert data["ok"] is True and "Apply pending migrations." in data["help"]


def _commands(parser, prefix=()):
    """Every (sub)command's parser, with its words."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _commands(sub, (*prefix, name))


def test_every_command_describes_itself_and_its_arguments():
    """Each command's --help has a description, and every argument and option a help text."""
    from dsustore.cli import build_parser

    found = dict(_commands(build_parser()))
    assert {("merge",), ("snapshot", "list"), ("upgrade",), ("status",)} <= found.keys()
    for words, parser in found.items():
        assert parser.description and len(parser.description) > 20, words
        for action in parser._actions:
            assert action.help, (words, action.dest)
    result = subprocess.run([sys.executable, "-m", "dsustore.cli", "snapshot", "restore", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert "Bring the database back to a snapshot." in result.stdout
    assert "the snapshot to restore" in result.stdout and "--json" in result.stdout


@pytest.mark.parametrize("storage_kind", ["zeo", "relstorage-hp", "relstorage-hf"])
def test_read_only_commands_read_a_server_database_read_only(backend, tmp_path):
    """Over ZEO and RelStorage the read-only commands open a read-only client and work as on
    a file, and write nothing: the last transaction stays the same."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    db.close()
    project = tmp_path / "project"
    project.mkdir()
    assert run(project, "init", db=backend.uri).returncode == 0
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    assert run(project, "upgrade", db=backend.uri).returncode == 0
    db = backend.open()
    last = db.lastTransaction()
    db.close()
    for command in READ_ONLY_COMMANDS:
        result = run(project, *command, db=backend.uri)
        assert result.returncode == 0, (command, result.stderr)
    assert run(project, "current", db=backend.uri).stdout.strip() == "0001"
    db = backend.open()
    try:
        assert db.lastTransaction() == last
    finally:
        db.close()


# -- the migration lock and snapshot retention, as a user meets them ---------------------


HOLD_ELSEWHERE = """
import sys, time
from dsustore import open_db
from dsustore.engine.bookkeeping import bookkeeping
from dsustore.storage.transactions import mark

db = open_db(sys.argv[1])
with db.transaction() as conn:
    bookkeeping(conn.root(), create=True).lease.holder = {
        "owner": "build-7:4242:abc", "host": "build-7", "pid": 4242,
        "process_space": "another-machine", "command": "dsustore upgrade",
        "acquired": time.time(), "expires": time.time() + float(sys.argv[2])}
    mark(conn.transaction_manager.get(), "dsustore lock taken", lock="build-7:4242:abc")
db.close()
"""


def hold_elsewhere(cwd: Path, uri: str, seconds: float) -> None:
    """Make the lock look held by a migrator on another machine for ``seconds``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", HOLD_ELSEWHERE, uri, str(seconds)], cwd=cwd, env=env,
                   check=True, timeout=60)


@pytest.mark.parametrize("storage_kind", ["file", "zeo", "relstorage-hp", "relstorage-hf"])
def test_a_held_lock_is_shown_refused_waited_for_and_broken(backend, tmp_path):
    """status shows the holder; upgrade refuses naming it and the way on; unlock breaks it;
    --lock-wait waits it out -- on FileStorage, ZEO and RelStorage."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    db.close()
    project = tmp_path / "project"
    project.mkdir()
    assert run(project, "init", db=backend.uri).returncode == 0
    (project / "migrations" / "0001_add_email.py").write_text(MIGRATION)
    hold_elsewhere(project, backend.uri, 600)

    status = run(project, "status", db=backend.uri)
    assert status.returncode == 0, status.stderr
    assert "locked: pid 4242 on host build-7 (dsustore upgrade), lease expires in" in status.stdout
    facts = json.loads(run(project, "status", "--json", db=backend.uri).stdout)
    assert facts["lock"]["host"] == "build-7" and facts["lock"]["alive"] is None

    refused = run(project, "upgrade", db=backend.uri)
    line = assert_one_line_error(refused, code=EXIT_LOCKED)
    assert "pid 4242 on host build-7" in line and "--lock-wait" in line and "dsustore unlock" in line
    as_json = json.loads(run(project, "upgrade", "--json", db=backend.uri).stdout)
    assert as_json["error"] == "LockHeldError" and as_json["holder"]["pid"] == 4242

    broken = run(project, "unlock", db=backend.uri)
    assert broken.returncode == 0, broken.stderr
    assert "broke the migration lock held by pid 4242 on host build-7" in broken.stdout
    assert run(project, "unlock", db=backend.uri).stdout.strip() == "the migration lock was not held"

    hold_elsewhere(project, backend.uri, 1.5)
    waited = run(project, "upgrade", "--lock-wait", "30", db=backend.uri)
    assert waited.returncode == 0, waited.stderr
    assert "ran 0001" in waited.stdout
    again = run(project, "upgrade", "--lock-wait", "30", db=backend.uri)
    assert "nothing to do" in again.stdout
    assert "locked:" not in run(project, "status", db=backend.uri).stdout


def test_snapshot_retention_from_pyproject_and_by_hand(project):
    """keep_snapshots keeps that many automatic snapshots after each run; snapshot prune
    forgets the rest by hand, named ones only with --all."""
    (project / "pyproject.toml").write_text('[tool.dsustore]\ndb = "Data.fs"\nkeep_snapshots = 1\n')
    assert run(project, "snapshot", "create", "mine").returncode == 0
    migrations = project / "migrations"
    (migrations / "0001_add_email.py").write_text(MIGRATION)
    for revision, field in (("0002", "nick"), ("0003", "age")):
        (migrations / f"{revision}_add_{field}.py").write_text(
            f'"""add {field}"""\n\nrevision = "{revision}"\n'
            f'down_revision = "{int(revision) - 1:04d}"\n\n\ndef upgrade(patch):\n'
            f'    patch.add_field("shopmodels.User", "{field}", None)\n')
        assert run(project, "upgrade", revision).returncode == 0
    listed = run(project, "snapshot", "list").stdout.splitlines()
    assert [line.split()[0] for line in listed][0] == "mine"
    assert len(listed) == 2 and "auto" in listed[1] and "before-upgrade-0003-" in listed[1]

    pruned = run(project, "snapshot", "prune", "--keep", "0")
    assert pruned.returncode == 0, pruned.stderr
    assert "forgot 1 snapshot" in pruned.stdout and "dsustore pack" in pruned.stdout
    everything = json.loads(run(project, "snapshot", "prune", "--all", "--json").stdout)
    assert [s["name"] for s in everything["pruned"]] == ["mine"] and everything["kept"] == []


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
