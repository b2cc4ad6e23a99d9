"""The pytest plugin, run by pytest itself (pytester) on small projects, as their users would."""

from __future__ import annotations

import textwrap

import pytest
import ZODB
from persistent.mapping import PersistentMapping

import shopmodels
from dsustore.testing import MigrationRunner, Ref, decode_state, differences, records

PYPROJECT = '''\
[tool.pytest.ini_options]
pythonpath = ["."]

[tool.dsustore]
migrations = "migrations"
'''

MODELS = '''\
import persistent


class Item(persistent.Persistent):
    def __init__(self, name, price=0):
        self.name = name
        self.price = price
'''

CONFTEST = '''\
import pytest
import ZODB
from persistent.mapping import PersistentMapping


@pytest.fixture
def dsustore_db():
    """Three items as release 1 stored them: a name, no price."""
    from plantshop.models import Item

    db = ZODB.DB(None)
    with db.transaction() as conn:
        items = {}
        for n in range(3):
            item = Item.__new__(Item)  # as release 1 stored it, whatever Item is now
            item.name = f"item {n}"
            items[f"i{n}"] = item
        conn.root()["items"] = PersistentMapping(items)
    yield db
    db.close()
'''


def script(revision: str, down: str | None, upgrade: str, downgrade: str | None = None) -> str:
    text = f'"""step {revision}"""\n\nrevision = {revision!r}\ndown_revision = {down!r}\n\n\n'
    text += "def upgrade(patch):\n" + textwrap.indent(textwrap.dedent(upgrade).strip(), "    ") + "\n"
    if downgrade is not None:
        text += "\n\ndef downgrade(patch):\n" + textwrap.indent(textwrap.dedent(downgrade).strip(),
                                                               "    ") + "\n"
    return text


ADD_PRICE = script("0001", None, 'patch.add_field("plantshop.models.Item", "price", 0)',
                   'patch.remove_field("plantshop.models.Item", "price")')


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with a package, a dsustore_db fixture in tests/conftest.py and one migration;
    the inner pytest loads the plugin by name, whether or not it is installed."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makefile(".toml", pyproject=PYPROJECT)
    (pytester.path / "plantshop").mkdir()
    (pytester.path / "plantshop" / "__init__.py").write_text("")
    (pytester.path / "plantshop" / "models.py").write_text(MODELS)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "conftest.py").write_text(CONFTEST)
    (pytester.path / "migrations").mkdir()
    (pytester.path / "migrations" / "0001_price.py").write_text(ADD_PRICE)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "dsustore.pytest_plugin", "-v", "-p", "no:cacheprovider", *args)


def test_dsustore_adds_the_four_builtin_tests_and_they_pass_on_sound_migrations(project):
    """pytest --dsustore collects test_single_head, test_upgrade, test_up_down_consistency and
    test_no_drift in tests/conftest.py, where they see its dsustore_db."""
    result = run(project, "--dsustore")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "tests/conftest.py::test_single_head PASSED*",
        "tests/conftest.py::test_upgrade PASSED*",
        "tests/conftest.py::test_up_down_consistency PASSED*",
        "tests/conftest.py::test_no_drift PASSED*",
    ])
    assert run(project).ret == pytest.ExitCode.NO_TESTS_COLLECTED  # nothing without --dsustore


def test_a_downgrade_that_forgets_something_fails_naming_the_step_and_the_object(project):
    """A downgrade that leaves the field its upgrade added fails test_up_down_consistency with
    the step, the object's oid and class, and the field."""
    (project.path / "migrations" / "0002_label.py").write_text(
        script("0002", "0001", 'patch.add_field("plantshop.models.Item", "label", "new")', "pass"))
    result = run(project, "--dsustore", "-k", "consistency")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*0002 (0002_label.py): its upgrade then its downgrade do not leave the records as they were:",
        "*0x* (plantshop.models.Item): field 'label' is now 'new', was absent",
    ])


def test_drift_fails_test_no_drift_with_the_lines_a_migration_needs(project):
    """The code declares a field no migration gives the stored items: test_no_drift fails and
    prints the operation to add."""
    (project.path / "plantshop" / "models.py").write_text(
        MODELS + "        self.stock = 0\n")
    result = run(project, "--dsustore", "-k", "drift")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*at the head the database is not in line with the code:",
        "*schema drift in 1 class(es) without a migration",
        '*patch.add_field("plantshop.models.Item", "stock", None)  # TODO value',
    ])


def test_a_forked_history_fails_test_single_head(project):
    """Two scripts on the same parent make two heads: test_single_head names them."""
    (project.path / "migrations" / "0002_a.py").write_text(script("0002", "0001", "pass", "pass"))
    (project.path / "migrations" / "0003_b.py").write_text(script("0003", "0001", "pass", "pass"))
    result = run(project, "--dsustore", "-k", "single_head")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the migrations have 2 heads, 0002, 0003*"])


def test_each_branch_of_a_fork_is_checked_up_and_down_where_it_can_be_undone_alone(project):
    """Two branches on one parent: the first is checked up and down before the second is
    applied; the second, whose downgrade to the parent would undo the first too, is named in
    a warning."""
    (project.path / "migrations" / "0002_a.py").write_text(script(
        "0002", "0001", 'patch.add_field("plantshop.models.Item", "a", 1)', "pass"))
    (project.path / "migrations" / "0003_b.py").write_text(script(
        "0003", "0001", "pass", "pass"))
    result = run(project, "--dsustore", "-k", "consistency")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*0002 (0002_a.py): its upgrade then its downgrade*"])
    (project.path / "migrations" / "0002_a.py").write_text(script(
        "0002", "0001", 'patch.add_field("plantshop.models.Item", "a", 1)',
        'patch.remove_field("plantshop.models.Item", "a")'))
    result = run(project, "--dsustore", "-k", "consistency")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*IrreversibleStepWarning: 0003 cannot be undone alone*"])


def test_a_failing_migration_fails_test_upgrade(project):
    """A migration that raises on the fixture's data fails test_upgrade with its error."""
    (project.path / "migrations" / "0002_boom.py").write_text(script(
        "0002", "0001", 'patch.add_field("plantshop.models.Item", "x", lambda old, new, o, n: 1 / 0)'))
    result = run(project, "--dsustore", "-k", "test_upgrade")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*PolicyError*ZeroDivisionError*"])


def test_a_step_without_downgrade_is_upgraded_and_named_in_a_warning(project):
    """A step with no downgrade() cannot be checked: it is applied, and a warning names it."""
    (project.path / "migrations" / "0002_oneway.py").write_text(
        script("0002", "0001", 'patch.remove_field("plantshop.models.Item", "price")'))
    (project.path / "plantshop" / "models.py").write_text(MODELS.replace(
        ", price=0):", "):").replace("        self.price = price\n", ""))
    result = run(project, "--dsustore")
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines(["*IrreversibleStepWarning: 0002 define no downgrade()*"])


def test_without_a_conftest_the_builtin_tests_use_an_empty_database(project):
    """No tests/conftest.py: the built-in tests are collected under the root and migrate an empty
    in-memory database."""
    (project.path / "tests" / "conftest.py").unlink()
    result = run(project, "--dsustore")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["dsustore::test_upgrade PASSED*"])


def test_the_migrations_folder_and_tests_path_come_from_the_ini_options(project):
    """dsustore_migrations and dsustore_tests_path in pytest's ini options win."""
    (project.path / "migrations").rename(project.path / "schema")
    (project.path / "tests" / "conftest.py").rename(project.path / "tests" / "fixtures.py")
    (project.path / "tests" / "conftest.py").write_text("from fixtures import dsustore_db  # noqa\n")
    project.makefile(".toml", pyproject=PYPROJECT.replace(
        'pythonpath = ["."]', 'pythonpath = [".", "tests"]\ndsustore_migrations = "schema"\n'
        'dsustore_tests_path = "tests/conftest.py"'))
    result = run(project, "--dsustore")
    result.assert_outcomes(passed=4)


USER_TEST = '''\
def test_0002_gives_each_item_a_label_from_its_name(dsustore_runner):
    dsustore_runner.up_to_before("0002")
    assert dsustore_runner.current() == ("0001",)
    assert all("label" not in item.fields for item in dsustore_runner.instances("plantshop.models.Item"))
    assert dsustore_runner.step_up() == "0002"
    labels = sorted(item.fields["label"] for item in dsustore_runner.instances("plantshop.models.Item"))
    assert labels == ["ITEM 0", "ITEM 1", "ITEM 2"]
    assert dsustore_runner.step_down() == "0002"
    assert dsustore_runner.current() == ("0001",)
'''


def test_the_runner_fixture_moves_between_revisions_and_reads_the_records(project):
    """A project's own test runs up to before a revision, one step up and down, and reads the
    items' decoded fields."""
    (project.path / "migrations" / "0002_label.py").write_text(script(
        "0002", "0001",
        'patch.add_field("plantshop.models.Item", "label", policies.compute(lambda old: old.name.upper()))',
        'patch.remove_field("plantshop.models.Item", "label")').replace(
        "revision =", "from dsustore import policies\n\nrevision =", 1))
    (project.path / "plantshop" / "models.py").write_text(MODELS + "        self.label = name.upper()\n")
    (project.path / "tests" / "test_label.py").write_text(USER_TEST)
    result = run(project, "--dsustore")
    result.assert_outcomes(passed=5)


def test_the_builtin_tests_can_be_imported_into_a_test_module(project):
    """Imported by name, the built-in tests run without --dsustore."""
    (project.path / "tests" / "test_migrations.py").write_text(
        "from dsustore.pytest_plugin import test_single_head, test_upgrade  # noqa: F401\n")
    result = run(project)
    result.assert_outcomes(passed=2)


# -- the helpers, directly --------------------------------------------------------------

def test_records_decode_states_without_importing_the_classes():
    """Records carry class names and states with references as oids; inline objects are named by
    their class, and the bookkeeping under the root is left out."""
    db = ZODB.DB(None)
    try:
        with db.transaction() as conn:
            user = shopmodels.User("ann")
            conn.root()["things"] = PersistentMapping({"ann": user, "money": shopmodels.Money(2.5, "EUR")})
            conn.root()["dsustore"] = PersistentMapping({"hidden": True})
        found = records(db)
        root = found["0x0"]
        assert set(root.fields["data"]) == {"things"}
        things = found[root.fields["data"]["things"].oid]
        assert things.class_name == "persistent.mapping.PersistentMapping"
        ann = found[things.fields["data"]["ann"].oid]
        assert (ann.class_name, ann.fields) == ("shopmodels.User", {
            "name": "ann", "password": "secret", "legacy_flag": True})
        money = things.fields["data"]["money"]
        assert type(money).dotted == "shopmodels.Money"
        things_oid = int(root.fields["data"]["things"].oid, 16).to_bytes(8, "big")
        assert money == decode_state(db.storage.load(things_oid)[0])["data"]["money"]
        assert money.state == {"amount": 2.5, "currency": "EUR"}
        assert len(found) == 3
    finally:
        db.close()


@pytest.fixture
def small_shop():
    """The tests' shop in an in-memory database."""
    db = ZODB.DB(None)
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    yield db
    db.close()


def test_differences_name_each_object_and_field_that_changed(small_shop):
    """differences() says which object changed and how, which became unreachable, which is new."""
    before = records(small_shop)
    with small_shop.transaction() as conn:
        user = conn.root()["users"]["user1"]
        user.password = "changed"
        del conn.root()["sessions"]["s0"]
        conn.root()["sessions"]["s9"] = shopmodels.Session(user)
    changed = differences(before, records(small_shop))
    assert any("(shopmodels.User): field 'password' was 'pw1', is now 'changed'" in line
               for line in changed)
    assert any("(shopmodels.Session) is no longer reachable" in line for line in changed)
    assert any("(shopmodels.Session) is new" in line for line in changed)
    assert isinstance(next(iter(records(small_shop)["0x0"].fields["data"].values())), Ref)


def test_the_runner_refuses_a_step_where_there_is_none(small_shop, tmp_path):
    """step_up at the head and step_down at the base say where the database is."""
    (tmp_path / "m").mkdir()
    runner = MigrationRunner(small_shop, tmp_path / "m")
    with pytest.raises(Exception, match="nothing to step up to: the database is at base"):
        runner.step_up()
    with pytest.raises(Exception, match="no single migration to step down from"):
        runner.step_down()
