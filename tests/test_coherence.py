"""Coherence with a running application: MVCC isolation, conflicts, and live objects swapped on success."""

from __future__ import annotations

import threading

import pytest
import shopmodels
import transaction
from backends import SHARED_KINDS
from shopmodels import User

import dsustore
from dsustore import Patch


def test_other_connections_keep_the_old_state_until_commit(shop_db, reader):
    """While the patch runs, the application reads and writes the old state; then it sees the new one."""
    app = reader()
    app_tm = app.transaction_manager
    seen_during = []

    def policy(old, new, old_ns, new_ns):
        if old.name == "user2":
            app_tm.begin()
            seen_during.append(getattr(app.root()["users"]["user2"], "email", None))
            app.root()["products"]["p0"].title = "renamed by the app"
            app_tm.commit()
        new.email = old.name + "@example.org"

    with Patch(shop_db) as patch:
        patch.migrate_instances(User, policy)
    assert seen_during == [None]
    app_tm.begin()
    assert app.root()["users"]["user2"].email == "user2@example.org"
    assert app.root()["products"]["p0"].title == "renamed by the app"


def _commit_elsewhere(shop_db, change):
    tm = transaction.TransactionManager()
    conn = shop_db.open(transaction_manager=tm)
    change(conn.root())
    tm.commit()
    conn.close()


def test_object_changed_during_the_update_is_migrated_from_its_latest_state(shop_db, reader):
    """A concurrent commit to an object the pass already migrated is caught up, not lost or conflicting."""

    def policy(old, new, old_ns, new_ns):
        if old.name == "user2":  # user1 was migrated already
            _commit_elsewhere(shop_db, lambda root: setattr(root["users"]["user1"], "password", "new"))
        new.email = old.name + "@example.org"

    with Patch(shop_db, on_conflict="fail") as patch:
        patch.migrate_instances(User, policy)
    assert patch.report.attempts == 1
    assert patch.report.caught_up >= 1
    users = reader().root()["users"]
    assert users["user1"].password == "new"
    assert all(u.email == u.name + "@example.org" for u in users.values())


def test_object_created_during_the_update_is_migrated_too(shop_db, reader):
    """An old-shaped object the application adds while the pass runs is migrated before the commit."""

    def policy(old, new, old_ns, new_ns):
        if old.name == "user1":
            _commit_elsewhere(shop_db, lambda root: root["users"].__setitem__(
                "late", User("late", "pw")))
        new.email = old.name + "@example.org"

    with Patch(shop_db) as patch:
        patch.migrate_instances(User, policy)
    assert reader().root()["users"]["late"].email == "late@example.org"


@pytest.mark.parametrize("storage_kind", SHARED_KINDS)
def test_another_client_writing_during_the_pass_is_caught_up_in_one_attempt(
        shop_db, backend, reader):
    """Another client (its own DB, as another process has) changes an object the pass has
    migrated and adds an old-shaped one while the pass runs: the patch lists those
    changes, migrates them from their latest state and commits at the first attempt."""
    other = backend.open()

    def change(root):
        root["users"]["user1"].password = "changed meanwhile"
        root["users"]["late"] = User("late", "pw")

    def policy(old, new, old_ns, new_ns):
        if old.name == "user2":  # user1 was migrated already
            _commit_elsewhere(other, change)
        new.email = old.name + "@example.org"

    with Patch(shop_db, on_conflict="fail") as patch:
        patch.migrate_instances(User, policy)
    assert (patch.report.attempts, patch.report.caught_up) == (1, 2)  # user1 and late
    users = reader().root()["users"]
    assert users["user1"].password == "changed meanwhile"
    assert users["late"].email == "late@example.org"
    assert all(u.email == u.name + "@example.org" for u in users.values())


def _conflicting_policy(shop_db, rounds):
    """A policy that writes p0 through the new namespace while, on the first run only,
    another connection commits a change to p0: both sides changed it."""

    def policy(old, new, old_ns, new_ns):
        if old.name == "user1":
            if not rounds:
                rounds.append(1)
                _commit_elsewhere(shop_db, lambda root: setattr(
                    root["products"]["p0"], "title", "changed meanwhile"))
            product = new_ns.root["products"]["p0"]
            product.price = product.price + 1
        new.email = old.name + "@example.org"

    return policy


def test_conflict_fails_cleanly_when_asked_to(shop_db, reader):
    """An object both the update's own code and another transaction changed makes the patch
    fail, writing nothing of its own."""
    rounds: list[int] = []
    price = reader().root()["products"]["p0"].price
    with pytest.raises(dsustore.UpdateConflictError) as failed:
        with Patch(shop_db, on_conflict="fail") as patch:
            patch.migrate_instances(User, _conflicting_policy(shop_db, rounds))
    assert "nothing was written" in str(failed.value)
    root = reader().root()
    assert root["products"]["p0"].title == "changed meanwhile"
    assert root["products"]["p0"].price == price
    assert not any(hasattr(u, "email") for u in root["users"].values())


def test_conflict_retries_from_a_fresh_state(shop_db, reader):
    """With on_conflict='retry' the patch reruns on the new state and keeps the concurrent change."""
    rounds: list[int] = []
    price = reader().root()["products"]["p0"].price
    with Patch(shop_db, on_conflict="retry") as patch:
        patch.migrate_instances(User, _conflicting_policy(shop_db, rounds))
    assert patch.report.attempts == 2
    root = reader().root()
    assert root["products"]["p0"].title == "changed meanwhile"
    assert root["products"]["p0"].price == price + 1
    assert all(u.email == u.name + "@example.org" for u in root["users"].values())


def test_objects_loaded_in_other_connections_show_new_state_and_class(shop_db, monkeypatch):
    """After commit, a busy connection of the same process swaps its cached objects on its next transaction."""
    tm = transaction.TransactionManager()
    app = shop_db.open(transaction_manager=tm)
    user = app.root()["users"]["user1"]
    assert user.name == "user1"  # loaded and cached in the application's connection
    Customer = type("Customer", (User,), {"__module__": "shopmodels", "__qualname__": "Customer"})
    monkeypatch.setattr(shopmodels, "Customer", Customer, raising=False)

    def run_patch():
        with Patch(shop_db) as patch:
            patch.rename_class("shopmodels.User", "shopmodels.Customer")
            patch.rename_field("shopmodels.Customer", "name", "username")

    worker = threading.Thread(target=run_patch)
    worker.start()
    worker.join()
    tm.begin()
    assert user.username == "user1"
    assert type(user) is Customer
    assert "name" not in user.__dict__
    tm.abort()
    app.close()


def test_old_namespace_shows_the_pre_update_state(shop_db):
    """Policies read any object as it was through old_ns, while new_ns is being built."""
    seen = []

    def policy(old, new, old_ns, new_ns):
        # users were stored before products, so the pass has migrated them already
        old_user = old_ns.root["users"]["user1"]
        new_user = new_ns.root["users"]["user1"]
        seen.append((old_user.name, "name" in new_user.__dict__, new_user.username))
        new.title = old.title.upper()

    with Patch(shop_db, batch_size=2) as patch:
        patch.rename_field(User, "name", "username")
        patch.migrate_instances(shopmodels.Product, policy)
    assert seen == [("user1", False, "user1")] * 3


def _change_p0_and_the_root(root):
    root["products"]["p0"].title = "changed meanwhile"
    root["late"] = True


def test_old_namespace_shows_objects_changed_meanwhile_as_they_were(shop_db, reader):
    """Another transaction changes objects after the patch began: every stage's old
    namespace still shows them as they were, also on a history-free storage (which keeps
    no older state to load), and the patch commits at the first attempt."""
    seen = []

    def look(stage, old_ns):
        seen.append((stage, old_ns.root["products"]["p0"].title, "late" in old_ns.root))

    def first(old, new, old_ns, new_ns):
        if old.name == "user1":
            _commit_elsewhere(shop_db, _change_p0_and_the_root)
        elif old.name == "user2":
            look("first", old_ns)
        new.email = old.name + "@example.org"

    def second(old, new, old_ns, new_ns):
        if old.name == "user2":
            look("second", old_ns)
        new.greeted = True

    patch = Patch(shop_db, on_conflict="fail")
    patch.stage("0001", lambda p: p.migrate_instances(User, first))
    patch.stage("0002", lambda p: p.migrate_instances(User, second))
    patch.begin()
    assert patch.commit().attempts == 1
    assert seen == [("first", "product 0", False), ("second", "product 0", False)]
    root = reader().root()
    assert root["products"]["p0"].title == "changed meanwhile" and root["late"] is True
    assert all(u.email == u.name + "@example.org" and u.greeted for u in root["users"].values())


def test_old_object_is_read_only(shop_db, unchanged):
    """Writing to the old view raises ReadOnlyStateError and rolls the update back."""
    before = unchanged(shop_db)

    def policy(old, new, old_ns, new_ns):
        old.name = "nope"

    with pytest.raises(dsustore.ReadOnlyStateError):
        with Patch(shop_db) as patch:
            patch.migrate_instances(User, policy)
    before.check()


def test_writing_the_old_namespace_rolls_back(shop_db, unchanged):
    """A policy that changes an object of old_ns fails the update."""
    before = unchanged(shop_db)

    def policy(old, new, old_ns, new_ns):
        old_ns.root["products"]["p0"].title = "nope"

    with pytest.raises(dsustore.DSUError):
        with Patch(shop_db) as patch:
            patch.migrate_instances(User, policy)
    before.check()


def test_a_retry_runs_a_stage_again_so_its_direct_writes_are_kept(shop_db, reader):
    """Writes a stage makes through new_ns are redone on the retry, not lost."""
    rounds: list[int] = []

    def build(patch):
        patch.new_ns.root["release"] = 2
        patch.migrate_instances(User, _conflicting_policy(shop_db, rounds))

    patch = Patch(shop_db, on_conflict="retry").stage("0002", build)
    patch.begin()
    report = patch.commit()
    assert report.attempts == 2
    assert reader().root()["release"] == 2


def test_a_with_block_that_wrote_directly_is_not_retried_silently(shop_db, reader):
    """Direct writes of the with block cannot be replayed: the conflict is reported instead."""
    rounds: list[int] = []
    with pytest.raises(dsustore.UpdateConflictError, match="cannot be retried"):
        with Patch(shop_db, on_conflict="retry") as patch:
            patch.new_ns.root["release"] = 2
            patch.migrate_instances(User, _conflicting_policy(shop_db, rounds))
    assert "release" not in reader().root()


def test_a_container_cached_before_its_members_class_was_reloaded_can_still_be_written(
        shop_db, monkeypatch, reader):
    """An idle connection that cached a container referencing objects of a class the code
    has since replaced (a reloaded module) does not write the old class object back."""
    tm = transaction.TransactionManager()
    app = shop_db.open(transaction_manager=tm)
    other = shop_db.open(transaction_manager=transaction.TransactionManager())
    assert len(app.root()["users"]) == 5  # the container is loaded; its users are ghosts of User
    tm.abort()
    app.close()
    other.close()  # the patch may take this one from the pool; ``app`` stays idle with its cache
    reloaded = type("User", (shopmodels.persistent.Persistent,), {
        "__module__": "shopmodels", "__qualname__": "User", "__init__": User.__init__})
    monkeypatch.setattr(shopmodels, "User", reloaded)  # same name, new class object
    with Patch(shop_db) as patch:
        patch.add_field("shopmodels.User", "email", "x@example.org")
    opened = [shop_db.open(transaction_manager=transaction.TransactionManager()) for _ in range(2)]
    assert app in opened  # the connection that cached the container before the patch
    app.transaction_manager.begin()
    app.root()["users"]["user9"] = reloaded("user9")
    app.transaction_manager.commit()
    for conn in opened:
        conn.close()
    users = reader().root()["users"]
    assert type(users["user1"]) is reloaded and users["user1"].email == "x@example.org"


def test_a_large_commit_makes_other_connections_drop_their_caches(shop_db, monkeypatch):
    """Above FULL_INVALIDATION_AT records the other connections reset their caches instead of
    being handed every oid; they see the new state all the same."""
    import dsustore.storage.savepoints

    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    tm = transaction.TransactionManager()
    app = shop_db.open(transaction_manager=tm)
    assert app.root()["users"]["user1"].name == "user1"
    tm.abort()  # the connection stays open, its cache full
    with Patch(shop_db) as patch:
        patch.rename_field(User, "name", "username")
    tm.begin()
    user = app.root()["users"]["user1"]
    assert user.username == "user1" and "name" not in user.__dict__
    tm.abort()
    app.close()


def test_the_commit_does_not_copy_the_savepoint_index(shop_db, monkeypatch):
    """ZODB's commit takes a savepoint first, which copies the savepoint index -- an entry
    per record the update wrote -- and throws the copy away; a patch's commit does not."""
    from ZODB.Connection import Connection

    copied: list[int] = []
    savepoint = Connection.savepoint

    def spy(self):
        if self._savepoint_storage is not None:
            copied.append(len(self._savepoint_storage.index))
        return savepoint(self)

    monkeypatch.setattr(Connection, "savepoint", spy)
    with Patch(shop_db) as patch:
        patch.add_field(User, "email", "x@example.org")
    assert patch.report.records_rewritten == 5
    assert copied == [0]  # the savepoint the patch starts from, empty
    with shop_db.transaction() as conn:
        assert conn.root()["users"]["user1"].email == "x@example.org"


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_on_zeo_a_large_commit_sends_its_records_in_batches(backend, monkeypatch):
    """A large commit over ZEO hands its records to the client's I/O thread a batch at a
    time, waiting for the server to take the batches sent before; every record arrives,
    the client's own cache forgets the states it had, and other clients see the new ones."""
    import dsustore.storage.savepoints
    import dsustore.storage.zeo as zeo

    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    monkeypatch.setattr(zeo, "STORE_BATCH", 3)
    monkeypatch.setattr(zeo, "STORE_AHEAD", 1)
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root(), users=40)
    tm = transaction.TransactionManager()
    app = db.open(transaction_manager=tm)
    assert all(user.password for user in app.root()["users"].values())  # cached, old state
    tm.abort()
    batches: list[int] = []
    send = db.storage._async_iter
    monkeypatch.setattr(db.storage, "_async_iter",
                        lambda messages: batches.append(len(messages)) or send(messages))

    with Patch(db) as patch:
        patch.add_field(User, "email", "x@example.org")

    assert sum(batches) == patch.report.records_rewritten == 40  # every user, in batches
    assert max(batches) == 3
    tm.begin()
    assert {user.email for user in app.root()["users"].values()} == {"x@example.org"}
    tm.abort()
    app.close()
    with backend.open().transaction() as conn:
        assert {user.email for user in conn.root()["users"].values()} == {"x@example.org"}


def test_on_zeo_the_catch_up_learns_what_changed_from_invalidations(shop_db, storage_kind,
                                                                     monkeypatch):
    """A ZEO client hears of every commit: the catch-up uses that instead of reading the
    transaction log back, a round trip per record; other storages read their log."""
    from dsustore.storage import adapter_for

    listed: list[bytes] = []
    adapter = adapter_for(shop_db)
    real = adapter.changed_since

    def changed_since(since, upto=None):
        listed.append(since)
        return real(since, upto)

    monkeypatch.setattr(adapter, "changed_since", changed_since)

    def policy(old, new, old_ns, new_ns):
        if old.name == "user2":
            _commit_elsewhere(shop_db, lambda root: setattr(root["users"]["user1"], "password", "z"))
        new.email = old.name + "@example.org"

    with Patch(shop_db) as patch:
        patch.migrate_instances(User, policy)
    assert patch.report.caught_up >= 1
    assert (listed == []) is (storage_kind == "zeo")


@pytest.mark.parametrize("on_conflict", ["fail", "retry"])
def test_a_write_after_the_last_catch_up_conflicts_in_a_large_commit(shop_db, monkeypatch, reader,
                                                                     on_conflict):
    """A large commit stores what the pass wrote without reading each object back (on
    FileStorage, in chunks); an object written after the last catch-up is still checked,
    and conflicts: nothing is written, or the retry keeps the late write."""
    import dsustore.storage.savepoints

    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    close_views = Patch._close_stage_views
    late: list[int] = []

    def write_late_then_close(self):  # runs between the last catch-up and the commit
        if not late:
            late.append(1)
            _commit_elsewhere(shop_db, lambda root: setattr(root["users"]["user1"], "password", "late"))
        close_views(self)

    monkeypatch.setattr(Patch, "_close_stage_views", write_late_then_close)
    if on_conflict == "fail":
        with pytest.raises(dsustore.UpdateConflictError):
            with Patch(shop_db, on_conflict="fail") as patch:
                patch.add_field(User, "email", "x@example.org")
        users = reader().root()["users"]
        assert not any(hasattr(u, "email") for u in users.values())
    else:
        with Patch(shop_db, on_conflict="retry") as patch:
            patch.add_field(User, "email", "x@example.org")
        assert patch.report.attempts == 2
        users = reader().root()["users"]
        assert all(u.email == "x@example.org" for u in users.values())
    assert users["user1"].password == "late"


def test_a_large_commit_on_file_storage_leaves_a_file_that_reads_back_the_same(tmp_path, monkeypatch):
    """Records stored a chunk at a time, their transaction index kept compact, make the same
    data file: reopened without its index file, it reads back every record as committed."""
    import os

    import ZODB
    from ZODB.FileStorage import FileStorage
    from ZODB.scripts.fstest import check

    import dsustore.storage.savepoints
    from conftest import storage_image

    monkeypatch.setattr(dsustore.storage.savepoints, "FULL_INVALIDATION_AT", 1)
    path = str(tmp_path / "Data.fs")
    db = ZODB.DB(FileStorage(path))
    with db.transaction() as conn:
        shopmodels.populate(conn.root(), users=30)
    with Patch(db) as patch:
        patch.add_field(User, "email", "x@example.org")
        patch.rename_class("shopmodels.Product", "shopmodels.people.Product")
    assert type(db.storage._tindex) is dict  # the storage has its own index back
    with db.transaction() as conn:  # a later ordinary transaction
        conn.root()["users"]["user3"].password = "later"
    image = storage_image(db)
    db.close()
    os.remove(path + ".index")
    check(path)
    reopened = ZODB.DB(FileStorage(path, read_only=True))
    try:
        assert storage_image(reopened) == image
        with reopened.transaction() as conn:
            users = conn.root()["users"]
            assert all(u.email == "x@example.org" for u in users.values())
            assert users["user3"].password == "later"
    finally:
        reopened.close()
