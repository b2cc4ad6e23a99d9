"""Recovery: snapshots, named points a database can be restored to; restoring them; retention;
packing that keeps them (see :mod:`.snapshots`)."""

from __future__ import annotations

from .snapshots import (
    ENV_SNAPSHOTS,
    PackReport,
    RestoreReport,
    Snapshot,
    delete_snapshot,
    get_snapshot,
    pack,
    prune_snapshots,
    restore,
    snapshot,
    snapshots,
    unique_name,
)

__all__ = [
    "ENV_SNAPSHOTS",
    "PackReport",
    "RestoreReport",
    "Snapshot",
    "delete_snapshot",
    "get_snapshot",
    "pack",
    "prune_snapshots",
    "restore",
    "snapshot",
    "snapshots",
    "unique_name",
]
