"""The public surface: exactly the intended names, and one error root."""

from __future__ import annotations

import dsustore


def test_exported_names_are_exactly_the_public_api():
    """__all__ lists every public name and each one exists."""
    assert set(dsustore.__all__) >= {
        "Patch", "PatchReport", "MigrationPolicy", "Validation", "DSUError", "policies", "mop",
        "upgrade", "downgrade", "ensure_current", "snapshot", "snapshots", "restore",
    }
    for name in dsustore.__all__:
        assert getattr(dsustore, name) is not None
    assert not [n for n in dsustore.__all__ if n.startswith("_")]


def test_every_exported_error_derives_from_dsuerror():
    """One exception hierarchy: every exported error is a DSUError."""
    errors = [getattr(dsustore, n) for n in dsustore.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(e, dsustore.DSUError) for e in errors)


def test_mop_exposes_the_papers_figure_3():
    """The required meta-object protocol is there under its snake_case names."""
    for name in ("read_class_definition", "create_class", "read_instance_variable",
                 "write_instance_variable", "all_instances", "clone_namespace",
                 "replace_namespace", "swap_objects"):
        assert callable(getattr(dsustore.mop, name))
