"""The meta-object protocol of the paper's Figure 3, over ZODB."""

from __future__ import annotations

import persistent
import pytest
import shopmodels
from shopmodels import Admin, Product, User

import dsustore
from dsustore import mop
from conftest import last_transaction


def test_all_instances_finds_instances_and_subclass_instances(shop_db):
    """all_instances scans the storage and includes subclasses, as ghosts of the connection."""
    conn = shop_db.open()
    found = list(mop.all_instances(conn, User))
    assert sorted(u.name for u in found) == [f"user{i}" for i in range(5)]
    assert sum(isinstance(u, Admin) for u in found) == 1
    assert [u.name for u in mop.all_instances(conn, User, subclasses=False)].count("user0") == 0
    assert len(list(mop.all_instances(conn, "shopmodels.Product"))) == 3
    conn.close()


def test_all_instances_reads_the_class_without_unpickling_state(shop_db, monkeypatch):
    """Records of other classes are never unpickled during the scan."""
    calls = []
    original = Product.__setstate__
    monkeypatch.setattr(Product, "__setstate__", lambda self, state: calls.append(1) or original(self, state))
    conn = shop_db.open()
    assert len(list(mop.all_instances(conn, User))) == 5
    assert calls == []
    conn.close()


def test_all_instances_of_an_empty_database_is_empty(db):
    """A new database (only the root, or nothing at all) has no instances."""
    conn = db.open()
    assert list(mop.all_instances(conn, User)) == []
    conn.close()


def test_class_counts_by_storage_scan(shop_db):
    """class_counts counts the stored objects of every class."""
    counts = mop.class_counts(shop_db.storage)
    assert counts["shopmodels.User"] == 4 and counts["shopmodels.Admin"] == 1
    assert counts["shopmodels.Order"] == 4


class Declared(persistent.Persistent):
    title: str
    price: float
    _cache: dict


class Assigned(persistent.Persistent):
    def __init__(self):
        self.alpha = 1
        self.beta = 2
        self._hidden = 3


def test_read_class_definition_uses_annotations_then_assignments():
    """Declared fields come from annotations where a class has them, else from self assignments."""
    declared = mop.read_class_definition(Declared)
    assert declared.fields == ("title", "price")
    assert declared.module == __name__ and declared.name == "Declared"
    assert declared.bases == ("persistent.Persistent",)
    assert mop.read_class_definition(Assigned).fields == ("alpha", "beta")


def test_create_class_builds_and_installs_a_class():
    """create_class makes a class from a definition and can bind it in its module."""
    definition = mop.ClassDef(module="shopmodels", name="Coupon", bases=("persistent.Persistent",),
                              fields=("code",), defaults={"code": "NONE"})
    cls = mop.create_class(definition, install=True)
    assert shopmodels.Coupon is cls
    assert cls().code == "NONE"
    assert mop.read_class_definition(cls).fields == ("code",)


def test_read_and_write_instance_variables_bypass_the_class(shop_db):
    """Instance variables are read and written in the stored state and the write is recorded."""
    conn = shop_db.open()
    user = conn.root()["users"]["user1"]
    assert mop.read_instance_variable(user, "name") == "user1"
    with pytest.raises(AttributeError):
        mop.read_instance_variable(user, "greeting")
    mop.write_instance_variable(user, "name", "renamed")
    assert user._p_changed
    conn.transaction_manager.commit()
    conn.close()
    conn = shop_db.open()
    assert conn.root()["users"]["user1"].name == "renamed"
    conn.close()


def test_clone_and_replace_namespace(shop_db):
    """A cloned namespace is private until replace_namespace commits it for everyone."""
    clone = mop.clone_namespace(shop_db)
    clone.root["flag"] = True
    other = shop_db.open()
    assert "flag" not in other.root()
    other.close()
    tid = mop.replace_namespace(clone)
    assert tid == last_transaction(shop_db)
    other = shop_db.open()
    assert other.root()["flag"] is True
    other.close()
    clone.connection.close()


class Old:
    def __init__(self):
        self.x = 1


class New:
    def __init__(self):
        self.y = 2


def test_swap_objects_keeps_identity_and_is_all_or_nothing():
    """swap_objects makes every old object its new counterpart, or changes none on failure."""
    a, b = Old(), Old()
    holder = [a]
    mop.swap_objects([a, b], [New(), New()])
    assert type(holder[0]) is New and holder[0].y == 2 and not hasattr(holder[0], "x")
    c, d = Old(), Old()
    with pytest.raises(dsustore.DSUError):
        mop.swap_objects([c, d], [New(), 42])
    assert type(c) is Old and c.x == 1 and type(d) is Old
