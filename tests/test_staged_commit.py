"""A large FileStorage commit staged before writes are held writes what an unstaged one does.

The patch lays its records out as the data records of the coming transaction after
its catch-up rounds (``stage_commit``); the commit copies them in, with what was
written since stored one by one. These tests run the same update staged and
unstaged on copies of one database, with the application committing in between,
and compare every current record; then check the staged file as ZODB's own tools
read it: an index rebuilt from the file, ``fstest``, the transaction's records,
history, undo and pack.
"""

from __future__ import annotations

import os
import shutil
import time
import types
from pathlib import Path

import pytest
import shopmodels
import transaction
import ZODB
import ZODB.BaseStorage
from conftest import storage_image
from shopmodels import User
from ZODB.FileStorage import FileStorage
from ZODB.scripts.fstest import check
from ZODB.utils import p64, u64

import dsustore
import dsustore.engine.patch
import dsustore.storage.filestorage as filestorage
import dsustore.storage.savepoints
from dsustore import Patch, policies
from dsustore.storage import FileStorageAdapter
from dsustore.storage.connections import savepoint_store
from dsustore.storage.filestorage import StagedCommit, TransactionAppender


def _commit_elsewhere(db: ZODB.DB, change) -> None:
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    change(conn.root())
    tm.commit()
    conn.close()


def _meanwhile(root) -> None:
    """What the application commits between the staging and the final catch-up."""
    root["users"]["user1"].password = "changed meanwhile"  # a staged record, superseded
    root["users"]["new1"] = User("new1", password="new")  # a new object to migrate
    root["products"]["p0"].price = 99.0  # a record the rename rewrote, superseded


def _while_held(root) -> None:
    """What lands just before the barrier: caught up by the final catch-up."""
    root["users"]["user2"].password = "changed at the last moment"
    root["users"]["new2"] = User("new2", password="late")


class _Held:
    def __init__(self, db: ZODB.DB) -> None:
        self.db = db

    def __enter__(self) -> None:
        _commit_elsewhere(self.db, _while_held)

    def __exit__(self, *exc: object) -> None:
        return None


class _Spy:
    """Whether a commit was staged, and how many staged records it copied."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.staged: list[StagedCommit | None] = []
        self.copied: list[list[int] | None] = []
        stage, copy = FileStorageAdapter.stage_commit, TransactionAppender.copy_staged

        def stage_commit(adapter, source, upto):
            found = stage(adapter, source, upto)
            self.staged.append(found)
            return found

        def copy_staged(appender, staged, restaged, latest):
            found = copy(appender, staged, restaged, latest)
            self.copied.append(found)
            return found

        monkeypatch.setattr(FileStorageAdapter, "stage_commit", stage_commit)
        monkeypatch.setattr(TransactionAppender, "copy_staged", copy_staged)


@pytest.fixture
def fixed_clock(monkeypatch):
    """Every FileStorage transaction gets the tid after the last one: the same commits in
    the same order get the same tids, in two runs."""
    monkeypatch.setattr(ZODB.BaseStorage, "time",
                        types.SimpleNamespace(time=lambda: 1_700_000_000.0, gmtime=time.gmtime))


@pytest.fixture
def source(tmp_path: Path, fixed_clock) -> Path:
    """A FileStorage with a shop in it, closed, to copy."""
    path = tmp_path / "source.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        shopmodels.populate(conn.root(), users=60, products=5, orders=12)
    db.close()
    return path


def _copy(source: Path, name: str) -> str:
    target = source.with_name(name)
    shutil.copyfile(source, target)
    return str(target)


def _email(old) -> str:
    return old.name + "@example.org"


def _update(path: str, monkeypatch: pytest.MonkeyPatch, *, staged: bool) -> tuple[ZODB.DB, Patch]:
    """The update, with the application committing between the staging and the commit."""
    db = ZODB.DB(FileStorage(path))
    real = dsustore.engine.patch.stage_commit

    def stage_commit(conn, upto):
        done = real(conn, upto) if staged else False
        _commit_elsewhere(db, _meanwhile)
        return done

    with monkeypatch.context() as patched:
        patched.setattr(dsustore.engine.patch, "stage_commit", stage_commit)
        with Patch(db, hold_writes=lambda: _Held(db)) as patch:
            patch.add_field(User, "email", policies.compute(_email))
            patch.rename_class("shopmodels.Product", "shopmodels.people.Product")
    return db, patch


@pytest.mark.parametrize(("chunk", "run"), [(StagedCommit.CHUNK, StagedCommit.RUN),
                                           (StagedCommit.CHUNK, 1 << 30), (StagedCommit.CHUNK, 2),
                                           (300, 2), (16, 1)])
def test_a_staged_commit_writes_the_records_an_unstaged_one_does(source, monkeypatch, chunk, run):
    """Same records, same tids, with staged records superseded and new objects created by
    the application between the staging and the commit; chunks of a few records, or
    smaller than any record, and records set a run of one size at a time or one by one,
    copy the same bytes."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    monkeypatch.setattr(StagedCommit, "CHUNK", chunk)
    monkeypatch.setattr(StagedCommit, "RUN", run)
    spy = _Spy(monkeypatch)
    plain_db, plain = _update(_copy(source, "plain.fs"), monkeypatch, staged=False)
    assert spy.staged == []
    staged_db, staged = _update(_copy(source, "staged.fs"), monkeypatch, staged=True)
    assert len(spy.staged) == 1 and spy.staged[0] is not None
    runs = spy.staged[0].size_counts
    assert (sum(runs) == 0) is (run > 100) and (sum(runs) == spy.staged[0].count) is (run == 1)
    assert spy.copied == [[]]  # every superseded record was stored again, none left behind
    try:
        assert staged.report.tid_after == plain.report.tid_after
        assert staged.report.caught_up == plain.report.caught_up >= 4
        image = storage_image(staged_db)
        assert image == storage_image(plain_db)
        with staged_db.transaction() as conn:
            users = conn.root()["users"]
            assert users["user1"].password == "changed meanwhile"
            assert users["user2"].password == "changed at the last moment"
            assert {u.email for u in users.values()} == {u.name + "@example.org"
                                                         for u in users.values()}
            assert type(conn.root()["products"]["p0"]).__name__ == "Product"
    finally:
        plain_db.close()
        staged_db.close()
    check(str(source.with_name("staged.fs")))  # every header's transaction position too


def test_a_staged_commit_leaves_a_valid_file_storage(source, monkeypatch):
    """Reopened without its index, the file rebuilds the same index; fstest passes; the
    transaction holds each object once; history reaches the previous revisions; undo
    and pack work."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    spy = _Spy(monkeypatch)
    path = _copy(source, "staged.fs")
    db, patch = _update(path, monkeypatch, staged=True)
    assert spy.copied == [[]]
    assert db.storage._tfile.name == path + ".tmp"  # the storage has its own file back
    tid = p64(int(patch.report.tid_after, 16))
    image = storage_image(db)
    index = dict(db.storage._index.items())
    with db.transaction() as conn:
        user5 = conn.root()["users"]["user5"]._p_oid
    db.close()

    os.remove(path + ".index")
    check(path)
    fs = FileStorage(path, read_only=True)
    try:
        assert dict(fs._index.items()) == index  # rebuilt from the file alone
        assert storage_image(ZODB.DB(fs)) == image
    finally:
        fs.close()

    fs = FileStorage(path)
    txn = next(iter(fs.iterator(tid, tid)))
    oids = [record.oid for record in txn]
    assert len(oids) == len(set(oids)) >= 60
    assert all(record.tid == tid for record in txn)
    data, serial, _ = fs.loadBefore(user5, tid)  # the revision before the update
    assert b"email" not in data and u64(serial) < u64(tid)
    assert [rev["tid"] for rev in fs.history(user5, size=5)] == [tid, serial]
    db = ZODB.DB(fs)
    try:
        [last] = db.undoLog(0, 1)
        assert last["description"] == "dsustore patch"
        db.undo(last["id"])
        transaction.commit()
        with db.transaction() as conn:
            users = conn.root()["users"]
            assert not any(hasattr(u, "email") for u in users.values())
            assert type(conn.root()["products"]["p0"]).__name__ == "Product"
        db.pack(time.time() + 1)
        with db.transaction() as conn:
            assert not any(hasattr(u, "email") for u in conn.root()["users"].values())
    finally:
        db.close()
    check(path)


def test_a_write_after_the_final_catch_up_is_left_out_of_the_copy_and_conflicts(
        source, monkeypatch):
    """An object committed after the final catch-up: its staged record is left out and
    stored one by one, its serial checked: the update conflicts and writes nothing."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    spy = _Spy(monkeypatch)
    path = _copy(source, "staged.fs")
    db = ZODB.DB(FileStorage(path))
    before = storage_image(db)
    close_views = Patch._close_stage_views
    late: list[int] = []

    def write_late_then_close(self):  # between the final catch-up and the commit
        if not late:
            late.append(1)
            _commit_elsewhere(db, lambda root: setattr(root["users"]["user7"], "password", "late"))
        close_views(self)

    monkeypatch.setattr(Patch, "_close_stage_views", write_late_then_close)
    try:
        with pytest.raises(dsustore.UpdateConflictError), Patch(db) as patch:
            patch.add_field(User, "email", policies.compute(_email))
        assert len(spy.copied) == 1 and len(spy.copied[0]) == 1  # user7 stored one by one
        after = storage_image(db)
        with db.transaction() as conn:
            users = conn.root()["users"]
            assert {oid for oid in after if after[oid] != before.get(oid)} == {users["user7"]._p_oid}
            assert users["user7"].password == "late"
            assert not any(hasattr(u, "email") for u in users.values())
        assert db.storage._tfile.name == path + ".tmp"  # given back before the abort
        _commit_elsewhere(db, lambda root: setattr(root["users"]["user8"], "password", "after"))
    finally:
        db.close()
    check(path)


def test_a_failing_vote_gives_the_storage_its_transaction_file_back(source, monkeypatch):
    """The staged file stands in for the storage's transaction file until the vote; a vote
    that fails leaves nothing written, and the storage's own file back for what follows."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    spy = _Spy(monkeypatch)
    path = _copy(source, "vote.fs")
    db = ZODB.DB(FileStorage(path))
    before = storage_image(db)
    vote = FileStorage.tpc_vote
    seen: list[str] = []

    def failing_vote(storage, txn):
        seen.append(storage._tfile.name)
        vote(storage, txn)  # the data is written, then the disk is "full"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileStorage, "tpc_vote", failing_vote)
    try:
        with pytest.raises(OSError), Patch(db) as patch:
            patch.add_field(User, "email", policies.compute(_email))
        assert spy.copied == [[]] and seen != [path + ".tmp"]
        assert db.storage._tfile.name == path + ".tmp"
        monkeypatch.setattr(FileStorage, "tpc_vote", vote)
        assert storage_image(db) == before
        _commit_elsewhere(db, lambda root: setattr(root["users"]["user8"], "password", "after"))
        with Patch(db) as patch:
            patch.add_field(User, "email", policies.compute(_email))
        with db.transaction() as conn:
            users = conn.root()["users"]
            assert users["user8"].password == "after" and users["user8"].email == "user8@example.org"
    finally:
        db.close()
    check(path)


def test_staging_does_not_apply_to_a_file_storage_with_a_quota(source, monkeypatch):
    """A quota is checked record by record as stored: such a storage is not staged."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    spy = _Spy(monkeypatch)
    db = ZODB.DB(FileStorage(_copy(source, "quota.fs"), quota=1 << 40))
    try:
        with Patch(db) as patch:
            patch.add_field(User, "email", policies.compute(_email))
        assert spy.staged == [None] and spy.copied == []
        with db.transaction() as conn:
            assert conn.root()["users"]["user3"].email == "user3@example.org"
    finally:
        db.close()


def test_small_commits_and_other_storages_are_not_staged(source, monkeypatch):
    """Below FULL_INVALIDATION_AT records a commit is not staged; a MappingStorage never is."""
    spy = _Spy(monkeypatch)
    db = ZODB.DB(FileStorage(_copy(source, "small.fs")))
    try:
        with Patch(db) as patch:
            patch.add_field(User, "email", policies.compute(_email))
        assert spy.staged == []
    finally:
        db.close()
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    db = ZODB.DB(None)
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    with Patch(db) as patch:
        patch.add_field(User, "email", policies.compute(_email))
    assert spy.staged == [] and patch.report.objects_migrated == 5
    db.close()


def test_a_savepoint_rollback_after_staging_drops_the_staged_records(source, monkeypatch):
    """Rolling back to a savepoint may make records current again that the staging left
    out: the staged commit is dropped, and the commit stores every record as before."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    spy = _Spy(monkeypatch)
    db = ZODB.DB(FileStorage(_copy(source, "rollback.fs")))
    real = dsustore.engine.patch.stage_commit

    def stage_then_roll_back(conn, upto):
        savepoint = conn.transaction_manager.get().savepoint()
        conn.root()["users"]["user4"].password = "rolled back"
        conn.transaction_manager.get().savepoint()
        done = real(conn, upto)
        assert done
        savepoint.rollback()
        assert savepoint_store(conn).staged is None
        return done

    monkeypatch.setattr(dsustore.engine.patch, "stage_commit", stage_then_roll_back)
    try:
        with Patch(db) as patch:
            patch.add_field(User, "email", policies.compute(_email))
        assert len(spy.staged) == 1 and spy.copied == []
        with db.transaction() as conn:
            users = conn.root()["users"]
            assert users["user4"].password == "pw4" and users["user4"].email == "user4@example.org"
    finally:
        db.close()


def test_a_large_record_is_copied_whole(tmp_path, fixed_clock, monkeypatch):
    """Records larger than a chunk, between small ones, are copied on their own."""
    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    monkeypatch.setattr(StagedCommit, "CHUNK", 1024)
    spy = _Spy(monkeypatch)
    path = tmp_path / "big.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        shopmodels.populate(conn.root(), users=10)
        for number in (3, 6):
            conn.root()["users"][f"user{number}"].password = "x" * 5000
    db.close()
    plain_db, _plain = _update(_copy(path, "plain.fs"), monkeypatch, staged=False)
    staged_db, _staged = _update(_copy(path, "staged.fs"), monkeypatch, staged=True)
    try:
        assert spy.copied == [[]]
        assert storage_image(staged_db) == storage_image(plain_db)
    finally:
        plain_db.close()
        staged_db.close()
    check(str(path.with_name("staged.fs")))


def test_the_staged_positions_are_computed_without_a_step_per_record():
    """The big-integer sum gives each record's position, less what was left out before it."""
    staged = StagedCommit.__new__(StagedCommit)
    staged.offsets = filestorage.array("Q", [0, 50, 120, 121, 400, 1000])
    staged.sources = filestorage.array("Q", range(5))
    raw = staged.positions(10_000, [1, 3])
    found = [u64(raw[at:at + 8]) for at in range(0, len(raw), 8)]
    assert found == [10_000, 0, 10_000 + 120 - 70, 0, 10_000 + 400 - 70 - 279]
