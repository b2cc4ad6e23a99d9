"""The patch connection's savepoint storage: records written a chunk at a time, read back in
file order once, and rolled back to a savepoint with the records a later store replaced."""

from __future__ import annotations

from ZODB.MappingStorage import MappingStorage
from ZODB.utils import p64

from dsustore.storage import savepoints
from dsustore.storage.savepoints import AppendingTmpStore

A, B, C = p64(1), p64(2), p64(3)


def test_records_read_back_in_order_whatever_the_chunks(monkeypatch):
    """Loads in between, records larger than a chunk: drain gives each object's last record."""
    monkeypatch.setattr(savepoints, "_CHUNK", 64)
    store = AppendingTmpStore(MappingStorage())
    big = b"x" * 200
    store.store(A, p64(7), b"first A", "", None)
    store.store(B, None, big, "", None)
    assert store.load(A) == (b"first A", p64(7))  # written out before it is read
    store.store(A, p64(7), b"second A", "", None)
    store.store(C, p64(9), b"C", "", None)
    assert store.read_at(store.index[B]) == (big, b"\0" * 8)
    assert list(store.drain()) == [(B, b"\0" * 8, big), (A, p64(7), b"second A"), (C, p64(9), b"C")]


def test_a_rollback_brings_back_the_records_it_cut_off_replacing():
    """A record replaced after a savepoint is current again once the savepoint is rolled back."""
    store = AppendingTmpStore(MappingStorage())
    store.store(A, p64(1), b"A before", "", None)
    savepoint = (store.position, dict(store.index), dict(store.creating))
    store.store(A, p64(1), b"A after", "", None)
    store.store(B, p64(1), b"B after", "", None)
    store.reset(*savepoint)
    store.store(C, p64(1), b"C", "", None)
    assert store.load(A) == (b"A before", p64(1))
    assert list(store.drain()) == [(A, p64(1), b"A before"), (C, p64(1), b"C")]
