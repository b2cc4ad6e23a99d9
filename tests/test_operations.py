"""Each DSU operation of the paper's Figure 2, on stored instances."""

from __future__ import annotations

import pytest
import shopmodels
from shopmodels import Admin, Money, Product, User

import dsustore
from dsustore import Patch, policies
from conftest import storage_image
from dsustore.operations.ops import AddField, RemoveField, RenameClass, RenameField


def users(conn):
    return list(conn.root()["users"].values())


def test_rename_field_keeps_the_value(shop_db, reader):
    """rename_field moves each value to the new name and drops the old one."""
    with Patch(shop_db) as patch:
        patch.rename_field(User, "name", "username")
    for user in users(reader()):
        assert "name" not in user.__dict__
        assert user.username.startswith("user")


def test_add_field_with_a_constant(shop_db, reader):
    """A plain value given to add_field is a constant for every instance."""
    with Patch(shop_db) as patch:
        patch.add_field(User, "active", True)
    assert all(u.active is True for u in users(reader()))


def test_add_field_computed_from_the_old_state(shop_db, reader):
    """compute() sees the pre-update state even after an earlier rename in the same patch."""
    with Patch(shop_db) as patch:
        patch.rename_field("shopmodels.User", "name", "username")
        patch.add_field("shopmodels.User", "email",
                        policies.compute(lambda old: old.name + "@example.org"))
    for user in users(reader()):
        assert user.email == user.username + "@example.org"


def test_add_field_keeps_a_value_already_stored(shop_db, reader):
    """An instance that already has the field keeps its value unless told otherwise."""
    with shop_db.transaction() as conn:
        conn.root()["users"]["user1"].email = "kept@example.org"
    with Patch(shop_db) as patch:
        patch.add_field(User, "email", "new@example.org")
    conn = reader()
    assert conn.root()["users"]["user1"].email == "kept@example.org"
    assert conn.root()["users"]["user2"].email == "new@example.org"


def test_add_field_rejects_a_class_as_value():
    """Passing a class such as list is ambiguous, so add_field asks for factory() or constant()."""
    with pytest.raises(TypeError, match="factory"):
        AddField.of("shopmodels.User", "tags", list)


def test_factory_gives_each_instance_its_own_value(shop_db, reader):
    """factory(list) creates a fresh list per instance."""
    with Patch(shop_db) as patch:
        patch.add_field(User, "tags", policies.factory(list))
    stored = users(reader())
    stored[1].tags.append("x")
    assert stored[2].tags == []


def test_remove_field_drops_the_value(shop_db, reader):
    """remove_field deletes the attribute from every instance's stored state."""
    with Patch(shop_db) as patch:
        patch.remove_field(User, "legacy_flag")
    assert all("legacy_flag" not in u.__dict__ for u in users(reader()))


def test_structural_operations_reach_subclass_instances(shop_db, reader):
    """An operation on User also migrates Admin instances (a subclass)."""
    with Patch(shop_db) as patch:
        patch.add_field(User, "email", "x@example.org")
    admin = reader().root()["users"]["user0"]
    assert isinstance(admin, Admin)
    assert admin.email == "x@example.org"
    assert patch.report.migrated == {"shopmodels.Admin": 1, "shopmodels.User": 4}


def test_migrate_instances_applies_a_value_change(shop_db, reader):
    """A price stored as a number becomes a Money object, with an application-chosen currency."""

    class PriceToMoney(dsustore.MigrationPolicy):
        def __init__(self, currency):
            self.currency = currency

        def migrate(self, old, new, old_ns, new_ns):
            new.price = Money(old.price, self.currency)

    with Patch(shop_db) as patch:
        patch.migrate_instances(Product, PriceToMoney("EUR"))
    products = reader().root()["products"]
    assert products["p1"].price == Money(11.0, "EUR")


def test_new_is_an_instance_of_the_current_class(shop_db):
    """Policies get the object with its class's methods; old is the stored state only."""
    seen = []

    def policy(old, new, old_ns, new_ns):
        seen.append((new.greeting(), isinstance(new, User), old.name))

    with Patch(shop_db) as patch:
        patch.migrate_instances(User, policy)
    assert ("hello user1", True, "user1") in seen


def test_change_superclass_needs_values_for_the_new_base_fields(shop_db, unchanged, monkeypatch):
    """Instances of a class moved under a base with a required field fail validation without a policy."""
    NewNote = type("Note", (shopmodels.Audited,), {"__module__": "shopmodels", "__qualname__": "Note"})
    with shop_db.transaction() as conn:
        conn.root()["note"] = shopmodels.Note("hi")
    before = unchanged(shop_db)
    monkeypatch.setattr(shopmodels, "Note", NewNote)
    with pytest.raises(dsustore.ValidationError) as failed:
        with Patch(shop_db) as patch:
            patch.change_superclass("shopmodels.Note", shopmodels.Audited)
    assert "audited_by" in str(failed.value)
    before.check()
    with Patch(shop_db) as patch:
        patch.change_superclass("shopmodels.Note", shopmodels.Audited,
                                policy=policies.constant("system").for_field("audited_by"))
    conn = shop_db.open()
    assert conn.root()["note"].audited_by == "system"
    assert isinstance(conn.root()["note"], shopmodels.Audited)
    conn.close()


def test_change_superclass_refuses_when_the_code_disagrees(shop_db, unchanged):
    """Causality: the patch cannot claim a superclass the code's class does not have."""
    before = unchanged(shop_db)
    with pytest.raises(dsustore.OperationError, match="does not derive from"):
        with Patch(shop_db) as patch:
            patch.change_superclass(Product, shopmodels.Entity)
    before.check()


def test_add_class_runs_its_initializer_in_the_new_namespace(shop_db, reader):
    """add_class lets the patch set up class-level state (a container for the new class)."""

    def init(old, cls, old_ns, new_ns):
        from persistent.mapping import PersistentMapping
        new_ns.root["notes"] = PersistentMapping({"welcome": cls("first note")})

    with Patch(shop_db) as patch:
        patch.add_class(shopmodels.Note, initializer=init)
    assert reader().root()["notes"]["welcome"].text == "first note"


def test_remove_class_fails_while_instances_are_referenced(shop_db, unchanged):
    """remove_class is validated: a referenced instance of the removed class aborts the update."""
    before = unchanged(shop_db)
    with pytest.raises(dsustore.ValidationError) as failed:
        with Patch(shop_db) as patch:
            patch.remove_class("shopmodels.Session")
    assert "still reference instances of removed class shopmodels.Session" in str(failed.value)
    assert failed.value.failures[0].oids  # the referrer is named
    before.check()


def test_remove_class_passes_once_references_are_dropped(shop_db, reader, monkeypatch):
    """Dropping the container's references in the same patch makes the removal valid."""
    monkeypatch.delattr(shopmodels, "Session")

    def drop_sessions(old, new, old_ns, new_ns):
        if "sessions" in new:
            del new["sessions"]

    with Patch(shop_db) as patch:
        patch.migrate_instances("persistent.mapping.PersistentMapping", drop_sessions)
        patch.remove_class("shopmodels.Session")
    assert "sessions" not in reader().root()
    assert patch.report.unreferenced_removed == {"shopmodels.Session": 2}


def test_rename_class_rewrites_records_and_references(shop_db, reader, monkeypatch):
    """After rename_class the database loads with only the new class present, references included."""
    monkeypatch.setattr(shopmodels, "Customer", shopmodels.User, raising=False)
    renamed = type("Customer", (shopmodels.User,), {"__module__": "shopmodels", "__qualname__": "Customer"})
    monkeypatch.setattr(shopmodels, "Customer", renamed)
    with Patch(shop_db) as patch:
        patch.rename_class("shopmodels.User", "shopmodels.Customer")
    monkeypatch.delattr(shopmodels, "User")
    conn = reader()
    customers = list(conn.root()["users"].values())
    assert {type(c).__name__ for c in customers} == {"Customer", "Admin"}
    order_user = conn.root()["orders"][1].user
    assert type(order_user) is renamed and order_user.name == "user1"
    assert patch.report.references_rewritten >= 1
    for record in dsustore.mop.class_counts(shop_db.storage):
        assert record != "shopmodels.User"


def test_operations_are_data_with_a_plan_and_inverses(db):
    """A patch prints its plan before running and operations know their inverse."""
    patch = Patch(db).begin()
    patch.rename_field(User, "name", "username").add_field(User, "email", "x")
    assert patch.plan() == [
        "rename_field(shopmodels.User, 'name', 'username')",
        "add_field(shopmodels.User, 'email', constant('x'))",
    ]
    assert RenameField("a.B", "x", "y").reverse() == RenameField("a.B", "y", "x")
    assert AddField.of("a.B", "x", 1).reverse() == RemoveField("a.B", "x")
    assert RemoveField("a.B", "x").reverse() is None
    assert RenameClass("a.B", "c.D").reverse() == RenameClass("c.D", "a.B")
    patch.rollback()


def test_add_field_leaves_instances_that_have_it_unwritten(shop_db):
    """Every user has a name: nothing is changed or rewritten, and the report says they had it."""
    before = storage_image(shop_db)
    with Patch(shop_db) as patch:
        patch.add_field(User, "name", "nobody")
    assert patch.report.migrated == {}
    assert patch.report.unchanged == {"shopmodels.User": 4, "shopmodels.Admin": 1}
    assert patch.report.records_rewritten == 0
    assert storage_image(shop_db) == before


def serial_of(obj) -> bytes:
    obj._p_activate()
    return obj._p_serial


def test_remove_field_of_a_field_no_instance_has_changes_nothing(shop_db):
    """Removing a field nobody stores leaves every record as it was."""
    before = storage_image(shop_db)
    with Patch(shop_db) as patch:
        patch.remove_field(User, "nickname")
    assert patch.report.objects_migrated == 0 and patch.report.objects_unchanged == 5
    assert storage_image(shop_db) == before


def test_only_the_instances_an_operation_changes_are_rewritten(shop_db, reader):
    """One user already has the field: four are changed and rewritten, one is left as it was."""
    with shop_db.transaction() as conn:
        conn.root()["users"]["user1"].email = "kept@example.org"
    kept = serial_of(reader().root()["users"]["user1"])
    with Patch(shop_db) as patch:
        patch.add_field(User, "email", "new@example.org")
    assert patch.report.migrated == {"shopmodels.User": 3, "shopmodels.Admin": 1}
    assert patch.report.unchanged == {"shopmodels.User": 1}
    assert patch.report.records_rewritten == 4
    assert serial_of(reader().root()["users"]["user1"]) == kept


def test_a_policy_that_changes_nothing_rewrites_nothing(shop_db):
    """A policy may leave an instance as it was: its record is compared, not rewritten."""
    before = storage_image(shop_db)
    with Patch(shop_db) as patch:
        patch.migrate_instances(User, lambda old, new, old_ns, new_ns: None)
    assert patch.report.migrated == {} and patch.report.records_rewritten == 0
    assert storage_image(shop_db) == before


def test_rename_field_to_its_own_name_is_refused_when_recorded(db):
    """rename_field(C, "f", "f") could only fail its validation: it is refused at once."""
    patch = Patch(db).begin()
    with pytest.raises(dsustore.OperationError) as refused:
        patch.rename_field(User, "name", "name")
    assert refused.value.operation == "rename_field(shopmodels.User, 'name', 'name')"
    assert patch.plan() == []
    patch.rollback()


def test_the_old_view_shows_the_stored_state_whatever_operations_did_before(shop_db, reader):
    """A policy reading ``old`` sees the record as stored, even after an earlier operation of
    the stage changed a list in place, or a policy changed the object through the new namespace."""
    with shop_db.transaction() as conn:
        for user in conn.root()["users"].values():
            user.tags = ["a"]

    def grow(old, new, old_ns, new_ns):
        new.tags.append("b")
        if old.name == "user1":  # user2 is reached later: changed before the pass reads it
            user2 = new_ns.root["users"]["user2"]
            user2.tags = [*user2.tags, "from user1"]

    with Patch(shop_db) as patch:
        patch.migrate_instances(User, grow)
        patch.add_field(User, "count", policies.compute(lambda old: len(old.tags)))
        patch.add_field(User, "first", policies.compute(lambda old: old.tags[0]))
    users = reader().root()["users"]
    assert all(u.count == 1 and u.first == "a" for u in users.values())
    assert users["user1"].tags == ["a", "b"]
