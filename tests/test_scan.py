"""The storage scan behind all_instances, class counts and the migration pass, on every storage."""

from __future__ import annotations

import transaction

import shopmodels
from dsustore import mop
from dsustore._namespace import last_transaction, snapshot_tid
from dsustore._scan import current_records


def test_an_empty_storage_scans_as_empty(backend):
    """A storage with no record at all (not even the root) yields nothing, without error."""
    storage = backend.open_storage()
    assert list(current_records(storage)) == []
    assert mop.class_counts(storage) == {}


def test_a_database_with_only_its_root_has_no_instances(db):
    """A fresh database holds the root alone: no instances of an application class."""
    with db.transaction() as conn:
        assert list(mop.all_instances(conn, shopmodels.User)) == []
    assert dict(mop.class_counts(db.storage)) == {"persistent.mapping.PersistentMapping": 1}


def test_the_scan_sees_what_another_client_committed(backend):
    """Objects another client (or connection) just committed are in the next scan.

    The DB's own storage instance of an MVCC storage (RelStorage) lags behind
    commits made elsewhere; the scan must not read through it.
    """
    db = backend.open()
    writer = backend.open() if backend.shared else db
    list(current_records(db.storage))  # the reading side has scanned once already
    with writer.transaction() as conn:
        shopmodels.populate(conn.root())
    counts = mop.class_counts(db.storage)
    assert counts["shopmodels.User"] == 4 and counts["shopmodels.Admin"] == 1
    assert last_transaction(db) == last_transaction(writer)
    with db.transaction() as conn:
        assert len(list(mop.all_instances(conn, shopmodels.User))) == 5


def test_a_scan_gives_the_state_as_of_the_connection_it_serves(db):
    """all_instances through a connection that began earlier gives the states it sees.

    A history-free storage keeps no older state, so this holds only because the scan
    reads through that connection's own snapshot.
    """
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    early = db.open(transaction_manager=tm)
    at = snapshot_tid(early)
    with db.transaction() as conn:
        conn.root()["users"]["user1"].name = "renamed"
        conn.root()["users"]["new"] = shopmodels.User("new")
    try:
        names = sorted(u.name for u in mop.all_instances(early, shopmodels.User))
        assert names == ["user0", "user1", "user2", "user3", "user4"]
        assert at < last_transaction(db)
    finally:
        tm.abort()
        early.close()
