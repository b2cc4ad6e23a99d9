"""Live update of a running sample_app server: its admin endpoint's work.

``POST /admin/upgrade`` with ``Authorization: Bearer TOKEN`` and ``{"release": N}``
loads release N's code into the running process and applies the pending
migrations with :class:`dsustore.LiveUpdater`, while the server keeps answering.
Requests are scoped by the update's commit gate, so they wait only while the
update commits; the stale-code guard keeps this process from writing old-shaped
objects if another process upgraded the database first.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import threading
from typing import Any

import dsustore
from sample_app import releases

log = logging.getLogger("sample_app.live")


def load_release(n: int) -> None:
    """Import every module of release ``n``'s ``sampleshop``, so all of it is swapped at once."""
    package = releases.activate(n)
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{releases.PACKAGE}."):
        importlib.import_module(info.name)


class UpdateRunningError(dsustore.LiveUpdateError):
    """A live update asked for while another one runs: the caller's conflict, not a failure."""


class LiveUpdates:
    """The live-update machinery of one server process: gate, guard and updater."""

    def __init__(self, db: Any, release: int) -> None:
        self.db = db
        self.release = release
        self.gate = dsustore.CommitGate()
        self.guard = dsustore.guard_stale_code(
            db, dsustore.known_revisions(releases.MIGRATIONS, releases.revision(release)))
        self._lock = threading.Lock()

    def upgrade(self, release: int) -> dict[str, Any]:
        """Move the running process and its database to ``release``; the result as JSON."""
        if not self._lock.acquire(blocking=False):
            raise UpdateRunningError("a live update is already running")
        try:
            updater = dsustore.LiveUpdater(
                self.db, releases.MIGRATIONS, load_code=lambda: load_release(release),
                gate=self.gate, guard=self.guard)
            result = updater.upgrade(releases.revision(release))
            self.release = release
            log.warning("live update to release %d done: %s", release, result.upgrade.revisions)
            return dict(result.as_dict(), release=release, migrated=result.upgrade.migrated)
        finally:
            self._lock.release()
