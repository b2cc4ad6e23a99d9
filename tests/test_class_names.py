"""Operations name classes: a name that exists nowhere is refused, a rename writes exactly the
name asked for (whether the code has it or not), and a rename onto stored instances merges
only when told to."""

from __future__ import annotations

import sys
import types
from io import BytesIO

import persistent
import pytest
from ZODB._compat import PersistentUnpickler
from ZODB.broken import Broken

import dsustore
import shopmodels
from conftest import storage_image
from dsustore import Patch
from dsustore.mop.records import class_name_of
from dsustore.storage import adapter_for
from test_runner import write_script

MISSPELT = [
    ("add_field", lambda patch: patch.add_field("shopmodels.Usr", "email", "x")),
    ("rename_field", lambda patch: patch.rename_field("shopmodels.Usr", "name", "username")),
    ("remove_class", lambda patch: patch.remove_class("shopmodels.Usr")),
    ("rename_class", lambda patch: patch.rename_class("shopmodels.Usr", "shopmodels.Customer")),
]


@pytest.mark.parametrize("record", [op for _name, op in MISSPELT], ids=[n for n, _op in MISSPELT])
def test_an_operation_on_a_misspelt_class_is_refused_and_writes_nothing(shop_db, unchanged, record):
    """A class that neither imports nor is stored names the operation and the closest stored classes."""
    before = unchanged(shop_db)
    with pytest.raises(dsustore.UnknownClassError) as refused:
        with Patch(shop_db) as patch:
            record(patch)
    error = refused.value
    assert error.class_name == "shopmodels.Usr"
    assert error.operation is not None and error.operation.startswith(patch.plan()[0][:12])
    assert "shopmodels.User" in error.suggestions
    assert error.facts()["suggestions"] == list(error.suggestions)
    before.check()


def test_an_operation_on_a_class_without_instances_that_imports_is_accepted(shop_db):
    """add_field on a class the code has but nothing stores is legitimate: nothing to do."""
    with Patch(shop_db) as patch:
        patch.add_field(shopmodels.Note, "pinned", False)
    assert patch.report.migrated == {} and patch.report.unchanged == {}


def test_a_new_database_runs_a_migration_written_for_older_data(db):
    """With no application class stored at all, a class the code dropped long ago is no typo."""
    with Patch(db) as patch:
        patch.remove_class("shopmodels.LongGone")
        patch.rename_class("shopmodels.Older", "shopmodels.Note")
    assert patch.report.committed


def test_a_misspelt_class_in_a_migration_is_never_recorded_as_applied(shop_db, tmp_path):
    """The run is refused before it takes its lock or its snapshot: nothing is written."""
    folder = tmp_path / "migrations"
    write_script(folder, "0001", None, 'patch.add_field("shopmodels.User", "email", "x")',
                 message="add email")
    write_script(folder, "0002", "0001", 'patch.add_field("shopmodels.Prodcut", "active", True)',
                 message="activate products")
    before = storage_image(shop_db)
    with pytest.raises(dsustore.UnknownClassError) as refused:
        dsustore.upgrade(shop_db, folder)
    assert refused.value.migration == "0002"
    assert refused.value.suggestions[0] == "shopmodels.Product"
    assert storage_image(shop_db) == before
    assert dsustore.current(shop_db) == ()


def test_a_dry_run_shows_the_same_misspelt_class(shop_db, tmp_path, unchanged):
    """upgrade(dry_run=True) runs the passes, which refuse the class as the real run would."""
    folder = tmp_path / "migrations"
    write_script(folder, "0001", None, 'patch.remove_class("shopmodels.Sesion")', message="no sessions")
    before = unchanged(shop_db)
    with pytest.raises(dsustore.UnknownClassError) as refused:
        dsustore.upgrade(shop_db, folder, dry_run=True)
    assert refused.value.migration == "0001"
    assert refused.value.operation == "remove_class(shopmodels.Sesion)"
    assert "shopmodels.Session" in refused.value.suggestions
    before.check()


# -- merges ---------------------------------------------------------------------------

def _notes_and_moved(db) -> None:
    with db.transaction() as conn:
        conn.root()["notes"] = [shopmodels.Note("a"), shopmodels.Note("b")]
        conn.root()["moved"] = [shopmodels.Moved(1), shopmodels.Moved(2), shopmodels.Moved(3)]


def test_a_rename_onto_a_class_with_stored_instances_is_refused(shop_db, unchanged):
    """Renaming Moved onto Note, which has instances, would merge them: refused, merge named."""
    _notes_and_moved(shop_db)
    before = unchanged(shop_db)
    with pytest.raises(dsustore.OperationError) as refused:
        with Patch(shop_db) as patch:
            patch.rename_class(shopmodels.Moved, shopmodels.Note)
    assert refused.value.class_name == "shopmodels.Note"
    assert "merge=True" in str(refused.value) and "2 records" in str(refused.value)
    before.check()


def test_a_rename_with_merge_joins_the_two_classes(shop_db, reader):
    """merge=True says it is meant: the renamed instances become Notes beside the others."""
    _notes_and_moved(shop_db)
    with Patch(shop_db) as patch:
        patch.rename_class(shopmodels.Moved, shopmodels.Note, merge=True)
    assert patch.report.migrated == {"shopmodels.Note": 3}
    assert patch.plan() == ["rename_class(shopmodels.Moved, shopmodels.Note, merge=True)"]
    conn = reader()
    assert {type(obj) for obj in conn.root()["moved"]} == {shopmodels.Note}
    assert "shopmodels.Moved" not in dsustore.mop.class_counts(shop_db.storage)


def test_a_merge_cannot_be_reversed():
    """A merge forgets which instances had which class, so it has no inverse."""
    from dsustore.operations import RenameClass

    assert RenameClass("a.B", "a.C", merge=True).reverse() is None
    assert RenameClass("a.B", "a.C").reverse() == RenameClass("a.C", "a.B")


# -- renames by name ------------------------------------------------------------------

def _module(monkeypatch, name: str, **classes) -> types.ModuleType:
    module = types.ModuleType(name)
    for class_name, klass in classes.items():
        klass.__module__, klass.__qualname__ = name, class_name
        setattr(module, class_name, klass)
    monkeypatch.setitem(sys.modules, name, module)
    return module


class _Names:
    """Every class name a record holds: its own, each reference's, each inline object's."""

    def __init__(self, data: bytes) -> None:
        self.references: list[tuple[bytes, str]] = []
        self.inline: list[str] = []
        unpickler = PersistentUnpickler(self._find_global, self._reference, BytesIO(data))
        unpickler.load()
        unpickler.load()
        self.record = class_name_of(data)

    def _find_global(self, module: str, name: str) -> type:
        outer = self

        class Named(Broken):
            def __new__(cls, *args):
                outer.inline.append(f"{module}.{name}")
                return Broken.__new__(cls, *args)

        Named.__module__, Named.__name__ = module, name
        return Named

    def _reference(self, reference) -> object:
        if isinstance(reference, tuple):
            oid, klass = reference
            named = klass if isinstance(klass, tuple) else (klass.__module__, klass.__name__)
            self.references.append((oid, ".".join(named)))
        return object()

    def as_tuple(self) -> tuple:
        return self.record, tuple(self.references), tuple(self.inline)


def class_names(db) -> dict[bytes, tuple]:
    """Per record: its class, every reference's (oid, class) and every inline object's class."""
    return {oid: _Names(data).as_tuple() for oid, _tid, data in adapter_for(db).current_records()}


def _move_product_and_money(monkeypatch) -> tuple[type, type]:
    """Release 2: Product and Money moved to a module of their own; shopmodels has neither."""
    class Product(persistent.Persistent):
        pass

    class Money:
        pass

    _module(monkeypatch, "shopcatalog", Product=Product, Money=Money)
    monkeypatch.delattr(shopmodels, "Product")
    monkeypatch.delattr(shopmodels, "Money")
    return Product, Money


def test_a_round_trip_across_a_move_gives_back_every_class_name(shop_db, monkeypatch):
    """Upgrade moves Product (referenced by orders) and Money (inline); the downgrade, run with
    the new code in place, writes back exactly the names every record and reference had."""
    with shop_db.transaction() as conn:
        for product in conn.root()["products"].values():
            product.price = shopmodels.Money(product.price, "EUR")
    before = class_names(shop_db)
    moved_product, _moved_money = _move_product_and_money(monkeypatch)

    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.Product", "shopcatalog.Product")
        patch.rename_class("shopmodels.Money", "shopcatalog.Money")
    assert patch.report.migrated == {"shopcatalog.Product": 3, "shopcatalog.Money": 3}
    moved = class_names(shop_db)
    assert moved != before
    assert not any("shopmodels.Product" in str(names) or "shopmodels.Money" in str(names)
                   for names in moved.values())
    with shop_db.transaction() as conn:
        assert type(conn.root()["orders"][0].items[0]) is moved_product

    with Patch(shop_db) as patch:  # the downgrade: shopmodels.Product is not in this code
        patch.rename_class("shopcatalog.Product", "shopmodels.Product")
        patch.rename_class("shopcatalog.Money", "shopmodels.Money")
    assert patch.report.migrated == {"shopmodels.Product": 3, "shopmodels.Money": 3}
    assert class_names(shop_db) == before


def test_a_downgrade_past_a_re_export_writes_the_old_name(shop_db, monkeypatch):
    """Release 2 moved Product and left ``from catalog import Product`` behind: the downgrade
    still writes the old module's name, though the old name finds the moved class."""
    before = class_names(shop_db)

    class Product(persistent.Persistent):
        pass

    _module(monkeypatch, "shopcatalog", Product=Product)
    monkeypatch.setattr(shopmodels, "Product", Product)  # the re-export
    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.Product", "shopcatalog.Product")
    assert dsustore.mop.class_counts(shop_db.storage)["shopcatalog.Product"] == 3
    with Patch(shop_db) as patch:
        patch.rename_class("shopcatalog.Product", "shopmodels.Product")
    assert patch.report.migrated == {"shopmodels.Product": 3}
    assert class_names(shop_db) == before


def test_change_superclass_onto_a_base_the_code_lacks_works_by_name(shop_db, monkeypatch):
    """A downgrade puts Note back under a base of the older code: no check the code could fail,
    no field promised, the policy still runs."""
    with shop_db.transaction() as conn:
        conn.root()["note"] = shopmodels.Note("hi")
    with Patch(shop_db) as patch:
        patch.change_superclass("shopmodels.Note", "shopmodels.OldBase",
                                policy=dsustore.policies.constant("x").for_field("legacy"))
    assert patch.report.migrated == {"shopmodels.Note": 1}
