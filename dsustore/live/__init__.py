"""Live update: migrate the database a running process serves and switch it to the new code.

:class:`LiveUpdater` runs the update; :class:`CommitGate` holds the application's
transactions for the moment of the commit; :func:`guard_stale_code` keeps a process
whose code is older than the database from writing to it.
"""

from __future__ import annotations

from .gate import CommitGate
from .stale import StaleCodeGuard, guard_stale_code, known_revisions
from .updater import LiveUpdater, LiveUpdateResult

__all__ = ["CommitGate", "LiveUpdateResult", "LiveUpdater", "StaleCodeGuard", "guard_stale_code",
           "known_revisions"]
