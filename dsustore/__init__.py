"""dsustore: atomic, validated, live upgrades of persistent object graphs stored in ZODB.

A reflection-based dynamic software update over ZODB: a :class:`Patch` records DSU
operations, runs them with migration policies in its own transaction, checks system
and application validations, and commits all of it at once or nothing. Migration
scripts run from a folder with :func:`upgrade`; :func:`snapshot` and :func:`restore`
undo an update; :class:`LiveUpdater` applies one inside a running process.

The package is layered, bottom to top: ``storage`` (one adapter per storage) ←
``mop`` (the paper's meta-object protocol) ← ``operations`` (operations, policies,
validations) ← ``engine`` (the patch) ← ``recovery`` (snapshots) ← ``runtime`` (scripts,
revisions, runner, lock) ← ``live`` ← ``commands`` ← ``cli``.
"""

from __future__ import annotations

from . import mop
from .engine import Patch, PatchReport, Progress, StageReport
from .errors import (
    AmbiguousRevisionError,
    CapacityError,
    ClassResolutionError,
    CycleError,
    DatabaseAheadError,
    DatabaseBehindError,
    DatabaseDamagedError,
    DatabaseLockedError,
    DatabaseMissingError,
    DatabaseOpenError,
    DSUError,
    DuplicateRevisionError,
    GateTimeoutError,
    LiveUpdateError,
    LockHeldError,
    LockLostError,
    MigrationError,
    MigrationScriptError,
    MissingDowngradeError,
    MissingParentError,
    MultipleHeadsError,
    NoDatabaseConfiguredError,
    OperationError,
    PartialRunError,
    PatchStateError,
    PolicyError,
    ReadOnlyStateError,
    RevisionError,
    SnapshotConflictError,
    SnapshotError,
    StaleCodeError,
    UnknownClassError,
    UnknownRevisionError,
    UnknownSnapshotError,
    UpdateConflictError,
    ValidationError,
    ValidationFailure,
)
from .live import CommitGate, LiveUpdater, LiveUpdateResult, StaleCodeGuard, guard_stale_code, known_revisions
from .operations import FieldPolicy, MigrationPolicy, Validation, policies, validations
from .recovery import PackReport, RestoreReport, Snapshot, delete_snapshot, pack, restore, snapshot, snapshots
from .runtime import (
    Drift,
    MigrationLock,
    MigrationResult,
    UpgradeResult,
    current,
    downgrade,
    draft_operations,
    edited_scripts,
    ensure_current,
    migration_lock,
    pending,
    schema_drift,
    stamp,
    upgrade,
)
from .storage.uri import open_db

__all__ = [
    # the patch: the paper's operations, policies and validations (Figures 2, 4, 5)
    "FieldPolicy",
    "MigrationPolicy",
    "Patch",
    "PatchReport",
    "Progress",
    "StageReport",
    "Validation",
    "ValidationFailure",
    "mop",
    "policies",
    "validations",
    # migration scripts
    "Drift",
    "MigrationLock",
    "MigrationResult",
    "UpgradeResult",
    "current",
    "downgrade",
    "draft_operations",
    "edited_scripts",
    "ensure_current",
    "migration_lock",
    "pending",
    "schema_drift",
    "stamp",
    "upgrade",
    # snapshots
    "PackReport",
    "RestoreReport",
    "Snapshot",
    "delete_snapshot",
    "pack",
    "restore",
    "snapshot",
    "snapshots",
    # live update
    "CommitGate",
    "LiveUpdateResult",
    "LiveUpdater",
    "StaleCodeGuard",
    "guard_stale_code",
    "known_revisions",
    # databases
    "open_db",
    # errors (the tree is drawn in dsustore.errors)
    "AmbiguousRevisionError",
    "CapacityError",
    "ClassResolutionError",
    "CycleError",
    "DSUError",
    "DatabaseAheadError",
    "DatabaseBehindError",
    "DatabaseDamagedError",
    "DatabaseLockedError",
    "DatabaseMissingError",
    "DatabaseOpenError",
    "DuplicateRevisionError",
    "GateTimeoutError",
    "LiveUpdateError",
    "LockHeldError",
    "LockLostError",
    "MigrationError",
    "MigrationScriptError",
    "MissingDowngradeError",
    "MissingParentError",
    "MultipleHeadsError",
    "NoDatabaseConfiguredError",
    "OperationError",
    "PartialRunError",
    "PatchStateError",
    "PolicyError",
    "ReadOnlyStateError",
    "RevisionError",
    "SnapshotConflictError",
    "SnapshotError",
    "StaleCodeError",
    "UnknownClassError",
    "UnknownRevisionError",
    "UnknownSnapshotError",
    "UpdateConflictError",
    "ValidationError",
]
