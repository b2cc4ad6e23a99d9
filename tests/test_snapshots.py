"""Snapshots: taking, restoring, refusing over application writes, packing, exports."""

from __future__ import annotations

import pytest
import shopmodels
from conftest import storage_image
from ZODB.utils import tid_repr

from dsustore import Patch
from conftest import keeps_history, last_transaction
from dsustore.engine.bookkeeping import bookkeeping
from dsustore.errors import SnapshotConflictError, UnknownSnapshotError
from dsustore.recovery import (
    delete_snapshot,
    pack,
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
