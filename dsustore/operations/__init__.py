"""The paper's Figure 2 as data (operations), Figure 4 (policies) and Figure 5 (validations).

An operation records what a patch will do to the stored instances of a class; a
policy computes the new state of one instance from the old; a validation checks the
new namespace against the old before the patch commits. :func:`render` writes an
operation as the line of Python that records it, :func:`draft_downgrade` the lines
that undo a list of them.
"""

from __future__ import annotations

from . import policies, validations
from .ops import (
                  AddClass,
                  AddField,
                  AddValidation,
                  ChangeSuperclass,
                  MigrateInstances,
                  Operation,
                  RemoveClass,
                  RemoveField,
                  RenameClass,
                  RenameField,
)
from .policies import FieldPolicy, MigrationPolicy
from .render import draft_downgrade, render
from .validations import Validation

__all__ = [
    "AddClass",
    "AddField",
    "AddValidation",
    "ChangeSuperclass",
    "FieldPolicy",
    "MigrateInstances",
    "MigrationPolicy",
    "Operation",
    "RemoveClass",
    "RemoveField",
    "RenameClass",
    "RenameField",
    "Validation",
    "draft_downgrade",
    "policies",
    "render",
    "validations",
]
