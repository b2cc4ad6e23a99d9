"""An update too big for PostgreSQL's lock table is refused up front, not failed at commit;
one that fits is not refused.

RelStorage locks each modified object at commit. At PostgreSQL's default
``max_locks_per_transaction`` (64) the table is sized for 64 x 122 server processes
= 7,808 locks and grows into free shared memory: one session takes about 12,800
advisory locks, a commit of 12,000 modified objects fits and one of 13,000 fails
with "out of shared memory". These tests run a server left at that default next to
the session's server, which is configured for 15,000.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from BTrees.IOBTree import IOBTree

import shopmodels
from dsustore import CapacityError, Patch
from dsustore.engine.capacity import lock_capacity
from servers import PostgresServer, open_relstorage_db

NOTES = 15_000


@pytest.fixture(scope="module")
def default_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL server with the stock lock table (max_locks_per_transaction = 64)."""
    server = PostgresServer(max_locks_per_transaction=64)
    try:
        yield server.start()
    finally:
        server.stop()


def notes_db(server: PostgresServer, *, keep_history: bool, notes: int = NOTES):
    """A fresh RelStorage database holding ``notes`` notes and one holder of them."""
    db = open_relstorage_db(server.create_database(), keep_history=keep_history)
    with db.transaction() as conn:
        tree = conn.root()["notes"] = IOBTree()
        for i in range(notes):
            tree[i] = shopmodels.Note(f"n{i}")
        conn.root()["holder"] = shopmodels.Moved(0)
    return db


@pytest.mark.parametrize("keep_history", [True, False], ids=["hp", "hf"])
def test_an_update_of_15000_objects_is_refused_before_its_pass_on_a_default_server(
        default_pg, unchanged, keep_history):
    """Counting the instances it will write (one SQL query) is enough to refuse at once."""
    db = notes_db(default_pg, keep_history=keep_history)
    try:
        state = unchanged(db)
        progress = []
        with pytest.raises(CapacityError) as refused:
            with Patch(db, progress=progress.append) as patch:
                patch.add_field(shopmodels.Note, "tag", "")
        error = refused.value
        assert error.objects == NOTES and error.capacity == lock_capacity(db).slots == 64 * 122
        assert error.current == 64 and error.needed == 192
        assert "set max_locks_per_transaction = 192" in str(error)
        assert progress == []  # refused before the pass read a single record
        state.check()
    finally:
        db.close()


@pytest.mark.parametrize("keep_history", [True, False], ids=["hp", "hf"])
def test_an_update_of_10000_objects_fits_a_default_server_and_commits(default_pg, keep_history):
    """10,000 objects are more than the lock table is sized for (64 x 122 server processes),
    and fewer than it holds once grown into the server's free shared memory: the check
    tries, they fit, and the update commits."""
    db = notes_db(default_pg, keep_history=keep_history, notes=10_000)
    try:
        capacity = lock_capacity(db)
        assert capacity.max_locks_per_transaction == 64 and capacity.max_connections == 100
        assert capacity.slots == 64 * 122 < 10_000
        with Patch(db) as patch:
            patch.add_field(shopmodels.Note, "tag", "t")
        assert patch.report.migrated == {"shopmodels.Note": 10_000}
        with db.transaction() as conn:
            assert all(note.tag == "t" for note in conn.root()["notes"].values())
    finally:
        db.close()


def test_an_update_whose_policy_changes_15000_objects_is_refused_before_commit(default_pg, unchanged):
    """One migrated instance passes the first check; the objects its policy changed do not."""
    db = notes_db(default_pg, keep_history=True)

    def touch_every_note(old, new, old_ns, new_ns):
        new.value += 1  # the migrated instance changes too, so it is written
        for note in new_ns.root["notes"].values():
            note.text += "!"

    try:
        state = unchanged(db)
        with pytest.raises(CapacityError) as refused:
            with Patch(db) as patch:
                patch.migrate_instances(shopmodels.Moved, touch_every_note)
        assert refused.value.objects > NOTES
        assert "its commit would lock" in str(refused.value)
        state.check()
    finally:
        db.close()


@pytest.mark.parametrize("storage_kind", ["relstorage-hp", "relstorage-hf"])
def test_the_same_update_commits_on_a_server_configured_for_it(db):
    """The session's server (max_locks_per_transaction 2048) takes the 15,000-object update."""
    with db.transaction() as conn:
        notes = conn.root()["notes"] = IOBTree()
        for i in range(NOTES):
            notes[i] = shopmodels.Note(f"n{i}")
    with Patch(db) as patch:
        patch.add_field(shopmodels.Note, "tag", "t")
    assert patch.report.migrated == {"shopmodels.Note": NOTES}
    with db.transaction() as conn:
        assert all(note.tag == "t" for note in conn.root()["notes"].values())


def test_lock_capacity_is_read_from_postgresql_and_absent_elsewhere(db, backend):
    """Only RelStorage on PostgreSQL has a lock table to fit in."""
    capacity = lock_capacity(db)
    if backend.is_relstorage:
        assert capacity.max_locks_per_transaction == 2048
        assert capacity.slots == 2048 * (capacity.max_connections + capacity.other_processes
                                         + capacity.max_prepared_transactions)
    else:
        assert capacity is None
