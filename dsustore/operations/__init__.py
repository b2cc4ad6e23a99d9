"""The paper's Figure 2 as data (operations), Figure 4 (policies) and Figure 5 (validations).

An operation records what a patch will do to the stored instances of a class; a
policy computes the new state of one instance from the old; a validation checks the
new namespace against the old before the patch commits.
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
    "policies",
    "validations",
]
