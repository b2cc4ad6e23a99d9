"""Live update: migrate the database a running process uses, then switch the process to the new code.

The sequence, all inside the running process:

1. the new code is loaded (``load_code`` imports it), holding the application for
   that moment only; from then on the updater's thread sees the new modules and
   every other thread the old ones (:mod:`dsustore.live.code`), so requests keep
   running the old code on the old state;
2. the pending migrations run as the stages of one patch in its own connection
   (one atomic commit for all of them), while the application keeps serving;
3. the commit gate closes: transactions in flight end, new ones wait; objects the
   application committed meanwhile are migrated too; the patch commits; cached
   objects of every connection are swapped to the new classes; the application
   switches to the new code (``on_switch``) and the stale-code guard learns the new
   revisions; the gate opens.

If anything fails before the commit, the process goes on with the old code and the
old data: ``sys.modules`` and ``sys.path`` are restored.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Patch, PatchReport, Progress
from ..engine.reports import Timeline
from ..errors import LiveUpdateError
from ..mop.swap import swap_live_objects
from ..runtime.history import applied_in, applied_revisions
from ..runtime.lock import DEFAULT_TTL
from ..runtime.runner import UpgradeResult, migrate, revision_graph
from ..storage.connections import is_private
from .code import CodeVersions
from .gate import CommitGate
from .stale import StaleCodeGuard, guard_of, guard_stale_code, revisions_in

log = logging.getLogger(__name__)

#: the share of the interpreter the migration pass may take from the application's threads
PASS_SHARE = 0.5
#: seconds between two hand-overs of the interpreter while the update runs (None: Python's)
SWITCH_INTERVAL: float | None = 0.001


@dataclass
class LiveUpdateResult:
    """What a live update did."""

    upgrade: UpgradeResult
    #: whether the process now runs the new code
    switched: bool
    #: how long the application's transactions were held while the new code was imported,
    #: and while the update committed, in seconds
    load_pause: float = 0.0
    commit_pause: float = 0.0
    #: what the update did when: loading the code, the passes, the catch-up rounds, the
    #: held commit, the swap and the switch
    phases: Timeline = field(default_factory=Timeline)

    @property
    def paused(self) -> float:
        """The longest time the application's transactions were held."""
        return max(self.load_pause, self.commit_pause)

    def as_dict(self) -> dict[str, Any]:
        return {"switched": self.switched, "paused": round(self.paused, 4),
                "load_pause": round(self.load_pause, 4), "commit_pause": round(self.commit_pause, 4),
                **self.upgrade.as_dict(), "phases": self.phases.as_dicts()}


class LiveUpdater:
    """Applies pending migrations to ``db`` while its process keeps serving, then switches code.

    ``load_code()`` imports the new version of the application into ``sys.modules``;
    ``on_switch()`` is called inside the gate once the database is migrated, for the
    application to start using the new modules. ``gate`` is the
    :class:`CommitGate` the application scopes its transactions with; ``guard``
    (optional) is the process's :class:`StaleCodeGuard`, told the new revisions.
    """

    def __init__(
        self,
        db: Any,
        migrations_dir: str | Path,
        *,
        load_code: Callable[[], Any],
        gate: CommitGate | None = None,
        guard: StaleCodeGuard | None = None,
        on_switch: Callable[[], Any] | None = None,
        progress: Callable[[Progress], None] | None = None,
        lock_wait: float = 0,
        lock_ttl: float = DEFAULT_TTL,
        pass_share: float = PASS_SHARE,
        switch_interval: float | None = SWITCH_INTERVAL,
    ) -> None:
        if not 0 < pass_share <= 1:
            raise ValueError("pass_share is a fraction of the interpreter: above 0, at most 1")
        self.db = db
        self.migrations_dir = migrations_dir
        self.load_code = load_code
        self.gate = gate or CommitGate()
        self.guard = guard
        self.on_switch = on_switch
        self.progress = progress
        self.lock_wait = lock_wait
        self.lock_ttl = lock_ttl
        self.pass_share = pass_share
        self.switch_interval = switch_interval
        self._running = threading.Lock()

    def upgrade(self, target: str = "head") -> LiveUpdateResult:
        """Load the new code, migrate up to ``target`` in one transaction, and switch.

        ``head`` (the default, as for :func:`dsustore.upgrade`) refuses a forked history;
        ``heads`` applies every branch."""
        if not self._running.acquire(blocking=False):
            raise LiveUpdateError("a live update is already running in this process")
        try:
            return self._upgrade(target)
        finally:
            self._running.release()

    def _upgrade(self, target: str) -> LiveUpdateResult:
        # writes of the old code must wait at the barrier, then be refused or retried
        guard = self.guard or guard_of(self.db) or guard_stale_code(self.db, applied_revisions(self.db))
        saved_modules = dict(sys.modules)
        saved_path = list(sys.path)
        timeline = Timeline()
        with timeline.phase("load new code"), self.gate.closed():
            # nothing may unpickle while sys.modules changes
            try:
                self.load_code()
            except Exception as err:
                CodeVersions(saved_modules, saved_path).rollback()
                raise LiveUpdateError(
                    f"the new code does not load: {type(err).__name__}: {err}") from err
            versions = CodeVersions(saved_modules, saved_path)
            # the generation of the new code: a transaction runs it once its snapshot
            # holds the migrated data (see _Matching), and every one that begins after
            # the switch
            new_generation = self.gate.generation + 1
            versions.install(lambda: _runs_new(self.gate, new_generation, versions.switched))
        load_pause = self.gate.last_closed
        log.info("live update: new code loaded (%d modules replaced); migrating", len(versions.old))
        committed = False
        known: set[str] = set()
        reports: list[PatchReport] = []  # the committed patch's, for its phases

        def switch(patch: Patch | None, report: PatchReport | None) -> None:
            nonlocal committed
            committed = True
            if report is not None:
                reports.append(report)
            generation = self.gate.advance()
            versions.switch()
            guard.allow(known)
            if self.on_switch is not None:
                self.on_switch()

            def retire() -> None:
                versions.retire()
                guard.on_boundary = None

            self.gate.when_retired(generation, retire)

        def configure(patch: Patch) -> None:
            patch.isolated_caches = True  # the application's threads run the old code meanwhile
            patch.after_commit(switch)

        guard.on_boundary = _Matching(self.gate, new_generation, lambda: known)
        try:
            with versions.new_code_here(), _interpreter_shared(self.switch_interval):
                graph = revision_graph(self.migrations_dir)
                # worked out now: the switch runs while the application is held
                head = None if target in ("head", "heads") else target
                known = revisions_in(graph, head)
                result = migrate(self.db, self.migrations_dir, "upgrade", target, graph=graph,
                                 lock_wait=self.lock_wait, lock_ttl=self.lock_ttl,
                                 transaction_per_migration=False,
                                 progress=_Pacer(self.pass_share, self.progress),
                                 on_conflict="retry", configure=configure)
                if not committed:  # nothing to migrate: switch to the new code all the same
                    swap_live_objects(self.db)
                    switch(None, None)
        except BaseException:
            if not committed:
                guard.on_boundary = None
                versions.rollback()
                log.exception("live update failed; the process continues on the old code and data")
            raise
        for report in reports:
            timeline.extend(report.phases)
        commit_pause = sum(phase.duration for phase in timeline if phase.name == "writes held")
        log.info("live update done: %d migration(s); application held %.3fs to load code, "
                 "writes held %.3fs at the commit", len(result.migrations), load_pause, commit_pause)
        return LiveUpdateResult(result, switched=True, load_pause=load_pause,
                                commit_pause=commit_pause, phases=timeline)


class _Pacer:
    """A progress callback that keeps the pass to ``share`` of the interpreter: after each
    batch it sleeps (holding nothing) for as long as the request threads are owed."""

    def __init__(self, share: float, progress: Callable[[Progress], None] | None) -> None:
        self.share = share
        self.progress = progress
        self._last: float | None = None

    def __call__(self, progress: Progress) -> None:
        now = time.monotonic()
        if self._last is not None and self.share < 1:
            time.sleep((now - self._last) * (1 - self.share) / self.share)
        self._last = time.monotonic()
        if self.progress is not None:
            self.progress(progress)


@contextmanager
def _interpreter_shared(interval: float | None) -> Iterator[None]:
    """Hand the interpreter between threads every ``interval`` seconds for the block, so a
    request thread waits less for the pass to let go of it (Python's default is 5 ms)."""
    if interval is None:
        yield
        return
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, before))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _runs_new(gate: CommitGate, target: int, switched: bool) -> bool:
    """Whether the calling thread runs the new code: its transaction is of the new
    generation, or it runs none and the process has switched."""
    mine = gate.thread_generation()
    return switched if mine is None else mine >= target


class _Matching:
    """At each transaction boundary of a connection while a live update switches: the
    thread's transaction runs the code that matches the data its snapshot holds.

    A transaction may enter the gate before the switch and take its snapshot (begin)
    after the commit: it then sees migrated data, and must run the new code.
    """

    def __init__(self, gate: CommitGate, target: int, revisions: Callable[[], set[str]]) -> None:
        self.gate = gate
        self.target = target
        self.revisions = revisions

    def __call__(self, conn: Any) -> None:
        if not is_private(conn):
            self.gate.settle_thread(lambda mine: self._decide(mine, conn))

    def _decide(self, mine: int, conn: Any) -> int | None:
        revisions = self.revisions()
        if mine < self.target and revisions and revisions <= applied_in(conn):
            return self.target
        return None


__all__ = ["LiveUpdateResult", "LiveUpdater"]
