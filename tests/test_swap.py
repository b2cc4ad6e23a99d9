"""After a patch commits, every connection of the process -- pooled, or held open across
transactions -- sees the new classes at its next transaction boundary, without loading
anything; a transaction still running sees nothing change under it."""

from __future__ import annotations

import sys
import types

import pytest
import transaction

import shopmodels
from dsustore import Patch


@pytest.fixture
def moved_module(monkeypatch):
    """A module holding the class ``shopmodels.User`` moves to."""
    module = types.ModuleType("shopmodels_moved")
    module.Customer = type("Customer", (shopmodels.User,), {"__module__": module.__name__})
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def _open_across_transactions(db):
    """A connection with an explicit transaction manager, kept open like a long-running worker's."""
    tm = transaction.TransactionManager(explicit=True)
    tm.begin()
    return db.open(transaction_manager=tm), tm


def test_an_open_connection_sees_a_moved_class_at_its_next_transaction(shop_db, moved_module):
    """Loaded objects and ghosts of an open connection take the new class at its next begin,
    with type() and isinstance right before anything is loaded; identity is kept."""
    conn, tm = _open_across_transactions(shop_db)
    users = conn.root()["users"]
    loaded = users["user1"]
    loaded._p_activate()
    ghost = users["user2"]
    ghost._p_deactivate()
    tm.commit()

    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.User", "shopmodels_moved.Customer")

    tm.begin()
    assert loaded._p_status == "ghost" and ghost._p_status == "ghost"
    assert type(loaded) is moved_module.Customer and isinstance(ghost, moved_module.Customer)
    assert loaded._p_status == "ghost" and ghost._p_status == "ghost"  # nothing loaded to say so
    assert users["user1"] is loaded and users["user2"] is ghost
    assert loaded.name == "user1" and type(loaded) is moved_module.Customer
    tm.abort()
    conn.close()


def test_a_running_transaction_keeps_its_classes_until_its_boundary(shop_db, moved_module):
    """A connection in the middle of a transaction when the patch commits is not changed
    under it; it is at its next begin."""
    conn, tm = _open_across_transactions(shop_db)
    user = conn.root()["users"]["user1"]
    user._p_activate()

    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.User", "shopmodels_moved.Customer")

    assert type(user) is shopmodels.User and user._p_status == "saved"
    tm.abort()
    tm.begin()
    assert type(user) is moved_module.Customer
    tm.abort()
    conn.close()


def test_a_pooled_connection_swaps_when_it_is_next_opened(shop_db, moved_module):
    """An idle connection's cached objects take the new class when it is opened again."""
    conn = shop_db.open()
    user = conn.root()["users"]["user1"]
    user._p_activate()
    transaction.abort()
    conn.close()

    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.User", "shopmodels_moved.Customer")

    again = shop_db.open()
    assert again is conn and type(user) is moved_module.Customer
    assert again.root()["users"]["user1"] is user
    transaction.abort()
    again.close()


def test_objects_of_replaced_code_take_the_new_class_even_where_not_rewritten(shop_db, monkeypatch):
    """When new code replaces a class object, cached instances the patch did not rewrite take
    it too, and become ghosts, so that what is stored inside them is rebuilt by the new code
    when next read; they keep their identity."""
    conn, tm = _open_across_transactions(shop_db)
    product = conn.root()["products"]["p1"]
    product._p_activate()
    tm.commit()

    new_code = types.ModuleType("shopmodels")
    new_code.__dict__.update(vars(shopmodels))
    new_code.Product = type("Product", (shopmodels.Product,), {"__module__": "shopmodels"})
    monkeypatch.setitem(sys.modules, "shopmodels", new_code)
    with Patch(shop_db) as patch:
        patch.add_field("shopmodels.User", "email", None)

    tm.begin()
    assert type(product) is new_code.Product and product._p_status == "ghost"
    assert conn.root()["products"]["p1"] is product and product.title == "product 1"
    tm.abort()
    conn.close()
