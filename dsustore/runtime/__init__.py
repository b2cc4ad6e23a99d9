"""The migrations side: scripts, the revision graph, the runner, the lock, the recorded history
and schema, and the project's settings.

A migrations folder holds versioned scripts (:mod:`.scripts`) that form a revision
graph (:mod:`.revisions`); the runner (:mod:`.runner`) applies them to a database
under its migration lock (:mod:`.lock`), records each one (:mod:`.history`) and the
schema of the stored classes (:mod:`.schema`), taking a snapshot first.
"""

from __future__ import annotations

from .lock import MigrationLock, break_lock, lock_status, migration_lock
from .runner import (
                     MigrationResult,
                     UpgradeResult,
                     current,
                     downgrade,
                     edited_scripts,
                     ensure_current,
                     migrate,
                     pending,
                     revision_graph,
                     stamp,
                     unknown_revisions,
                     upgrade,
)
from .schema import import_failures, schema_drift

__all__ = [
    "MigrationLock",
    "MigrationResult",
    "UpgradeResult",
    "break_lock",
    "current",
    "downgrade",
    "edited_scripts",
    "ensure_current",
    "import_failures",
    "lock_status",
    "migrate",
    "migration_lock",
    "pending",
    "revision_graph",
    "schema_drift",
    "stamp",
    "unknown_revisions",
    "upgrade",
]
