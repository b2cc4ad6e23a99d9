"""Snapshots: taking, restoring, refusing over application writes, packing, exports."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest
import shopmodels
import ZODB
from conftest import keeps_history, last_transaction, storage_image
from ZODB.FileStorage import FileStorage
from ZODB.utils import tid_repr

from dsustore import DSUError, MigrationError, Patch, upgrade
from dsustore.engine.bookkeeping import bookkeeping
from dsustore.errors import SnapshotConflictError, SnapshotError, UnknownSnapshotError
from dsustore.recovery import (
    delete_snapshot,
    pack,
    prune_snapshots,
    restore,
    snapshot,
    snapshots,
)


def _app_image(db) -> dict:
    """Current records of everything but dsustore's bookkeeping objects."""
    with db.transaction() as conn:
        book = bookkeeping(conn.root())
        skip = set()
        if book is not None:
            skip = {book._p_oid, book.snapshots._p_oid, book.applied._p_oid}
    return {oid: rec for oid, rec in storage_image(db).items() if oid not in skip}


def _user_fields(db) -> dict[str, dict]:
    with db.transaction() as conn:
        users = dict(conn.root()["users"].items())
        for user in users.values():
            user._p_activate()
        return {name: dict(vars(user)) for name, user in users.items()}


def test_restore_brings_back_every_object_in_one_new_transaction(shop_db):
    """A restore after a patch gives each object its snapshot state, in one new transaction.

    Where the storage keeps history the snapshot is a transaction id; on a history-free
    storage it is an export, which cannot tell application writes apart (None).
    """
    history = keeps_history(shop_db)
    before_fields = _user_fields(shop_db)
    snap = snapshot(shop_db, "start")
    before_image = _app_image(shop_db)
    with Patch(shop_db) as patch:
        patch.add_field(shopmodels.User, "email", "x@example.com")
    assert all("email" in f for f in _user_fields(shop_db).values())
    last = last_transaction(shop_db)

    report = restore(shop_db, "start")

    assert snap.kind == report.kind == ("tid" if history else "export")
    assert report.rewritten == 5
    assert report.application_transactions == (0 if history else None)
    assert last_transaction(shop_db) > last
    assert report.tid_after == tid_repr(last_transaction(shop_db))
    assert _user_fields(shop_db) == before_fields
    assert {oid: data for oid, (_tid, data) in _app_image(shop_db).items()} == \
        {oid: data for oid, (_tid, data) in before_image.items()}


def test_restore_keeps_every_snapshot_and_can_be_undone(shop_db):
    """The snapshot list survives a restore, and the automatic safety snapshot undoes it."""
    snapshot(shop_db, "start")
    with Patch(shop_db) as patch:
        patch.add_field(shopmodels.User, "email", "x@example.com")
    snapshot(shop_db, "after")
    report = restore(shop_db, "start")
    names = [s.name for s in snapshots(shop_db)]
    assert names == ["start", "after", "before-restore-start"]
    assert report.safety_snapshot == "before-restore-start"

    restore(shop_db, "before-restore-start")
    assert all(f["email"] == "x@example.com" for f in _user_fields(shop_db).values())


def test_restore_refuses_over_application_writes_naming_counts(shop_db, unchanged):
    """Application transactions after the snapshot stop a restore unless it is forced.

    A history-free storage has no transaction log to tell them by: restoring its
    export brings the snapshot back over them and says it could not tell.
    """
    snapshot(shop_db, "start")
    with shop_db.transaction() as conn:
        conn.root()["users"]["user1"].password = "changed"
    with shop_db.transaction() as conn:
        conn.root()["users"]["user2"].password = "changed too"
    if not keeps_history(shop_db):
        report = restore(shop_db, "start")
        assert report.kind == "export" and report.application_transactions is None
        assert report.transactions_since == 2 and report.rewritten == 2
        assert _user_fields(shop_db)["user2"]["password"] == "pw2"
        return
    state = unchanged(shop_db)
    with pytest.raises(SnapshotConflictError) as caught:
        restore(shop_db, "start")
    assert caught.value.transactions == 2
    assert caught.value.objects == 2
    assert "2 application transaction(s)" in str(caught.value)
    state.check()

    report = restore(shop_db, "start", force=True)
    assert report.application_transactions == 2
    assert _user_fields(shop_db)["user1"]["password"] == "pw1"


def test_restore_rewrites_only_what_changed_since(db):
    """Restore cost follows the changes: a few changed objects among many are all it rewrites."""
    with db.transaction() as conn:
        shopmodels.populate(conn.root(), users=300)
        conn.root()["notes"] = [shopmodels.Note(f"n{i}") for i in range(200)]
    total = len(storage_image(db))
    snapshot(db, "start")
    with Patch(db) as patch:
        patch.add_field(shopmodels.Product, "stock", 0)

    report = restore(db, "start")

    assert total > 500
    assert report.rewritten == 3
    assert len(report.rewritten_oids) == 3


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_a_restore_over_zeo_reads_what_changed_in_bulk(db, monkeypatch):
    """Over ZEO a restore lists what changed since the snapshot from the server's list of
    recent changes and loads the states then and now in batches of requests in flight:
    it waits for the server a few times, not once or twice per object it rewrites, and
    brings back every object as it was (objects created since are counted and left)."""
    import dsustore.storage.zeo as zeo

    monkeypatch.setattr(zeo, "BATCH", 16)  # many batches, several in flight at once
    with db.transaction() as conn:
        shopmodels.populate(conn.root(), users=200)
    snapshot(db, "start")
    before_fields = _user_fields(db)
    before_image = _app_image(db)
    with Patch(db) as patch:
        patch.add_field(shopmodels.User, "email", "x@example.com")
    with db.transaction() as conn:
        conn.root()["users"]["late"] = shopmodels.User("late")
    calls: list[str] = []
    call = db.storage._call
    monkeypatch.setattr(db.storage, "_call", lambda name, *args, **kw: calls.append(name)
                        or call(name, *args, **kw))
    load_before = db.storage.loadBefore  # one object, from the cache or the server
    monkeypatch.setattr(db.storage, "loadBefore", lambda oid, tid: calls.append("loadBefore")
                        or load_before(oid, tid))

    report = restore(db, "start", force=True)

    assert report.rewritten == 201 and report.created_since == 1  # users, and their container
    assert report.application_transactions == 1
    assert "iterator_record_next" in calls  # the application's transaction, record by record
    assert len(calls) < 60
    assert _user_fields(db) == before_fields
    after = _app_image(db)
    assert len(after) == len(before_image) + 1  # the user created since, now unreachable
    assert {oid: after[oid][1] for oid in before_image} == \
        {oid: data for oid, (_tid, data) in before_image.items()}


def test_objects_created_since_are_counted_and_left(shop_db):
    """Objects created after the snapshot become unreachable and are reported."""
    snapshot(shop_db, "start")
    with Patch(shop_db) as patch:
        patch.add_field(shopmodels.User, "email", "x")
    with shop_db.transaction() as conn:
        conn.root()["extra"] = shopmodels.Note("new")
    report = restore(shop_db, "start", force=True)
    assert report.created_since == 1
    with shop_db.transaction() as conn:
        assert "extra" not in conn.root()


def test_restore_brings_back_applied_bookkeeping(shop_db):
    """Bookkeeping other than the snapshot list returns to its snapshot-time state."""
    snapshot(shop_db, "start")
    with shop_db.transaction() as conn:
        book = bookkeeping(conn.root())
        book.applied["0001"] = {"revision": "0001"}
        conn.transaction_manager.get().setExtendedInfo("dsustore", {"test": True})
    restore(shop_db, "start")
    with shop_db.transaction() as conn:
        assert list(bookkeeping(conn.root()).applied.keys()) == []


def test_pack_keeps_what_the_oldest_snapshot_needs(file_db):
    """After a pack the snapshot still restores, and the pack says what held it back."""
    with file_db.transaction() as conn:
        shopmodels.populate(conn.root())
    before = _user_fields(file_db)
    snapshot(file_db, "start")
    for value in ("a", "b"):
        with Patch(file_db) as patch:
            patch.add_field(shopmodels.User, "email", value, keep_existing=False)

    report = pack(file_db)

    assert report.limited_by == "start"
    assert "start" in report.message
    restore(file_db, "start")
    assert _user_fields(file_db) == before


def test_pack_without_snapshots_is_not_limited(file_db):
    """With no snapshot the pack goes to the requested time."""
    with file_db.transaction() as conn:
        shopmodels.populate(conn.root())
    assert pack(file_db).limited_by is None


def test_delete_is_explicit_and_unknown_names_fail(shop_db):
    """Snapshots stay until deleted; deleting or restoring an unknown name raises."""
    snapshot(shop_db, "one")
    snapshot(shop_db, "two")
    delete_snapshot(shop_db, "one")
    assert [s.name for s in snapshots(shop_db)] == ["two"]
    with pytest.raises(UnknownSnapshotError):
        delete_snapshot(shop_db, "one")
    with pytest.raises(UnknownSnapshotError):
        restore(shop_db, "one")


def test_duplicate_snapshot_name_is_refused(shop_db):
    """A name is taken once."""
    snapshot(shop_db, "one")
    with pytest.raises(Exception, match="already exists"):
        snapshot(shop_db, "one")


def test_export_snapshot_round_trip(file_db, tmp_path):
    """An export-kind snapshot writes a file and restoring it brings the root's contents back."""
    with file_db.transaction() as conn:
        shopmodels.populate(conn.root())
    before = _user_fields(file_db)
    snap = snapshot(file_db, "exported", kind="export", directory=tmp_path / "exports")
    assert snap.kind == "export" and snap.path and (tmp_path / "exports" / "exported.zexp").exists()
    with Patch(file_db) as patch:
        patch.add_field(shopmodels.User, "email", "x")
    with file_db.transaction() as conn:
        conn.root()["extra"] = 1
    with pytest.raises(SnapshotConflictError):
        restore(file_db, "exported")  # the log shows the application's write

    report = restore(file_db, "exported", force=True)

    assert report.kind == "export"
    assert _user_fields(file_db) == before
    with file_db.transaction() as conn:
        assert "extra" not in conn.root()
    assert [s.name for s in snapshots(file_db)] == ["exported", "before-restore-exported"]
    delete_snapshot(file_db, "exported")
    assert not (tmp_path / "exports" / "exported.zexp").exists()


# -- automatic snapshots, retention, and what a kill leaves ---------------------------


def _migration(folder: Path, revision: str, down: str | None, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{revision}_step.py").write_text(
        f'"""step {revision}"""\n\nrevision = {revision!r}\ndown_revision = {down!r}\n\n\n'
        f"def upgrade(patch):\n    {body}\n")


def test_failed_attempts_show_their_own_error_and_leave_no_snapshot(shop_db, tmp_path):
    """Rerunning a failing upgrade within the same second fails with the real error each
    time, and no attempt leaves a snapshot behind."""
    folder = tmp_path / "migrations"
    _migration(folder, "0001", None, 'raise ValueError("bug in the script")')
    for _attempt in range(3):
        with pytest.raises(MigrationError, match="bug in the script"):
            upgrade(shop_db, folder)
    assert snapshots(shop_db) == []


def test_back_to_back_runs_take_snapshots_under_distinct_names(shop_db, tmp_path):
    """Automatic snapshot names are unique however fast runs follow each other."""
    folder = tmp_path / "migrations"
    _migration(folder, "0001", None, 'patch.add_field("shopmodels.User", "email", "e")')
    taken = []
    for _round in range(3):
        taken.append(upgrade(shop_db, folder).snapshot.name)
        taken.append(restore(shop_db, taken[-1]).safety_snapshot)  # undo it, to run it again
    assert len(set(taken)) == len(taken) == 6
    assert all(s.auto for s in snapshots(shop_db))


def test_a_partial_run_keeps_its_snapshot_to_undo_what_committed(shop_db, tmp_path):
    """When some migrations committed before one failed, the snapshot is the way back."""
    folder = tmp_path / "migrations"
    _migration(folder, "0001", None, 'patch.add_field("shopmodels.User", "email", "e")')
    _migration(folder, "0002", "0001", 'raise ValueError("bug in 0002")')
    with pytest.raises(DSUError):
        upgrade(shop_db, folder)
    (kept,) = snapshots(shop_db)
    assert kept.auto and kept.name.startswith("before-upgrade-0002-")


def test_retention_keeps_the_newest_automatic_snapshots_and_named_ones(shop_db, tmp_path):
    """keep_snapshots keeps that many of dsustore's own snapshots; named ones stay."""
    snapshot(shop_db, "mine")
    folder = tmp_path / "migrations"
    for number in range(1, 5):
        revision, down = f"{number:04d}", (f"{number - 1:04d}" if number > 1 else None)
        _migration(folder, revision, down, f'patch.add_field("shopmodels.User", "f{number}", 1)')
        upgrade(shop_db, folder, keep_snapshots=2)
    names = [s.name for s in snapshots(shop_db)]
    assert names[0] == "mine"
    assert [n.split("-")[2] for n in names[1:]] == ["0003", "0004"]


def test_prune_forgets_the_oldest_and_can_include_named_ones(shop_db):
    """prune_snapshots keeps the newest N automatic snapshots, or all kinds when asked."""
    for name in ("a", "b"):
        snapshot(shop_db, name)
    for _ in range(3):
        snapshot(shop_db, auto=True)
    gone = prune_snapshots(shop_db, 1)
    assert len(gone) == 2 and all(s.auto for s in gone)
    assert [s.name for s in snapshots(shop_db)][:2] == ["a", "b"]
    gone = prune_snapshots(shop_db, 1, include_named=True)
    assert [s.name for s in gone] == ["a", "b"]
    assert len(snapshots(shop_db)) == 1


def test_a_removed_secret_is_gone_from_the_file_after_prune_and_pack(file_db, tmp_path):
    """The recipe the README gives: a removed field stays readable in Data.fs while a snapshot
    keeps the state that had it; prune the snapshots, pack, and its bytes are gone."""
    secret = "plaintext-password-0123456789"
    with file_db.transaction() as conn:
        shopmodels.populate(conn.root())
        conn.root()["users"]["user1"].password = secret
    folder = tmp_path / "migrations"
    _migration(folder, "0001", None, 'patch.remove_field("shopmodels.User", "password")')
    upgrade(file_db, folder)
    data = Path(file_db.storage.getName())
    assert pack(file_db).limited_by is not None
    assert secret.encode() in data.read_bytes()  # the snapshot before the upgrade keeps it
    prune_snapshots(file_db, 0)
    assert pack(file_db).limited_by is None
    assert secret.encode() not in data.read_bytes()
    Path(f"{data}.old").unlink(missing_ok=True)  # FileStorage's copy of the file before the pack


def test_a_half_made_snapshot_of_an_older_release_is_named_and_pruned(shop_db):
    """A record an older release left without its tid (killed between its two commits) is
    refused by restore with the command to run, ignored by pack, and pruned."""
    with shop_db.transaction() as conn:
        bookkeeping(conn.root(), create=True).snapshots["half"] = {
            "name": "half", "kind": "tid", "tid": "", "created": "2026-01-01T00:00:00", "note": ""}
    (half,) = snapshots(shop_db)
    assert not half.complete
    with pytest.raises(SnapshotError, match="dsustore snapshot delete half"):
        restore(shop_db, "half")
    if keeps_history(shop_db):
        pack(shop_db)  # no ValueError about the empty tid
    assert [s.name for s in prune_snapshots(shop_db, 5)] == ["half"]


KILLED_SNAPSHOT = textwrap.dedent("""
    import os, signal, sys
    import ZODB
    from ZODB.FileStorage import FileStorage
    from dsustore import snapshot

    path, point = sys.argv[1], sys.argv[2]
    commits = []

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class DyingStorage(FileStorage):
        def tpc_vote(self, transaction):
            result = super().tpc_vote(transaction)
            if point == "after-vote" and b"snapshot" in transaction.description:
                die()
            return result

        def tpc_finish(self, transaction, f=None):
            if point == "before-finish" and b"snapshot" in transaction.description:
                die()
            result = super().tpc_finish(transaction, f)
            commits.append(transaction.description)
            if point == "after-bookkeeping" and b"bookkeeping" in transaction.description:
                die()
            return result

    db = ZODB.DB(DyingStorage(path))
    snapshot(db, "killed")
    if point == "after-commit":
        die()
    db.close()
""")


@pytest.mark.parametrize("point", ["after-bookkeeping", "after-vote", "before-finish",
                                   "after-commit"])
def test_a_kill_at_any_point_of_a_snapshot_leaves_none_or_a_whole_one(tmp_path, point):
    """Killed between or inside the commits of taking a snapshot, the database holds either
    no snapshot or a complete one that restores and lets pack run."""
    import subprocess
    import sys

    path = tmp_path / "Data.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    db.close()
    child = subprocess.run([sys.executable, "-c", KILLED_SNAPSHOT, str(path), point],
                           capture_output=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    db = ZODB.DB(FileStorage(str(path)))
    try:
        found = snapshots(db)
        assert all(s.complete for s in found)
        assert [s.name for s in found] == (["killed"] if point == "after-commit" else [])
        pack(db)
        for snap in found:
            restore(db, snap.name)
    finally:
        db.close()
