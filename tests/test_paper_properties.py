"""The instance-migration properties of the paper's section 2.5, one test each, by name."""

from __future__ import annotations

import pytest
import shopmodels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shopmodels import Money, Product, User

import dsustore
from dsustore import Patch, mop, policies

from conftest import storage_image
from dsustore.mop.classes import resolve
from dsustore.mop.records import class_name_of
from dsustore.storage import adapter_for


def test_property_application_dependent_migration_policies(shop_db, reader):
    """The same change migrates differently per application choice (currency given by the app)."""
    with Patch(shop_db) as patch:
        patch.migrate_instances(Product, policies.convert("price", lambda p: Money(p, "CHF")))
    assert reader().root()["products"]["p0"].price == Money(10.0, "CHF")


def test_property_system_and_application_validations(shop_db, unchanged):
    """System validations always run (promised fields) next to application ones."""
    before = unchanged(shop_db)
    with pytest.raises(dsustore.ValidationError) as failed:
        with Patch(shop_db) as patch:
            patch.migrate_instances(User, lambda old, new, o, n: None)
            patch.add_field(User, "email", lambda old, new, o, n: None)  # promises email, sets none
            patch.add_validation(lambda old_ns, new_ns: True)
    assert "has no field 'email'" in str(failed.value)
    before.check()


def test_property_atomicity(shop_db, unchanged):
    """All operations or none: a failure on the last object undoes the first ones."""
    before = unchanged(shop_db)
    last = sorted(mop.instance_oids(shop_db.storage, User))[-1]

    def fail_last(old, new, old_ns, new_ns):
        if old._p_oid == last:
            raise ValueError("last one fails")
        new.name = "changed"

    with pytest.raises(dsustore.PolicyError):
        with Patch(shop_db) as patch:
            patch.migrate_instances(User, fail_last)
    before.check()


def test_property_eager_migration(shop_db):
    """Every stored instance is migrated at commit, before any is loaded by the application."""
    with Patch(shop_db) as patch:
        patch.add_field(User, "email", "e")
    for oid, _tid, data in adapter_for(shop_db).current_records():
        if class_name_of(data) in ("shopmodels.User", "shopmodels.Admin"):
            assert b"email" in data


def test_property_coherence(shop_db):
    """An application connection never sees a mix: old state during the update, new after it."""
    app = shop_db.open()
    names_during = []

    def policy(old, new, old_ns, new_ns):
        app.transaction_manager.begin()
        names_during.append(sorted(u.__dict__.get("username", "-") for u in app.root()["users"].values()))
        new.username = old.name

    with Patch(shop_db) as patch:
        patch.migrate_instances(User, policy)
    assert all(names == ["-"] * 5 for names in names_during)
    app.transaction_manager.begin()
    assert sorted(u.username for u in app.root()["users"].values()) == [f"user{i}" for i in range(5)]
    app.close()


def test_property_causality(shop_db, monkeypatch):
    """After the update, every stored class and every live object's class is the code's class."""
    Customer = type("Customer", (User,), {"__module__": "shopmodels", "__qualname__": "Customer"})
    monkeypatch.setattr(shopmodels, "Customer", Customer, raising=False)
    app = shop_db.open()
    held = app.root()["users"]["user1"]
    assert held.name == "user1"
    app.close()  # back in the pool with the object cached
    with Patch(shop_db) as patch:
        patch.rename_class(User, "shopmodels.Customer")
    for name in mop.class_counts(shop_db.storage):
        assert resolve(name) is not None, name
    app = shop_db.open()
    again = app.root()["users"]["user1"]
    # the idle connection's cache held an object of a replaced class: it became one of
    # the new class in place (paper: become), so every reference to it sees the new class
    assert again is held and type(held) is Customer and again.name == "user1"
    assert all(type(obj) is not User for _, obj in app._cache.items())
    app.close()


def test_property_composability(shop_db, reader):
    """Reusable policies compose (chain) and operations aggregate into one update."""
    lower = policies.convert("name", str.lower)
    tagged = policies.compute(lambda old: f"{old.name}#tag")
    with Patch(shop_db) as patch:
        patch.migrate_instances(User, policies.chain(lower, tagged.for_field("tag")))
        patch.migrate_instances(Product, policies.convert("title", str.upper))
    conn = reader()
    assert conn.root()["users"]["user1"].tag == "user1#tag"
    assert conn.root()["products"]["p1"].title == "PRODUCT 1"


def _fields(obj):
    obj._p_activate()
    return dict(obj.__dict__)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["a", "b", "c"]), st.integers(0, 9)),
        st.tuples(st.just("remove"), st.sampled_from(["name", "a", "b"]), st.none()),
        st.tuples(st.just("rename"), st.sampled_from(["name", "a"]), st.sampled_from(["x", "y"])),
    ),
    min_size=1, max_size=5,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, users=st.integers(1, 12), fail=st.booleans())
def test_random_patches_commit_what_they_promise_or_change_nothing(file_db, ops, users, fail):
    """Random operation sequences on random graphs: a failing one changes nothing, a passing one
    gives exactly the state a plain dict model of the operations predicts."""
    from BTrees.OOBTree import OOBTree

    with file_db.transaction() as conn:
        conn.root()["users"] = OOBTree({f"u{i}": User(f"u{i}", legacy_flag=i) for i in range(users)})
    expected = {}
    conn = file_db.open()
    for key, user in conn.root()["users"].items():
        expected[key] = _fields(user)
    conn.close()
    for kind, name, arg in ops:
        for state in expected.values():
            if kind == "add":
                state.setdefault(name, arg)
            elif kind == "remove":
                state.pop(name, None)
            elif name in state:
                state[arg] = state.pop(name)
    last, image = file_db.lastTransaction(), storage_image(file_db)
    try:
        with Patch(file_db) as patch:
            for kind, name, arg in ops:
                if kind == "add":
                    patch.add_field(User, name, arg)
                elif kind == "remove":
                    patch.remove_field(User, name)
                else:
                    patch.rename_field(User, name, arg)
            if fail:
                patch.add_validation(lambda old_ns, new_ns: False)
    except dsustore.DSUError:
        assert file_db.lastTransaction() == last and storage_image(file_db) == image
        return
    assert not fail or not ops
    conn = file_db.open()
    got = {key: _fields(user) for key, user in conn.root()["users"].items()}
    conn.close()
    assert got == expected
