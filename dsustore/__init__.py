"""dsustore: atomic, validated, live upgrades of persistent object graphs stored in ZODB.

A reflection-based dynamic software update over ZODB: a :class:`Patch` records DSU
operations, runs them with migration policies in its own transaction, checks system
and application validations, and commits all of it at once or nothing.
"""

from __future__ import annotations

from . import mop, policies
from ._capacity import CapacityError
from ._engine import Progress
from ._gate import CommitGate, GateTimeoutError
from ._live import LiveUpdateError, LiveUpdater, LiveUpdateResult
from ._lock import LockHeldError, LockLostError, migration_lock
from ._revisions import RevisionError
from ._runner import (
    DatabaseAheadError,
    DatabaseBehindError,
    MigrationError,
    MigrationResult,
    UpgradeResult,
    current,
    downgrade,
    edited_scripts,
    ensure_current,
    pending,
    stamp,
    upgrade,
)
from ._schema import Drift, draft_operations, schema_drift
from ._scripts import MigrationScriptError
from ._stale import StaleCodeError, StaleCodeGuard, guard_stale_code, known_revisions
from ._snapshots import (
    RestoreReport,
    Snapshot,
    SnapshotConflictError,
    SnapshotError,
    UnknownSnapshotError,
    delete_snapshot,
    pack,
    restore,
    snapshot,
    snapshots,
)
from ._uri import open_db
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
from .patch import Patch, PatchReport, StageReport
from .policies import FieldPolicy, MigrationPolicy
from .validations import Validation

__all__ = [
    "CapacityError",
    "ClassResolutionError",
    "CommitGate",
    "DSUError",
    "DatabaseAheadError",
    "DatabaseBehindError",
    "Drift",
    "FieldPolicy",
    "GateTimeoutError",
    "LiveUpdateError",
    "LiveUpdateResult",
    "LiveUpdater",
    "LockHeldError",
    "LockLostError",
    "MigrationError",
    "MigrationPolicy",
    "MigrationResult",
    "MigrationScriptError",
    "OperationError",
    "Patch",
    "PatchReport",
    "PatchStateError",
    "PolicyError",
    "Progress",
    "ReadOnlyStateError",
    "RestoreReport",
    "RevisionError",
    "Snapshot",
    "SnapshotConflictError",
    "SnapshotError",
    "StageReport",
    "StaleCodeError",
    "StaleCodeGuard",
    "UnknownSnapshotError",
    "UpdateConflictError",
    "UpgradeResult",
    "Validation",
    "ValidationError",
    "ValidationFailure",
    "current",
    "delete_snapshot",
    "downgrade",
    "draft_operations",
    "edited_scripts",
    "ensure_current",
    "guard_stale_code",
    "known_revisions",
    "migration_lock",
    "mop",
    "open_db",
    "pack",
    "pending",
    "policies",
    "restore",
    "schema_drift",
    "snapshot",
    "snapshots",
    "stamp",
    "upgrade",
]
