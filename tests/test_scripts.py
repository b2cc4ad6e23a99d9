"""Loading, fingerprinting and writing migration scripts (no database involved)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from dsustore.errors import (
    DSUError,
    DuplicateRevisionError,
    MigrationScriptError,
    MissingParentError,
    MultipleHeadsError,
    RevisionError,
)
from dsustore.runtime.authoring import next_revision_id, write_merge, write_script
from dsustore.runtime.revisions import RevisionGraph
from dsustore.runtime.scripts import load_scripts, script_checksum


def put(folder: Path, filename: str, source: str) -> Path:
    """Write a source file into ``folder`` (dedented when it starts with a newline)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if source.startswith("\n"):
        source = textwrap.dedent(source).lstrip("\n")
    path.write_text(source, encoding="utf-8")
    return path


def migration(
    revision: str, down: object = None, *, doc: str = "Do a thing.", downgrade: bool = True
) -> str:
    """The source of a well-formed migration script."""
    lines = [
        f'"""{doc}"""',
        f"revision = {revision!r}",
        f"down_revision = {down!r}",
        "def upgrade(patch):",
        f"    patch.append(('up', {revision!r}))",
    ]
    if downgrade:
        lines += ["def downgrade(patch):", f"    patch.append(('down', {revision!r}))"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "migrations"
    path.mkdir()
    return path


# -- loading -------------------------------------------------------------------


def test_load_scripts_reads_declarations_message_and_doc(folder: Path) -> None:
    """A script's revision, parents, message, full docstring and path are read."""
    put(folder, "0001_init.py", migration("0001", doc="Create the root.\n\nLonger text."))
    put(folder, "0002_email.py", migration("0002", "0001", doc="Add email."))
    first, second = load_scripts(folder)
    assert first.revision == "0001" and first.down_revisions == () and first.is_base
    assert first.message == "Create the root."
    assert first.doc == "Create the root.\n\nLonger text."
    assert first.path == folder / "0001_init.py"
    assert second.down_revisions == ("0001",)
    assert second.label == "0002 (0002_email.py)"


def test_loaded_script_upgrade_and_downgrade_call_the_module_functions(folder: Path) -> None:
    """``Script.upgrade``/``downgrade`` run the functions the file defines."""
    put(folder, "0001_init.py", migration("0001"))
    (script,) = load_scripts(folder)
    calls: list[tuple[str, str]] = []
    script.upgrade(calls)
    script.downgrade(calls)
    assert calls == [("up", "0001"), ("down", "0001")]
    assert script.has_downgrade


def test_script_without_downgrade_says_so_and_refuses_to_downgrade(folder: Path) -> None:
    """A script with no ``downgrade`` has ``has_downgrade`` False and raises if asked."""
    put(folder, "0001_init.py", migration("0001", downgrade=False))
    (script,) = load_scripts(folder)
    assert not script.has_downgrade
    with pytest.raises(MigrationScriptError, match="0001_init.py defines no downgrade"):
        script.downgrade([])


def test_merge_down_revision_tuple_lists_every_parent(folder: Path) -> None:
    """A tuple ``down_revision`` becomes several parents and marks a merge."""
    put(folder, "0003_merge.py", migration("0003", ("0001", "0002")))
    (script,) = load_scripts(folder)
    assert script.down_revisions == ("0001", "0002")
    assert script.is_merge


def test_load_scripts_skips_private_hidden_and_non_python_files(folder: Path) -> None:
    """Files starting with ``_`` or ``.``, non-.py files and folders are not scripts."""
    put(folder, "0001_init.py", migration("0001"))
    put(folder, "_helpers.py", "raise RuntimeError('not a migration')\n")
    put(folder, "__init__.py", "raise RuntimeError('not a migration')\n")
    put(folder, ".0002_hidden.py", "raise RuntimeError('not a migration')\n")
    put(folder, "README.md", "# notes\n")
    put(folder, "0002_draft.py.txt", "raise RuntimeError\n")
    (folder / "0003_dir.py").mkdir()
    assert [s.revision for s in load_scripts(folder)] == ["0001"]


def test_load_scripts_returns_scripts_sorted_by_file_name(folder: Path) -> None:
    """Scripts come back in file-name order whatever order the folder lists them."""
    for name, rev in [("0003_c.py", "c"), ("0001_a.py", "a"), ("0002_b.py", "b")]:
        put(folder, name, migration(rev))
    assert [s.revision for s in load_scripts(folder)] == ["a", "b", "c"]


def test_same_file_name_in_two_folders_loads_two_distinct_modules(tmp_path: Path) -> None:
    """Scripts are imported under a folder-specific name, so folders never clash."""
    one = put(tmp_path / "one", "0001_init.py", migration("one"))
    two = put(tmp_path / "two", "0001_init.py", migration("two"))
    (a,) = load_scripts(one.parent)
    (b,) = load_scripts(two.parent)
    assert a.module is not b.module
    assert a.module.__name__ != b.module.__name__
    assert a.module.__name__.startswith("dsustore_migrations.")
    assert (a.module.revision, b.module.revision) == ("one", "two")


def test_loading_does_not_put_the_folder_on_sys_path(folder: Path) -> None:
    """Scripts load by file path; ``sys.path`` is left untouched."""
    put(folder, "0001_init.py", migration("0001"))
    before = list(sys.path)
    (script,) = load_scripts(folder)
    assert sys.path == before
    assert sys.modules[script.module.__name__] is script.module
    assert script.module.__file__ == str(folder / "0001_init.py")


def test_missing_folder_is_reported(tmp_path: Path) -> None:
    """Loading from a folder that does not exist names the folder."""
    with pytest.raises(MigrationScriptError, match="does not exist"):
        load_scripts(tmp_path / "nowhere")


# -- broken scripts ----------------------------------------------------------------


def test_syntax_error_message_names_file_and_line(folder: Path) -> None:
    """A syntax error becomes a MigrationScriptError naming the file and the line."""
    put(folder, "0002_bad.py", '''
        """Broken."""
        revision = "0002"
        down_revision = None
        def upgrade(patch)
            pass
        ''')
    with pytest.raises(MigrationScriptError) as info:
        load_scripts(folder)
    message = str(info.value)
    assert "0002_bad.py" in message and "line 4" in message
    assert "\n" not in message
    assert isinstance(info.value.__cause__, SyntaxError)


def test_missing_revision_is_reported(folder: Path) -> None:
    """A script without ``revision`` is refused, naming the file."""
    put(folder, "0001_init.py", '''
        down_revision = None
        def upgrade(patch): pass
        ''')
    expected = r"0001_init\.py declares no module-level 'revision'"
    with pytest.raises(MigrationScriptError, match=expected):
        load_scripts(folder)


def test_missing_upgrade_is_reported_with_file_and_revision(folder: Path) -> None:
    """A script without an ``upgrade`` function is refused, naming file and revision."""
    put(folder, "0001_init.py", '''
        revision = "0001"
        down_revision = None
        ''')
    with pytest.raises(MigrationScriptError) as info:
        load_scripts(folder)
    assert info.value.migration == "0001"
    assert str(info.value) == "migration 0001: 0001_init.py defines no upgrade(patch) function"


def test_missing_down_revision_is_reported(folder: Path) -> None:
    """A script must say ``down_revision = None`` explicitly to be a base."""
    put(folder, "0001_init.py", '''
        revision = "0001"
        def upgrade(patch): pass
        ''')
    expected = r"0001_init\.py declares no 'down_revision'"
    with pytest.raises(MigrationScriptError, match=expected) as info:
        load_scripts(folder)
    assert info.value.migration == "0001"


@pytest.mark.parametrize(
    ("declaration", "complaint"),
    [
        ("revision = 1\ndown_revision = None", "revision must be a non-empty string"),
        ("revision = ''\ndown_revision = None", "revision must be a non-empty string"),
        ("revision = 'head'\ndown_revision = None", "reserved name"),
        ("revision = '0002'\ndown_revision = 1", "down_revision must be None"),
        ("revision = '0002'\ndown_revision = ('0001', 2)", "down_revision must be a non-empty"),
        ("revision = '0002'\ndown_revision = ('0001', '0001')", "lists a revision twice"),
    ],
)
def test_malformed_declarations_are_refused(
    folder: Path, declaration: str, complaint: str
) -> None:
    """Ids that are not usable strings, and odd parent lists, are refused by file."""
    put(folder, "0002_x.py", f"{declaration}\ndef upgrade(patch): pass\n")
    with pytest.raises(MigrationScriptError, match=complaint) as info:
        load_scripts(folder)
    assert "0002_x.py" in str(info.value)


def test_exception_while_importing_script_is_reported_with_cause(folder: Path) -> None:
    """A script that raises at import is reported by file, with the cause chained."""
    put(folder, "0001_init.py", "import no_such_module_for_dsustore_tests\n")
    expected = r"importing 0001_init\.py failed: ModuleNotFoundError"
    with pytest.raises(MigrationScriptError, match=expected) as info:
        load_scripts(folder)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_migration_script_error_is_a_dsu_error() -> None:
    """MigrationScriptError belongs to the dsustore error family."""
    assert issubclass(MigrationScriptError, DSUError)


# -- checksums -------------------------------------------------------------------

ORIGINAL = '''
"""Add email."""

revision = "0002"
down_revision = "0001"


def upgrade(patch):
    """Give every user an email."""
    patch.add_field("app.User", "email", default="")
'''


def test_checksum_ignores_formatting_and_comments() -> None:
    """Reformatting and comments leave the checksum unchanged."""
    reformatted = '''
"""Add email."""
# a comment
revision = '0002'; down_revision = '0001'
def upgrade(patch):
    """Give every user an email."""
    patch.add_field(  # inline comment
        'app.User',
        'email',
        default='',
    )
'''
    assert script_checksum(reformatted) == script_checksum(ORIGINAL)


def test_checksum_ignores_docstring_edits() -> None:
    """Editing or removing module and function docstrings leaves the checksum unchanged."""
    edited = ORIGINAL.replace("Add email.", "Add an email field to users.\n\nMore detail.")
    removed = ORIGINAL.replace('    """Give every user an email."""\n', "")
    assert script_checksum(edited) == script_checksum(ORIGINAL)
    assert script_checksum(removed) == script_checksum(ORIGINAL)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('default=""', 'default="?"'),
        ('"email"', '"mail"'),
        ('down_revision = "0001"', 'down_revision = "0000"'),
        ("def upgrade(patch):", "def upgrade(p):"),
    ],
)
def test_checksum_changes_when_code_changes(old: str, new: str) -> None:
    """Any change to the code itself changes the checksum."""
    assert script_checksum(ORIGINAL.replace(old, new)) != script_checksum(ORIGINAL)


def test_loaded_script_carries_checksum_of_its_source(folder: Path) -> None:
    """``Script.checksum`` is ``script_checksum`` of the file's source."""
    path = put(folder, "0002_email.py", ORIGINAL)
    (script,) = load_scripts(folder)
    assert script.checksum == script_checksum(path.read_text())
    assert len(script.checksum) == 64


# -- writing new scripts ------------------------------------------------------------


def test_write_script_starts_numbering_at_0001(folder: Path) -> None:
    """The first script of an empty folder is revision 0001 with no parent."""
    path = write_script(folder, message="Create the root")
    assert path.name == "0001_create_the_root.py"
    (script,) = load_scripts(folder)
    assert (script.revision, script.down_revisions) == ("0001", ())
    assert script.message == "Create the root"


def test_write_script_numbers_after_highest_numeric_revision(folder: Path) -> None:
    """A new id is one above the highest numeric id, zero-padded to four digits."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0007_b.py", migration("0007", "0001"))
    path = write_script(folder, message="Next one")
    assert path.name == "0008_next_one.py"


def test_write_script_goes_on_top_of_the_current_head(folder: Path) -> None:
    """Without ``down_revision`` the new script's parent is the folder's head."""
    first = write_script(folder, message="One")
    write_script(folder, message="Two")
    write_script(folder, message="Three")
    scripts = {s.revision: s for s in load_scripts(folder)}
    assert first.name == "0001_one.py"
    assert scripts["0002"].down_revisions == ("0001",)
    assert scripts["0003"].down_revisions == ("0002",)
    assert RevisionGraph(scripts.values()).head() == "0003"


def test_write_script_uses_random_hex_when_ids_are_not_numeric(folder: Path) -> None:
    """In a folder of non-numeric ids the new id is a short random hex string."""
    put(folder, "a_init.py", migration("ae1f"))
    path = write_script(folder, message="More")
    revision = path.name.split("_", 1)[0]
    assert revision != "ae1f" and len(revision) == 12
    int(revision, 16)
    new = RevisionGraph(load_scripts(folder)).get(revision)
    assert new.down_revisions == ("ae1f",)


def test_next_revision_id_counts_past_four_digits() -> None:
    """Numbering keeps going past 9999 and ignores non-numeric ids."""
    assert next_revision_id(["9999", "abc"]) == "10000"
    assert next_revision_id([]) == "0001"


def test_written_script_runs_its_bodies(folder: Path) -> None:
    """The upgrade and downgrade bodies given are what the loaded script runs."""
    write_script(
        folder,
        message='Quote """ and backslash \\ survive',
        body_upgrade="""
            patch.append("up")
            patch.append("again")
        """,
        body_downgrade='patch.append("down")',
    )
    (script,) = load_scripts(folder)
    calls: list[str] = []
    script.upgrade(calls)
    script.downgrade(calls)
    assert calls == ["up", "again", "down"]
    assert script.message == 'Quote """ and backslash \\ survive'


def test_write_script_without_downgrade_body_writes_no_downgrade(folder: Path) -> None:
    """``body_downgrade=None`` leaves the script without a downgrade function."""
    write_script(folder, message="One way", body_downgrade=None)
    (script,) = load_scripts(folder)
    assert not script.has_downgrade


def test_write_script_can_write_a_merge(folder: Path) -> None:
    """A tuple ``down_revision`` writes a merge of those revisions."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0002_b.py", migration("0002", "0001"))
    put(folder, "0003_c.py", migration("0003", "0001"))
    write_script(folder, message="Merge", down_revision=("0002", "0003"))
    graph = RevisionGraph(load_scripts(folder))
    assert graph.head() == "0004"
    assert graph.get("0004").down_revisions == ("0002", "0003")


def test_write_script_with_several_heads_needs_a_down_revision(folder: Path) -> None:
    """With several heads the parent must be named; nothing is written otherwise."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0002_b.py", migration("0002", "0001"))
    put(folder, "0003_c.py", migration("0003", "0001"))
    with pytest.raises(MultipleHeadsError):
        write_script(folder, message="Ambiguous")
    assert len(list(folder.glob("*.py"))) == 3


def test_write_merge_joins_every_head_by_default(folder: Path) -> None:
    """A merge without revisions named lists every head, so the history has one head again."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0002_b.py", migration("0002", "0001"))
    put(folder, "0003_c.py", migration("0003", "0001"))
    path = write_merge(folder, message="Join the branches")
    graph = RevisionGraph(load_scripts(folder))
    assert graph.heads() == ("0004",) and path.name == "0004_join_the_branches.py"
    assert graph.get("0004").down_revisions == ("0002", "0003")


def test_write_merge_takes_named_revisions_and_prefixes(folder: Path) -> None:
    """Named revisions (or unique prefixes) are merged, in the order given."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0002_b.py", migration("aaa1", "0001"))
    put(folder, "0003_c.py", migration("bbb1", "0001"))
    put(folder, "0004_d.py", migration("ccc1", "0001"))
    write_merge(folder, message="Two of three", revisions=["bbb", "aaa1"], revision="m1")
    graph = RevisionGraph(load_scripts(folder))
    assert graph.get("m1").down_revisions == ("bbb1", "aaa1")
    assert set(graph.heads()) == {"ccc1", "m1"}


def test_write_merge_refuses_what_is_not_a_fork(folder: Path) -> None:
    """One head, or a revision already below another, is nothing to merge; nothing is written."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0002_b.py", migration("0002", "0001"))
    with pytest.raises(RevisionError, match="nothing to merge: 0002 is named"):
        write_merge(folder, message="Nothing")
    with pytest.raises(RevisionError, match="0001 is already an ancestor of 0002"):
        write_merge(folder, message="Below", revisions=["0001", "0002"])
    assert len(list(folder.glob("*.py"))) == 2


def test_the_several_heads_error_names_the_next_commands(folder: Path) -> None:
    """Refusing a fork says how to go on: merge it, or upgrade every head on purpose."""
    put(folder, "0001_a.py", migration("0001"))
    put(folder, "0002_b.py", migration("0002", "0001"))
    put(folder, "0003_c.py", migration("0003", "0001"))
    with pytest.raises(MultipleHeadsError) as refused:
        RevisionGraph(load_scripts(folder)).head()
    assert refused.value.heads == ("0002", "0003")
    assert "dsustore merge" in str(refused.value) and "dsustore upgrade heads" in str(refused.value)


def test_write_script_refuses_existing_revision(folder: Path) -> None:
    """An explicit revision id that already exists is refused, naming its file."""
    put(folder, "0001_a.py", migration("0001"))
    with pytest.raises(DuplicateRevisionError, match=r"already exists in 0001_a\.py"):
        write_script(folder, message="Again", revision="0001")


def test_write_script_refuses_unknown_down_revision(folder: Path) -> None:
    """An explicit parent that no script declares is refused."""
    with pytest.raises(MissingParentError, match="'0042'"):
        write_script(folder, message="Orphan", down_revision="0042")
    assert not list(folder.iterdir())


def test_write_script_refuses_malformed_down_revisions(folder: Path) -> None:
    """Repeated or unusable parent ids are refused before anything is written."""
    put(folder, "0001_a.py", migration("0001"))
    with pytest.raises(MigrationScriptError, match="twice"):
        write_script(folder, message="Twice", down_revision=("0001", "0001"))
    with pytest.raises(MigrationScriptError, match="reserved"):
        write_script(folder, message="Reserved", down_revision="head")
    assert [p.name for p in folder.iterdir()] == ["0001_a.py"]


def test_import_failure_message_stays_on_one_line(folder: Path) -> None:
    """A multi-line exception raised by a script is reported on one line."""
    put(folder, "0001_init.py", "raise RuntimeError('first\\nsecond')\n")
    with pytest.raises(MigrationScriptError) as info:
        load_scripts(folder)
    assert str(info.value) == "importing 0001_init.py failed: RuntimeError: first"


def test_write_script_refuses_a_body_that_does_not_compile(folder: Path) -> None:
    """A body with a syntax error is reported and no file is written."""
    with pytest.raises(MigrationScriptError, match="would not compile"):
        write_script(folder, message="Broken", body_upgrade="patch.(")
    assert not list(folder.iterdir())


def test_write_script_needs_a_message(folder: Path) -> None:
    """An empty message is refused."""
    with pytest.raises(MigrationScriptError, match="needs a message"):
        write_script(folder, message="   ")
