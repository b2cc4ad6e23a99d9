"""The stale-code guard: a process whose code is older than the database does not write.

After an upgrade, a process still running the previous code (a second server, or
one that missed a live update) would write objects in the old shape into the
migrated database. The guard refuses that commit: a connection that is about to
write checks the migrations the database has applied against those its code
knows, and raises :class:`StaleCodeError` when the database is ahead. Reads are not
affected.

The check also marks the bookkeeping object and the write barrier as read-current,
so a write that was begun before an upgrade (or before its barrier was set) and
commits after it fails with a conflict (and is retried on the new state, where the
check refuses it or the new code runs it) instead of slipping in between. A write
that finds the barrier set waits for it to open (see :mod:`dsustore.runtime.barrier`).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ZODB.POSException import ConflictError
from ZODB.utils import z64

from ..engine.bookkeeping import ROOT_KEY
from ..errors import StaleCodeError
from ..runtime.barrier import barrier_state
from ..runtime.revisions import RevisionGraph
from ..runtime.scripts import load_scripts
from ..storage.transactions import is_dsustore

#: the guard of each guarded database
_guards: weakref.WeakKeyDictionary[Any, StaleCodeGuard] = weakref.WeakKeyDictionary()


class StaleCodeGuard:
    """Refuses commits from ``db``'s connections while the database has unknown migrations."""

    #: seconds a write waits at a held barrier before it gives up with a conflict (and is
    #: retried, to wait again)
    barrier_wait = 30.0
    #: seconds between two looks at a held barrier
    barrier_poll = 0.01

    def __init__(self, db: Any, revisions: Iterable[str]) -> None:
        self._db = weakref.ref(db)  # the database holds its guard, not the other way round
        self.known = frozenset(revisions)
        self.refused = 0
        #: how many writes found the barrier held and waited
        self.held = 0
        #: called with each connection at its transaction boundaries, in its thread (a
        #: live update matches each transaction's code to its snapshot with it)
        self.on_boundary: Callable[[Any], None] | None = None

    def allow(self, revisions: Iterable[str]) -> None:
        """The code now knows ``revisions`` (after a live update loaded it)."""
        self.known = frozenset(revisions)

    def check(self, conn: Any) -> None:
        """Raise :class:`StaleCodeError` if ``conn``'s database is ahead of the code."""
        root = conn.get(z64)
        bk = root.get(ROOT_KEY) if hasattr(root, "get") else None
        if bk is None:
            return
        unknown = set(bk.applied.keys()) - self.known
        if unknown:
            self.refused += 1
            raise StaleCodeError(
                f"the database has migration(s) {', '.join(sorted(unknown))} that this process's "
                "code does not know; it refuses to write old-shaped objects. Load the new code "
                "(restart or live-update) to write again",
                unknown=unknown, migration=min(unknown),
            )
        conn.readCurrent(bk)
        if bk.barrier is not None:
            conn.readCurrent(bk.barrier)

    def wait_at_barrier(self, conn: Any) -> str | None:
        """Before a write commits: if a migration holds the barrier, wait for it to open.

        Once it opens, the migration has committed (or given up): the barrier changed
        after this write's view was taken, so the commit conflicts and is retried on
        the new state. A barrier left by a migrator that is gone holds nothing.
        Returns why the write must not go on when waiting gave up (None: go on).
        """
        root = conn.get(z64)
        bk = root.get(ROOT_KEY) if hasattr(root, "get") else None
        barrier = getattr(bk, "barrier", None)
        if barrier is None or barrier.holder is None:
            return None
        db = conn.db()
        deadline = time.monotonic() + self.barrier_wait
        self.held += 1
        while True:
            state, holder = barrier_state(db)
            if state != "held":
                return None
            if time.monotonic() >= deadline:
                who = f"pid {holder.get('pid')} on host {holder.get('host')}" if holder else "?"
                return (f"a migration by {who} has held writes for {self.barrier_wait:.0f}s; "
                        "retry")
            time.sleep(self.barrier_poll)

    def uninstall(self) -> None:
        """Stop guarding (connections keep their class; they just stop checking)."""
        db = self._db()
        if db is not None:
            _guards.pop(db, None)


class _GuardedConnection:
    """Mixed into the database's connection class: checks the guard before writing."""

    def newTransaction(self, transaction: Any = None, sync: bool = True) -> None:  # noqa: N802
        conn: Any = self
        super().newTransaction(transaction, sync)  # type: ignore[misc]
        guard = _guards.get(conn.db())
        if guard is not None and guard.on_boundary is not None:
            guard.on_boundary(conn)

    def tpc_begin(self, transaction: Any) -> None:
        conn: Any = self
        guard = _guards.get(conn.db())
        guarded = guard is not None and not is_dsustore(transaction)  # not updates, locks
        gave_up = None
        if guard is not None and guarded:
            gave_up = guard.wait_at_barrier(conn)  # before the storage's commit lock is taken
        # then, so a refusal aborts the commit cleanly (the mixin's base is ZODB's Connection)
        super().tpc_begin(transaction)  # type: ignore[misc]
        if guard is not None and guarded:
            if gave_up:
                raise ConflictError(gave_up)
            guard.check(conn)


def guard_stale_code(db: Any, revisions: Iterable[str]) -> StaleCodeGuard:
    """Make every connection of ``db`` refuse to write once the database has migrations
    beyond ``revisions`` (the ones this process's code knows; see :func:`known_revisions`)."""
    guard = StaleCodeGuard(db, revisions)
    klass = db.klass
    if not issubclass(klass, _GuardedConnection):
        guarded = type(f"Guarded{klass.__name__}", (_GuardedConnection, klass), {})
        db.klass = guarded
        for pool in (db.pool, db.historical_pool):
            for conn in list(pool.all):
                if type(conn) is klass:
                    conn.__class__ = guarded
    _guards[db] = guard
    return guard


def guard_of(db: Any) -> StaleCodeGuard | None:
    """The guard of ``db``'s connections, if it has one."""
    return _guards.get(db)


def known_revisions(migrations_dir: str | Path, head: str | None = None) -> set[str]:
    """The revisions code with these migrations knows: all of them, or ``head`` and its ancestors."""
    return revisions_in(RevisionGraph(load_scripts(migrations_dir)), head)


def revisions_in(graph: RevisionGraph, head: str | None = None) -> set[str]:
    """The revisions of ``graph``: all of them, or ``head`` and its ancestors."""
    scripts = graph.history() if head is None else graph.upgrade_path((), head)
    return {script.revision for script in scripts}


__all__ = ["StaleCodeGuard", "guard_stale_code", "known_revisions", "revisions_in"]
