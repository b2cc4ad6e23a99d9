"""The engine: a patch of DSU operations, its pass over the records, its catch-up and commit.

A :class:`Patch` records operations and runs them when it commits: one streaming
pass over the stored records per stage (:mod:`.migration_pass`), the validations,
a catch-up of what the application committed meanwhile, and one commit that makes
the new state visible to every connection at once (:mod:`.patch`).
"""

from __future__ import annotations

from .capacity import check_lock_capacity, lock_capacity
from .patch import Patch
from .reports import Figures, PatchReport, Progress, StageReport

__all__ = ["Figures", "Patch", "PatchReport", "Progress", "StageReport", "check_lock_capacity",
           "lock_capacity"]
