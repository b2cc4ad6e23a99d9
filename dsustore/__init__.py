"""dsustore: atomic, validated, live upgrades of persistent object graphs stored in ZODB.

A reflection-based dynamic software update over ZODB: a :class:`Patch` records DSU
operations, runs them with migration policies in its own transaction, checks system
and application validations, and commits all of it at once or nothing.
"""

from __future__ import annotations

from . import mop, policies
from ._engine import Progress
from .errors import (
    ClassResolutionError,
    DSUError,
    OperationError,
    PatchStateError,
    PolicyError,
    ReadOnlyStateError,
    UpdateConflictError,
    ValidationError,
    ValidationFailure,
)
from .patch import Patch, PatchReport
from .policies import FieldPolicy, MigrationPolicy
from .validations import Validation

__all__ = [
    "ClassResolutionError",
    "DSUError",
    "FieldPolicy",
    "MigrationPolicy",
    "OperationError",
    "Patch",
    "PatchReport",
    "PatchStateError",
    "PolicyError",
    "Progress",
    "ReadOnlyStateError",
    "UpdateConflictError",
    "Validation",
    "ValidationError",
    "ValidationFailure",
    "mop",
    "policies",
]
