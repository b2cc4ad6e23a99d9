"""A rename writes exactly the class name asked for, whether the code has it or not."""

from __future__ import annotations

import sys
import types
from io import BytesIO

import persistent
from ZODB._compat import PersistentUnpickler
from ZODB.broken import Broken

import dsustore
import shopmodels
from dsustore import Patch
from dsustore.mop.records import class_name_of
from dsustore.storage import adapter_for

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
