"""The storage scan behind all_instances, class counts and the migration pass, on every storage."""

from __future__ import annotations

import pytest
import transaction

import shopmodels
from dsustore import Patch, mop
from dsustore.storage import adapter_for

from conftest import last_transaction


def test_an_empty_storage_scans_as_empty(backend):
    """A storage with no record at all (not even the root) yields nothing, without error."""
    storage = backend.open_storage()
    assert list(adapter_for(storage).current_records()) == []
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
    list(adapter_for(db).current_records())  # the reading side has scanned once already
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
    at = adapter_for(db).snapshot_tid(early)
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


def _change_a_user_and_add_a_product(db) -> set[bytes]:
    """Commit one change and one new object; the oids that transaction wrote."""
    with db.transaction() as conn:
        root = conn.root()
        root["users"]["user1"].name = "renamed"
        product = root["products"]["late"] = shopmodels.Product("late", 1.0)
    return {root["users"]["user1"]._p_oid, root["products"]._p_oid, product._p_oid}


def test_changed_since_lists_what_later_transactions_wrote(backend):
    """The objects written after a transaction, created ones included, as another client
    committed them; nothing written at or before it."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    since = last_transaction(db)
    writer = backend.open() if backend.shared else db
    written = _change_a_user_and_add_a_product(writer)
    with writer.transaction() as conn:
        conn.root()["products"]["p0"].title = "changed again"
        written.add(conn.root()["products"]["p0"]._p_oid)
    assert sorted(adapter_for(db).changed_since(since)) == sorted(written)
    assert adapter_for(db).changed_since(last_transaction(db)) == []


@pytest.mark.parametrize("storage_kind", ["relstorage-hp", "relstorage-hf"])
def test_changed_since_asks_relstorage_without_walking_transactions(backend, monkeypatch):
    """On RelStorage the changes come from one query, not the transaction iterator."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    since = last_transaction(db)
    written = _change_a_user_and_add_a_product(backend.open())

    def no_iterator(*args, **kwargs):
        raise AssertionError("changed_since walked the transaction iterator")

    monkeypatch.setattr(db.storage, "iterator", no_iterator)
    assert sorted(adapter_for(db).changed_since(since)) == sorted(written)


def test_a_filestorage_scan_and_its_changes_are_read_while_a_commit_is_being_written(file_db):
    """A commit being written leaves a partial transaction at the end of the file, past
    what is committed; scans as of an earlier transaction, and the list of changes
    since one, read up to the committed end and are unharmed. (ZODB's iterator, asked
    to start mid-file, looks at the end of the file and fails on one over 1 MiB.)"""
    from persistent.mapping import PersistentMapping

    with file_db.transaction() as conn:
        conn.root()["bulk"] = bulk = PersistentMapping()
        for i in range(300):
            bulk[i] = PersistentMapping(text="x" * 5000)  # a file well over 1 MiB
    at = last_transaction(file_db)
    with file_db.transaction() as conn:
        conn.root()["bulk"][0]["text"] = "changed"
        changed_oid = conn.root()["bulk"][0]._p_oid
    upto = last_transaction(file_db)
    adapter = adapter_for(file_db)
    with open(adapter.path, "ab") as file:  # the first bytes of a commit in progress
        file.write(b"\x03\xff" * 50)
    records = {oid: data for oid, _tid, data in adapter.current_records(at=at)}
    assert len(records) == 302  # the root, the mapping, its 300 values
    assert b"changed" not in records[changed_oid]  # as of ``at``: from before the change
    assert adapter.changed_since(at, upto) == [changed_oid]


def test_a_pass_counts_its_progress_out_of_the_records_it_reads(db):
    """Every Progress of a pass has the records that pass reads as its total -- on RelStorage
    too, whose len() is only the planner's estimate, and in a second stage, which also reads
    what the first created -- so the ETA computed from it is the records left at the rate so far."""
    with db.transaction() as conn:
        root = conn.root()
        for number in range(300):
            root[f"user{number}"] = shopmodels.User(f"user{number}")

    def create_products(patch):
        patch.new_ns.root["new"] = [shopmodels.Product(f"p{n}", 1.0) for n in range(40)]

    seen = []
    with Patch(db, progress=seen.append, batch_size=50) as patch:
        patch.stage("create", create_products)
        patch.stage("email", lambda p: p.add_field("shopmodels.User", "email", "e"))
    phases = {}
    for progress in seen:
        phases.setdefault(progress.phase, []).append(progress)
    assert set(phases) == {"migrate create", "migrate email"}
    for reports in phases.values():
        read = reports[-1].scanned
        assert len(reports) > 2 and {p.total for p in reports} == {read}
        for p in reports:
            assert p.eta == pytest.approx((read - p.scanned) * p.elapsed / p.scanned)
    assert phases["migrate email"][-1].scanned == phases["migrate create"][-1].scanned + 40


# -- deleted objects, and ZEO's bulk reads ------------------------------------------


def _delete_object(storage, oid: bytes) -> None:
    """Delete one object in a storage-level transaction of its own (as undoing its creation
    or a garbage collector does): its oid stays, its state is gone."""
    from ZODB.Connection import TransactionMetaData
    from ZODB.utils import maxtid

    serial = storage.loadBefore(oid, maxtid)[1]
    txn = TransactionMetaData()
    storage.tpc_begin(txn)
    storage.deleteObject(oid, serial, txn)
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)


def _objects_changed_around(db, count: int) -> tuple[bytes, dict[str, bytes]]:
    """``count`` objects, some packed away, one deleted, then (after the returned
    transaction) one changed, one deleted and new ones created; the oids by role."""
    from persistent.mapping import PersistentMapping

    with db.transaction() as conn:
        conn.root()["objs"] = objs = PersistentMapping()
        for number in range(count):
            objs[number] = PersistentMapping(n=number)
    with db.transaction() as conn:
        objs = conn.root()["objs"]
        oids = {"changed": objs[3]._p_oid, "deleted before": objs[10]._p_oid,
                "deleted after": objs[20]._p_oid, "packed": objs[count - 5]._p_oid,
                "objs": objs._p_oid}
        for number in range(count - 5, count):  # unreachable: a pack removes them
            del objs[number]
    db.pack()
    _delete_object(db.storage, oids["deleted before"])
    at = last_transaction(db)
    with db.transaction() as conn:
        objs = conn.root()["objs"]
        objs[3]["n"] = "changed"
        objs["new"] = new = PersistentMapping(n="new")
    oids["created"] = new._p_oid
    _delete_object(db.storage, oids["deleted after"])
    return at, oids


@pytest.mark.parametrize("storage_kind", ["file", "zeo"])
def test_a_scan_skips_deleted_objects_and_goes_on_past_them(db):
    """An object deleted by the transaction a scan reads as of is not yielded, and the scan
    goes on with the objects after it; one deleted later is yielded as it was then. (On
    FileStorage, here or behind a ZEO server, whose record_iternext fails on a deleted
    object: the walk used to stop there, or the scan failed.)"""
    at, oids = _objects_changed_around(db, 30)
    found = {oid: data for oid, _tid, data in adapter_for(db).current_records(at=at)}
    assert oids["deleted before"] not in found and oids["deleted after"] in found
    assert len(found) == 2 + 30 - 5 - 1
    assert mop.class_counts(db.storage, at=at)["persistent.mapping.PersistentMapping"] == 26


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_a_zeo_scan_reads_in_bulk_what_record_iternext_gives_as_of_an_earlier_transaction(
        backend, monkeypatch):
    """The bulk scan over ZEO (batches of loadBefore in flight, past the client cache) yields
    the same records, in the same order, as walking record_iternext one round trip at a time:
    every object current at the transaction, once, in its state then -- not an oid packed
    away or deleted by then, not an object created after, the old state of one changed or
    deleted after -- and it waits for the server a few times, not once per record."""
    from ZODB.utils import p64, u64

    import dsustore.storage.zeo as zeo
    from dsustore.storage.adapter import iternext_records

    monkeypatch.setattr(zeo, "BATCH", 7)  # many batches, several in flight at once
    db = backend.open()
    at, oids = _objects_changed_around(db, 60)
    storage = db.storage
    adapter = adapter_for(db)
    calls: list[str] = []
    with monkeypatch.context() as spied:
        call = storage._call
        spied.setattr(storage, "_call", lambda name, *args, **kw: calls.append(name)
                      or call(name, *args, **kw))
        spied.setattr(storage, "record_iternext", None)  # the bulk scan does not walk it
        bulk = list(adapter.current_records(at=at))
    walked = list(iternext_records(storage, at, history=True))
    assert bulk == walked
    assert sorted(calls) == ["get_info", "new_oids"]

    found = {oid: data for oid, _tid, data in bulk}
    assert len(found) == len(bulk) == 2 + 60 - 5 - 1  # root, objs, all but packed and deleted
    assert oids["packed"] not in found and oids["deleted before"] not in found
    assert oids["created"] not in found
    assert b"changed" not in found[oids["changed"]]
    assert oids["deleted after"] in found and b"new" not in found[oids["objs"]]
    assert [u64(oid) for oid in found] == sorted(u64(oid) for oid in found)
    assert p64(u64(max(found)) + 1) not in found


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_a_zeo_scan_walks_record_iternext_where_it_cannot_read_in_bulk(backend, monkeypatch):
    """A read-only client may not ask the server for an oid, and a database whose oids are
    mostly packed away would be probed oid by oid: there the scan walks record_iternext,
    and gives the same records."""
    import dsustore.storage.zeo as zeo
    from dsustore.storage.uri import open_storage

    db = backend.open()
    at, _oids = _objects_changed_around(db, 30)
    expected = list(adapter_for(db).current_records(at=at))
    walked: list[object] = []

    def spy(storage):
        real = storage.record_iternext
        storage.record_iternext = lambda cursor: walked.append(cursor) or real(cursor)
        return storage

    reader, _ = open_storage(backend.uri, read_only=True)
    try:
        assert list(adapter_for(spy(reader)).current_records(at=at)) == expected
    finally:
        reader.close()
    assert len(walked) >= len(expected)  # a round trip per record
    walked.clear()
    monkeypatch.setattr(zeo, "SPARSE", 0)
    monkeypatch.setattr(zeo, "SPARSE_SLACK", 0)
    assert list(adapter_for(spy(db.storage)).current_records(at=at)) == expected
    assert len(walked) >= len(expected)  # a round trip per record


@pytest.mark.parametrize("storage_kind", ["zeo"])
def test_on_zeo_changes_come_from_the_servers_list_and_the_log_past_its_end(backend,
                                                                             monkeypatch):
    """What later transactions wrote comes from the list of recent changes a ZEO server
    keeps for its clients' caches, in one round trip; for a transaction older than that
    list reaches back (100 transactions by default), from the transaction log."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    since = last_transaction(db)
    writer = backend.open()
    written = _change_a_user_and_add_a_product(writer)
    adapter = adapter_for(db)
    walked: list[object] = []
    real = db.storage.iterator
    monkeypatch.setattr(db.storage, "iterator", lambda *a: walked.append(a) or real(*a))
    assert sorted(adapter.changed_since(since)) == sorted(written)
    assert walked == []
    for number in range(100):  # past the server's list
        with writer.transaction() as conn:
            product = conn.root()["products"]["p0"]
            product.title = f"title {number}"
    written.add(product._p_oid)
    assert sorted(adapter.changed_since(since)) == sorted(written)
    assert walked
