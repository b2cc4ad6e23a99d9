"""Recovery: snapshots, named points a database can be restored to; restoring them; packing
that keeps them (see :mod:`.snapshots`)."""

from __future__ import annotations

from .snapshots import (
                        ENV_SNAPSHOTS,
                        PackReport,
                        RestoreReport,
                        Snapshot,
                        delete_snapshot,
                        get_snapshot,
                        pack,
                        restore,
                        snapshot,
                        snapshots,
)

__all__ = [
    "ENV_SNAPSHOTS",
    "PackReport",
    "RestoreReport",
    "Snapshot",
    "delete_snapshot",
    "get_snapshot",
    "pack",
    "restore",
    "snapshot",
    "snapshots",
]
