"""Renames rewrite a record's bytes where that is exact: the same records as decoding and
encoding them, names in string data left alone, anything unusual decoded as before."""

from __future__ import annotations

import sys
import types

import persistent
import pytest
import ZODB
from ZODB.serialize import ObjectWriter

import dsustore.engine.migration_pass as migration_pass
import shopmodels
from conftest import storage_image
from dsustore import Patch, ValidationError
from dsustore.storage.pickles import GlobalRenamer, global_names

OLD, NEW = ("shopmodels", "User"), ("shopmodels.people", "Customer")


def record_of(obj) -> bytes:
    """The record ZODB writes for ``obj`` (which must have a jar)."""
    return ObjectWriter(obj).serialize(obj)


def shop(notes: list[object] = ()) -> ZODB.DB:
    """An in-memory shop; each of ``notes`` becomes the text of a Note referencing a user."""
    db = ZODB.DB(None)
    with db.transaction() as conn:
        root = conn.root()
        shopmodels.populate(root)
        user = root["users"]["user1"]
        root["notes"] = []
        for text in notes:
            note = shopmodels.Note(text)
            note.author = user
            root["notes"].append(note)
    return db


def records(db: ZODB.DB) -> dict[bytes, bytes]:
    return {oid: data for oid, (_tid, data) in storage_image(db).items()}


class _Decoding:
    """A renamer that never renames in bytes: every record is decoded (the old way)."""

    usable = False

    def __init__(self, renames) -> None:
        pass


def test_a_reference_is_renamed_in_its_opcode():
    """A record referencing an instance of the class names the new class, nothing else changes."""
    db = shop()
    with db.transaction() as conn:
        order = conn.root()["orders"][1]
        data = record_of(order)
    renamed, names = GlobalRenamer({OLD: NEW}).rename(data)
    assert renamed == data.replace(b"cshopmodels\nUser\n", b"cshopmodels.people\nCustomer\n")
    assert ("shopmodels", "Order") in names and OLD not in names


@pytest.mark.parametrize("text", ["cshopmodels\nUser\n", b"cshopmodels\nUser\n",
                                  "x\ncshopmodels\nUser\nq\x01"])
def test_a_name_in_string_data_is_no_opcode(text):
    """The bytes of a GLOBAL inside a string are data: the renamer declines, the record is decoded."""
    db = shop([text])
    with db.transaction() as conn:
        data = record_of(conn.root()["notes"][0])
    assert b"cshopmodels\nUser\n" in data
    assert GlobalRenamer({OLD: NEW}).rename(data) is None


def test_a_reference_by_name_is_left_to_the_decoder():
    """A reference naming its class as a (module, name) pair is not a GLOBAL: declined."""
    db = shop()
    with db.transaction() as conn:
        user = conn.root()["users"]["user1"]
        data = record_of(conn.root()["orders"][1])
    by_name = data.replace(b"cshopmodels\nUser\n", b"X\n\x00\x00\x00shopmodelsX\x04\x00\x00\x00User\x86")
    assert user is not None and GlobalRenamer({OLD: NEW}).rename(by_name) is None


def test_swaps_and_other_protocols_are_declined():
    """A rename whose target is renamed too, or a pickle of another protocol, is decoded."""
    assert not GlobalRenamer({OLD: NEW, NEW: OLD}).usable
    db = shop()
    with db.transaction() as conn:
        data = record_of(conn.root()["orders"][1])
    renamer = GlobalRenamer({OLD: NEW})
    assert renamer.rename(b"\x80\x04" + data[2:]) is None
    assert renamer.rename(data + b"\x93") is None  # a STACK_GLOBAL byte
    assert global_names(data)[0] == ("shopmodels", "Order")


@pytest.mark.parametrize("notes", [[], ["cshopmodels\nUser\n", "User", b"shopmodels\nUser\n"]])
def test_the_pass_writes_the_records_decoding_would(notes, monkeypatch):
    """Renaming in bytes and by decoding give the same records, byte for byte, and the same report."""
    fast, slow = shop(notes), shop(notes)
    with Patch(fast) as patch:
        patch.rename_class("shopmodels.User", "shopmodels.people.Customer")
    fast_report = patch.report
    monkeypatch.setattr(migration_pass, "GlobalRenamer", _Decoding)
    with Patch(slow) as patch:
        patch.rename_class("shopmodels.User", "shopmodels.people.Customer")
    assert records(fast) == records(slow)
    assert fast_report.migrated == patch.report.migrated
    assert fast_report.records_rewritten == patch.report.records_rewritten
    assert fast_report.as_dict()["references_rewritten"] == patch.report.as_dict()["references_rewritten"]
    with fast.transaction() as conn:
        for note in conn.root()["notes"]:
            assert note.text in notes  # string data untouched


def test_a_referrer_that_references_a_class_that_does_not_import_is_still_flagged(monkeypatch):
    """The system validation of references to classes that do not import sees records renamed
    in bytes too."""
    module = types.ModuleType("test_rename_bytes_gone")
    module.Gone = type("Gone", (persistent.Persistent,), {"__module__": module.__name__})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    db = shop()
    with db.transaction() as conn:
        conn.root()["orders"][1].extra = module.Gone()
    monkeypatch.delitem(sys.modules, module.__name__)
    monkeypatch.setattr(module, "Gone", None)
    with pytest.raises(ValidationError) as failed:
        with Patch(db) as patch:
            patch.rename_class("shopmodels.User", "shopmodels.people.Customer")
    assert "does not import" in str(failed.value)


def test_one_unpickler_decodes_record_after_record_as_a_fresh_one_would():
    """Records of any size, a truncated one among them, decode as ZODB's own unpickler does."""
    from ZODB.broken import find_global

    from dsustore.storage.pickles import RecordReader, decode

    db = shop([b"x" * 300_000, "short", "y" * 200_000])
    with db.transaction() as conn:
        datas = [record_of(note) for note in conn.root()["notes"]]
    refs: list = []
    reader = RecordReader(find_global, refs.append)
    for data in [*datas, datas[0][:-3], *datas]:
        try:
            expected = decode(data, find_global, refs.append)
        except Exception as error:
            with pytest.raises(type(error)):
                reader.decode(data)
            continue
        meta, state = reader.decode(data)
        assert meta is expected[0] and state == expected[1]
        assert global_names(data) == GlobalRenamer({OLD: NEW})._names(data)
