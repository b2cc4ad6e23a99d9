"""Objects stored inline (a plain object inside a persistent one's record) whose class the code
no longer has are written back as they were stored when their holder is rewritten."""

from __future__ import annotations

import shopmodels
from dsustore import Patch
from shopmodels import Money, Product


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
