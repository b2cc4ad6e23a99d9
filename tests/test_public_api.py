"""The public surface: exactly the intended names, one error tree, every error's facts in JSON."""

from __future__ import annotations

import inspect
import json

import dsustore
from dsustore import errors

#: the public API, by group; a name added to or removed from dsustore.__all__ must be added
#: or removed here too
PUBLIC = {
    "patch": {"FieldPolicy", "MigrationPolicy", "Patch", "PatchReport", "Progress", "StageReport",
              "Validation", "ValidationFailure", "mop", "policies", "validations"},
    "migrations": {"MigrationLock", "MigrationResult", "UpgradeResult", "break_lock",
                   "current", "downgrade", "draft_downgrade", "edited_scripts", "ensure_current",
                   "import_failures", "lock_status", "migration_lock", "pending", "render",
                   "schema_drift", "stamp", "upgrade"},
    "snapshots": {"PackReport", "RestoreReport", "Snapshot", "delete_snapshot", "pack",
                  "prune_snapshots", "restore", "snapshot", "snapshots"},
    "live": {"CommitGate", "LiveUpdateResult", "LiveUpdater", "StaleCodeGuard", "guard_stale_code",
             "known_revisions"},
    "databases": {"open_db"},
}


def _error_classes() -> list[type]:
    return [obj for _, obj in inspect.getmembers(errors, inspect.isclass)
            if issubclass(obj, errors.DSUError)]


def test_exported_names_are_exactly_the_public_api():
    """__all__ is the groups above plus every error class, no more, no fewer, no duplicates."""
    intended = set().union(*PUBLIC.values()) | {cls.__name__ for cls in _error_classes()}
    assert len(dsustore.__all__) == len(set(dsustore.__all__))
    assert set(dsustore.__all__) == intended
    for name in dsustore.__all__:
        assert getattr(dsustore, name) is not None


def test_every_error_is_a_dsuerror_exported_from_dsustore():
    """One exception hierarchy, all of it importable from the package."""
    for cls in _error_classes():
        assert getattr(dsustore, cls.__name__) is cls
    exported = [getattr(dsustore, n) for n in dsustore.__all__ if n.endswith("Error")]
    assert all(issubclass(e, dsustore.DSUError) for e in exported)


def test_the_error_module_draws_the_whole_tree():
    """Every error class appears in the tree the errors module's docstring draws."""
    tree = [line.split("──")[-1].split()[0] for line in (errors.__doc__ or "").splitlines()
            if "──" in line]
    assert sorted(["DSUError", *tree]) == sorted(cls.__name__ for cls in _error_classes())


def test_every_error_carries_its_own_facts_in_json():
    """An error's own facts (holder, heads, pending...) are in facts(), and it is JSON."""
    samples = [
        errors.LockHeldError("held", holder={"owner": "h:1:x", "expires": 1.0}),
        errors.MultipleHeadsError("fork", heads=("a", "b")),
        errors.CycleError("loop", cycle=("a", "b")),
        errors.DatabaseBehindError("behind", pending=("0002",)),
        errors.DatabaseAheadError("ahead", unknown=("0009",)),
        errors.StaleCodeError("stale", unknown={"0003"}),
        errors.SnapshotConflictError("lost writes", transactions=3, objects=7),
        errors.CapacityError("too big", objects=9, capacity=4, setting="s", current=1,
                             needed=64),
        errors.UnknownClassError("typo", suggestions=("a.B",), class_name="a.C"),
        errors.DatabaseMissingError("none", path="/x/Data.fs"),
        errors.DatabaseDamagedError("torn", path="/x/Data.fs", position=110482, cut=148486),
        errors.PartialRunError("half", direction="downgrade", committed=("0005",),
                               failed="0002", pending=("0001",)),
    ]
    for err in samples:
        facts = json.loads(json.dumps(err.facts()))
        assert facts["error"] == type(err).__name__
        for name in type(err).fact_names:
            assert name in facts, (type(err).__name__, name)
        assert any(facts[name] for name in type(err).fact_names), type(err).__name__


def test_mop_exposes_the_papers_figure_3():
    """The required meta-object protocol is there under its snake_case names."""
    for name in ("read_class_definition", "create_class", "read_instance_variable",
                 "write_instance_variable", "all_instances", "clone_namespace",
                 "replace_namespace", "swap_objects"):
        assert callable(getattr(dsustore.mop, name))
