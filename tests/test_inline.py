"""Objects stored inline (a plain object inside a persistent one's record): operations reach them
as they reach records, count them as objects, and leave leftovers of other classes as they were."""

from __future__ import annotations

import pytest

import dsustore
import shopmodels
from conftest import storage_image
from dsustore import Patch
from shopmodels import Dimensions, Money, Point, Product


def _load(db, oid: bytes) -> bytes:
    return db.storage.load(oid)[0]


def _priced(db) -> list[bytes]:
    """Every product gets a Money price, stored inline in its record; their oids."""
    with db.transaction() as conn:
        products = list(conn.root()["products"].values())
        for product in products:
            product.price = Money(product.price, "EUR")
    with db.transaction() as conn:
        return [product._p_oid for product in conn.root()["products"].values()]


def test_add_field_reaches_objects_stored_inline(shop_db, reader):
    """Every Money held by a product gets the field; the report counts the Moneys and, apart,
    the records rewritten."""
    _priced(shop_db)
    with Patch(shop_db) as patch:
        patch.add_field(Money, "rounded", False)
    assert patch.report.migrated == {"shopmodels.Money": 3}
    assert patch.report.records_rewritten == 3
    prices = [product.price for product in reader().root()["products"].values()]
    assert [price.rounded for price in prices] == [False, False, False]


def test_field_operations_reach_every_inline_object_once(shop_db, reader):
    """Two Moneys in one record, renamed and removed fields: each changed object counted once."""
    _priced(shop_db)
    with shop_db.transaction() as conn:
        conn.root()["products"]["p0"].discount = Money(1.0, "EUR")
    with Patch(shop_db) as patch:
        patch.rename_field(Money, "currency", "code")
        patch.remove_field(Money, "missing")
    assert patch.report.migrated == {"shopmodels.Money": 4}
    product = reader().root()["products"]["p0"]
    assert vars(product.discount) == {"amount": 1.0, "code": "EUR"}
    assert vars(product.price) == {"amount": 10.0, "code": "EUR"}


def test_inline_objects_that_already_have_the_shape_are_left_unwritten(shop_db, unchanged):
    """add_field of a field every inline Money has: nothing changed, nothing rewritten."""
    _priced(shop_db)
    before = unchanged(shop_db)
    with Patch(shop_db) as patch:
        patch.add_field(Money, "currency", "USD")
    assert patch.report.migrated == {}
    assert patch.report.unchanged == {"shopmodels.Money": 3}
    assert patch.report.records_rewritten == 0
    assert storage_image(shop_db) == before.image


def test_a_policy_changes_inline_objects_in_place(shop_db, reader):
    """migrate_instances hands each inline Money to the policy as the object itself."""
    _priced(shop_db)

    def double(old, new, old_ns, new_ns):
        new.amount = old.amount * 2

    with Patch(shop_db) as patch:
        patch.migrate_instances(Money, double)
    assert patch.report.migrated == {"shopmodels.Money": 3}
    assert reader().root()["products"]["p1"].price == Money(22.0, "EUR")


def test_a_policy_that_leaves_inline_objects_alone_rewrites_nothing(shop_db, unchanged):
    """Whether a policy changed an inline object is told by comparing it: here nothing changed."""
    _priced(shop_db)
    before = unchanged(shop_db)
    with Patch(shop_db) as patch:
        patch.migrate_instances(Money, lambda old, new, old_ns, new_ns: None)
    assert patch.report.migrated == {} and patch.report.unchanged == {"shopmodels.Money": 3}
    assert storage_image(shop_db) == before.image


def test_inline_objects_with_slots_are_reached(shop_db, reader):
    """A slotted inline object gets the field in its slot."""
    with shop_db.transaction() as conn:
        conn.root()["products"]["p0"].size = Dimensions(2, 3)
    with Patch(shop_db) as patch:
        patch.add_field(Dimensions, "depth", 1)
    assert patch.report.migrated == {"shopmodels.Dimensions": 1}
    size = reader().root()["products"]["p0"].size
    assert (size.width, size.height, size.depth) == (2, 3, 1)


def test_inline_objects_pickled_by_their_own_reduce_are_refused_by_field_operations(
        shop_db, unchanged, reader):
    """Fields of a class that pickles itself cannot be edited from outside: the operation is
    refused, naming the class and how many; a policy on the objects changes them."""
    with shop_db.transaction() as conn:
        conn.root()["products"]["p0"].spot = Point(1, 2)
        conn.root()["products"]["p1"].spot = Point(3, 4)
    before = unchanged(shop_db)
    with pytest.raises(dsustore.OperationError) as refused:
        with Patch(shop_db) as patch:
            patch.rename_field(Point, "x", "left")
    assert refused.value.class_name == "shopmodels.Point"
    assert "2 inline instance(s)" in str(refused.value)
    assert refused.value.operation == "rename_field(shopmodels.Point, 'x', 'left')"
    before.check()

    with Patch(shop_db) as patch:
        patch.migrate_instances(Point, lambda old, new, old_ns, new_ns: setattr(new, "x", 0))
    assert patch.report.migrated == {"shopmodels.Point": 2}
    assert reader().root()["products"]["p1"].spot.y == 4
    assert reader().root()["products"]["p1"].spot.x == 0


def test_rename_class_counts_the_inline_objects_and_their_holders_apart(shop_db, monkeypatch):
    """Renaming an inline class: the objects are the migrated ones, their holders the records."""
    _priced(shop_db)
    cash = type("Cash", (Money,), {"__module__": "shopmodels", "__qualname__": "Cash"})
    monkeypatch.setattr(shopmodels, "Cash", cash, raising=False)
    monkeypatch.delattr(shopmodels, "Money")
    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.Money", "shopmodels.Cash")
    assert patch.report.migrated == {"shopmodels.Cash": 3}
    assert patch.report.references_rewritten == 3
    assert patch.report.records_rewritten == 3


def test_remove_class_flags_records_that_hold_inline_instances(shop_db, unchanged):
    """A removed class's inline instances are live data: their holders fail the validation."""
    oids = _priced(shop_db)
    before = unchanged(shop_db)
    with pytest.raises(dsustore.ValidationError) as failed:
        with Patch(shop_db) as patch:
            patch.remove_class("shopmodels.Money")
    flagged = {oid for failure in failed.value.failures for oid in failure.oids}
    assert {dsustore.errors.format_oid(oid) for oid in oids} <= flagged
    before.check()


# -- leftovers: inline objects of classes the code no longer has ----------------------------

def test_an_inline_leftover_passes_through_as_it_was_when_its_holder_is_rewritten(
        shop_db, monkeypatch, reader):
    """A product holding a Money whose class left the code gains a field; the Money stays
    exactly as stored -- class name, arguments, state, byte for byte."""
    oid = _priced(shop_db)[0]
    before = _load(shop_db, oid)
    monkeypatch.delattr(shopmodels, "Money")
    with Patch(shop_db) as patch:
        patch.add_field(Product, "active", True)
    after = _load(shop_db, oid)
    # the state dict gains "active" after "price": everything before it is unchanged
    assert before.endswith(b"u.") and after.startswith(before[:-2])
    assert b"cshopmodels\nMoney\n" in after
    monkeypatch.setattr(shopmodels, "Money", Money, raising=False)
    product = reader().root()["products"]["p0"]
    assert product.price == Money(10.0, "EUR") and product.active is True


def test_rename_class_moves_a_class_past_a_leftover_of_another_class(shop_db, monkeypatch, reader):
    """An order referencing a renamed User also holds a leftover Money: the rename goes through
    and the leftover is kept as it was (as zodbupdate does)."""
    with shop_db.transaction() as conn:
        conn.root()["orders"][1].note = Money(5.0, "USD")
    monkeypatch.delattr(shopmodels, "Money")
    customer = type("Customer", (shopmodels.User,),
                    {"__module__": "shopmodels", "__qualname__": "Customer"})
    monkeypatch.setattr(shopmodels, "Customer", customer, raising=False)
    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.User", "shopmodels.Customer")
    assert patch.report.migrated == {"shopmodels.Customer": 4}
    monkeypatch.setattr(shopmodels, "Money", Money, raising=False)
    order = reader().root()["orders"][1]
    assert type(order.user) is customer
    assert order.note == Money(5.0, "USD")


def test_field_operations_reach_leftovers_by_name(shop_db, monkeypatch, reader):
    """A class gone from the code, stored only inline: a field operation on its name changes
    its objects' states, which are written back under the same name."""
    _priced(shop_db)
    monkeypatch.delattr(shopmodels, "Money")
    with Patch(shop_db) as patch:
        patch.rename_field("shopmodels.Money", "currency", "code")
    assert patch.report.migrated == {"shopmodels.Money": 3}
    monkeypatch.setattr(shopmodels, "Money", Money, raising=False)
    assert vars(reader().root()["products"]["p2"].price) == {"amount": 12.0, "code": "EUR"}


def test_a_policy_on_a_leftover_is_refused_naming_how_many(shop_db, monkeypatch, unchanged):
    """A policy needs the object, which a class the code lacks cannot build: refused up front."""
    _priced(shop_db)
    before = unchanged(shop_db)
    monkeypatch.delattr(shopmodels, "Money")
    with pytest.raises(dsustore.OperationError) as refused:
        with Patch(shop_db) as patch:
            patch.migrate_instances("shopmodels.Money", lambda old, new, old_ns, new_ns: None)
    assert refused.value.class_name == "shopmodels.Money"
    assert "3 inline instance(s)" in str(refused.value) and "does not import" in str(refused.value)
    before.check()


def test_a_merge_of_inline_classes_counts_only_the_objects_it_renames(shop_db, monkeypatch):
    """A product holds an old Money and a Cash already: merging Money into Cash counts the
    three Moneys, not the Cash that was there."""
    _priced(shop_db)
    cash = type("Cash", (), {"__module__": "shopmodels", "__qualname__": "Cash"})
    monkeypatch.setattr(shopmodels, "Cash", cash, raising=False)
    with shop_db.transaction() as conn:
        discount = cash()
        discount.amount = 1.0
        conn.root()["products"]["p0"].discount = discount
    monkeypatch.delattr(shopmodels, "Money")
    with pytest.raises(dsustore.OperationError, match="merge=True"):
        with Patch(shop_db) as patch:
            patch.rename_class("shopmodels.Money", "shopmodels.Cash")
    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.Money", "shopmodels.Cash", merge=True)
    assert patch.report.migrated == {"shopmodels.Cash": 3}
    assert patch.report.records_rewritten == 3
