"""The revision graph: validation, heads, targets and upgrade/downgrade paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsustore.errors import (
    AmbiguousRevisionError,
    CycleError,
    DSUError,
    DuplicateRevisionError,
    MissingDowngradeError,
    MissingParentError,
    MultipleHeadsError,
    RevisionError,
    UnknownRevisionError,
)
from dsustore.runtime.revisions import RevisionGraph
from dsustore.runtime.scripts import Script, load_scripts

Spec = tuple[str, str, object]  # (file name, revision, down_revision)
Build = Callable[..., RevisionGraph]


def source(revision: str, down: object, *, downgrade: bool = True) -> str:
    """A minimal migration script declaring ``revision`` on top of ``down``."""
    text = f'"""Migration {revision}."""\nrevision = {revision!r}\ndown_revision = {down!r}\n'
    text += "def upgrade(patch):\n    pass\n"
    if downgrade:
        text += "def downgrade(patch):\n    pass\n"
    return text


@pytest.fixture
def build(tmp_path: Path) -> Build:
    """Write scripts into a fresh migrations folder and return their graph."""
    counter = iter(range(1_000_000))

    def build(*specs: Spec, without_downgrade: Sequence[str] = ()) -> RevisionGraph:
        folder = tmp_path / f"migrations{next(counter)}"
        folder.mkdir()
        for filename, revision, down in specs:
            text = source(revision, down, downgrade=revision not in without_downgrade)
            (folder / filename).write_text(text)
        return RevisionGraph(load_scripts(folder))

    return build


LINEAR: tuple[Spec, ...] = (
    ("0001_a.py", "0001", None),
    ("0002_b.py", "0002", "0001"),
    ("0003_c.py", "0003", "0002"),
)

# base -> left, right -> merge; file names sort the merge before its parents.
DIAMOND: tuple[Spec, ...] = (
    ("1_base.py", "base1", None),
    ("2_merge.py", "merge", ("left", "right")),
    ("3_right.py", "right", "base1"),
    ("4_left.py", "left", "base1"),
)

# base -> a1 -> a2 and base -> b1 (two heads)
BRANCHED: tuple[Spec, ...] = (
    ("1_base.py", "base1", None),
    ("2_a1.py", "a1", "base1"),
    ("3_a2.py", "a2", "a1"),
    ("4_b1.py", "b1", "base1"),
)


def revs(scripts: Sequence[Script]) -> list[str]:
    return [s.revision for s in scripts]


# -- shape and validation ------------------------------------------------------------


def test_linear_history_runs_from_base_to_head(build: Build) -> None:
    """A chain's history, head, heads and bases follow its down_revisions."""
    graph = build(*LINEAR)
    assert revs(graph.history()) == ["0001", "0002", "0003"]
    assert graph.head() == "0003"
    assert graph.heads() == ("0003",)
    assert graph.bases() == ("0001",)
    assert len(graph) == 3 and "0002" in graph and "0009" not in graph


def test_empty_graph_has_no_head_and_nothing_to_run() -> None:
    """No scripts: no head, and upgrading to head runs nothing."""
    graph = RevisionGraph([])
    assert graph.head() is None and graph.heads() == () and graph.history() == []
    assert graph.upgrade_path(set()) == []


def test_merge_revision_runs_after_both_parents(build: Build) -> None:
    """A merge comes after every parent even when its file name sorts first."""
    graph = build(*DIAMOND)
    order = revs(graph.upgrade_path(set()))
    assert sorted(order) == ["base1", "left", "merge", "right"]
    assert order[0] == "base1" and order[-1] == "merge"
    assert graph.head() == "merge"
    assert revs(graph.history()) == order


def test_multiple_heads_are_reported_by_name(build: Build) -> None:
    """Asking for the single head of a branched graph names every head and its file."""
    graph = build(*BRANCHED)
    assert graph.heads() == ("a2", "b1")
    with pytest.raises(MultipleHeadsError) as info:
        graph.head()
    assert info.value.heads == ("a2", "b1")
    assert "a2 (3_a2.py)" in str(info.value) and "b1 (4_b1.py)" in str(info.value)
    with pytest.raises(MultipleHeadsError):
        graph.upgrade_path(set(), "head")


def test_cycle_is_reported_at_construction(build: Build) -> None:
    """Scripts pointing down to each other in a loop are refused, naming the loop."""
    with pytest.raises(CycleError) as info:
        build(
            ("0001_a.py", "0001", None),
            ("0002_b.py", "0002", ("0001", "0004")),
            ("0003_c.py", "0003", "0002"),
            ("0004_d.py", "0004", "0003"),
        )
    assert set(info.value.cycle) == {"0002", "0003", "0004"}
    message = str(info.value)
    assert "cycle" in message and "0002 (0002_b.py)" in message and "0004 (0004_d.py)" in message
    assert "\n" not in message


def test_revision_pointing_down_to_itself_is_a_cycle(build: Build) -> None:
    """A script whose down_revision is its own id is a cycle of one."""
    with pytest.raises(CycleError) as info:
        build(("0001_a.py", "0001", "0001"))
    assert info.value.cycle == ("0001",)


def test_missing_parent_is_reported_with_file_and_revision(build: Build) -> None:
    """A down_revision naming no known script is refused, naming file and revision."""
    with pytest.raises(MissingParentError) as info:
        build(("0001_a.py", "0001", None), ("0002_b.py", "0002", ("0001", "0042")))
    assert info.value.migration == "0002"
    assert str(info.value) == (
        "migration 0002: 0002_b.py: down_revision '0042' names no known revision"
    )


def test_duplicate_revision_ids_are_reported_with_both_files(build: Build) -> None:
    """Two scripts declaring one id are refused, naming both files."""
    with pytest.raises(DuplicateRevisionError) as info:
        build(("0001_a.py", "0001", None), ("0001_b.py", "0001", None))
    assert info.value.migration == "0001"
    assert "0001_a.py" in str(info.value) and "0001_b.py" in str(info.value)


def test_revision_errors_belong_to_the_dsu_error_family() -> None:
    """Every revision error is a RevisionError and a DSUError."""
    for cls in (
        AmbiguousRevisionError,
        CycleError,
        DuplicateRevisionError,
        MissingDowngradeError,
        MissingParentError,
        MultipleHeadsError,
        UnknownRevisionError,
    ):
        assert issubclass(cls, RevisionError) and issubclass(cls, DSUError)


def test_get_returns_script_and_refuses_unknown_ids(build: Build) -> None:
    """``get`` finds a script by exact id and raises for an unknown one."""
    graph = build(*LINEAR)
    assert graph.get("0002").path.name == "0002_b.py"
    with pytest.raises(UnknownRevisionError, match="'000'"):
        graph.get("000")


# -- targets ---------------------------------------------------------------------


def test_resolve_symbolic_targets(build: Build) -> None:
    """``head``, ``heads`` and ``base`` resolve to revision tuples (base is empty)."""
    graph = build(*BRANCHED)
    assert graph.resolve("heads") == ("a2", "b1")
    assert graph.resolve("base") == ()
    assert build(*LINEAR).resolve("head") == ("0003",)


def test_resolve_full_id_and_unique_prefix(build: Build) -> None:
    """A full id or a prefix matching one id resolves to that id."""
    graph = build(
        ("a.py", "ab12cd", None), ("b.py", "ab99ef", "ab12cd"), ("c.py", "ab", "ab99ef")
    )
    assert graph.resolve("ab12cd") == ("ab12cd",)
    assert graph.resolve("ab1") == ("ab12cd",)
    assert graph.resolve("ab") == ("ab",)


def test_resolve_refuses_ambiguous_prefix(build: Build) -> None:
    """A prefix matching several ids is refused, listing them."""
    graph = build(("a.py", "ab12", None), ("b.py", "ab34", "ab12"))
    with pytest.raises(AmbiguousRevisionError, match=r"ab12 \(a\.py\), ab34 \(b\.py\)"):
        graph.resolve("ab")


def test_resolve_refuses_unknown_target(build: Build) -> None:
    """A target matching nothing raises UnknownRevisionError naming it."""
    with pytest.raises(UnknownRevisionError, match="'zzz'"):
        build(*LINEAR).resolve("zzz")


def test_resolve_relative_to_head_and_to_a_revision(build: Build) -> None:
    """``head-N`` and ``<rev>+N`` walk down and up a straight line of revisions."""
    graph = build(*LINEAR)
    assert graph.resolve("head-1") == ("0002",)
    assert graph.resolve("head-3") == ()
    assert graph.resolve("0001+2") == ("0003",)
    assert graph.resolve("base+1") == ("0001",)


def test_resolve_relative_to_the_current_revision(build: Build) -> None:
    """``+N`` and ``-N`` count from the current head of the applied revisions."""
    graph = build(*LINEAR)
    assert graph.resolve("+1", {"0001"}) == ("0002",)
    assert graph.resolve("+1", set()) == ("0001",)
    assert graph.resolve("-1", {"0001", "0002"}) == ("0001",)
    assert graph.resolve("-1", {"0001"}) == ()


def test_relative_targets_refuse_to_leave_the_line(build: Build) -> None:
    """Going past head or base, across a branch, or with no current state is refused."""
    linear = build(*LINEAR)
    with pytest.raises(UnknownRevisionError, match="beyond the head"):
        linear.resolve("head+1")
    with pytest.raises(UnknownRevisionError, match="below the base"):
        linear.resolve("head-4")
    with pytest.raises(UnknownRevisionError, match="current revision"):
        linear.resolve("+1")
    with pytest.raises(UnknownRevisionError, match="branch point"):
        build(*DIAMOND).resolve("head-1")
    with pytest.raises(UnknownRevisionError, match="branch point"):
        build(*BRANCHED).resolve("base1+1")


# -- upgrade paths -----------------------------------------------------------------


def test_upgrade_path_skips_applied_revisions(build: Build) -> None:
    """Revisions already applied are not run again."""
    graph = build(*LINEAR)
    assert revs(graph.upgrade_path({"0001"})) == ["0002", "0003"]
    assert graph.upgrade_path({"0001", "0002", "0003"}) == []


def test_upgrade_path_to_a_target_runs_only_its_ancestors(build: Build) -> None:
    """Upgrading to a revision runs it and its missing ancestors, nothing else."""
    graph = build(*BRANCHED)
    assert revs(graph.upgrade_path(set(), "a2")) == ["base1", "a1", "a2"]
    assert revs(graph.upgrade_path({"base1", "a1", "a2"}, "heads")) == ["b1"]
    assert graph.upgrade_path({"base1", "a1"}, "base1") == []


def test_upgrade_path_to_heads_runs_every_branch(build: Build) -> None:
    """``heads`` runs every branch, parents before children."""
    order = revs(build(*BRANCHED).upgrade_path(set(), "heads"))
    assert sorted(order) == ["a1", "a2", "b1", "base1"]
    assert order.index("a1") < order.index("a2")


def test_upgrade_path_refuses_applied_revision_without_script(build: Build) -> None:
    """An applied revision that no script declares is reported."""
    with pytest.raises(UnknownRevisionError, match="'0099'.*no script"):
        build(*LINEAR).upgrade_path({"0001", "0099"})


# -- downgrade paths ---------------------------------------------------------------


def test_downgrade_path_undoes_children_first_down_to_target(build: Build) -> None:
    """Downgrading undoes newer revisions first and keeps the target."""
    graph = build(*LINEAR)
    applied = {"0001", "0002", "0003"}
    assert revs(graph.downgrade_path(applied, "0001")) == ["0003", "0002"]
    assert revs(graph.downgrade_path(applied, "-1")) == ["0003"]
    assert graph.downgrade_path(applied, "head") == []


def test_downgrade_to_base_undoes_everything(build: Build) -> None:
    """``base`` undoes every applied revision, merges before their parents."""
    graph = build(*DIAMOND)
    order = revs(graph.downgrade_path({"base1", "left", "right", "merge"}, "base"))
    assert order[0] == "merge" and order[-1] == "base1"
    assert sorted(order) == ["base1", "left", "merge", "right"]


def test_downgrade_on_one_branch_leaves_the_other(build: Build) -> None:
    """Downgrading to a revision undoes only its descendants."""
    graph = build(*BRANCHED)
    assert revs(graph.downgrade_path({"base1", "a1", "a2", "b1"}, "a1")) == ["a2"]
    merge = build(*DIAMOND)
    assert revs(merge.downgrade_path({"base1", "left", "right", "merge"}, "left")) == ["merge"]


def test_downgrade_path_refuses_scripts_without_downgrade(build: Build) -> None:
    """A path through scripts lacking ``downgrade`` is refused, naming all of them."""
    graph = build(*LINEAR, without_downgrade=("0002", "0003"))
    applied = {"0001", "0002", "0003"}
    with pytest.raises(MissingDowngradeError) as info:
        graph.downgrade_path(applied, "base")
    message = str(info.value)
    assert "0003 (0003_c.py), 0002 (0002_b.py) define no downgrade()" in message
    assert info.value.migration == "0003"
    assert graph.downgrade_path({"0001"}, "base")[0].revision == "0001"


def test_downgrade_to_a_revision_that_is_not_applied_is_refused(build: Build) -> None:
    """The target of a downgrade must be applied."""
    with pytest.raises(RevisionError, match=r"0003 \(0003_c\.py\): it is not applied"):
        build(*LINEAR).downgrade_path({"0001"}, "0003")


# -- current heads -----------------------------------------------------------------


def test_current_heads_are_applied_revisions_without_applied_children(build: Build) -> None:
    """The current heads are the tips of what has been applied."""
    graph = build(*BRANCHED)
    assert graph.current_heads(set()) == ()
    assert graph.current_heads({"base1"}) == ("base1",)
    assert graph.current_heads({"base1", "a1", "b1"}) == ("a1", "b1")
    assert build(*DIAMOND).current_heads({"base1", "left", "right", "merge"}) == ("merge",)


# -- properties --------------------------------------------------------------------


def fake_script(revision: str, parents: tuple[str, ...]) -> Script:
    """An in-memory script, for graphs too many to write to disk."""
    return Script(
        revision=revision,
        down_revisions=parents,
        message="",
        doc="",
        path=Path(f"{revision}.py"),
        module=ModuleType(revision),
        has_downgrade=True,
        checksum="",
    )


@st.composite
def dags(draw: st.DrawFn) -> list[Script]:
    """Random DAGs (each node's parents are earlier nodes), maybe merged to one head, shuffled."""
    size = draw(st.integers(min_value=1, max_value=15))
    scripts = []
    for i in range(size):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        scripts.append(fake_script(f"r{i}", tuple(f"r{p}" for p in sorted(parents))))
    if draw(st.booleans()):
        parents = {p for s in scripts for p in s.down_revisions}
        heads = tuple(s.revision for s in scripts if s.revision not in parents)
        scripts.append(fake_script("merge", heads))
    return draw(st.permutations(scripts))


@settings(max_examples=200, deadline=None)
@given(dags())
def test_upgrade_path_from_nothing_lists_every_revision_once_parents_first(
    scripts: list[Script],
) -> None:
    """For any DAG, upgrading from nothing runs each revision once, parents before children."""
    graph = RevisionGraph(scripts)
    target = "head" if len(graph.heads()) == 1 else "heads"
    order = revs(graph.upgrade_path(set(), target))
    assert sorted(order) == sorted(s.revision for s in scripts)
    position = {rev: i for i, rev in enumerate(order)}
    for script in scripts:
        for parent in script.down_revisions:
            assert position[parent] < position[script.revision]
    undo = revs(graph.downgrade_path(set(order), "base"))
    assert undo == order[::-1]
