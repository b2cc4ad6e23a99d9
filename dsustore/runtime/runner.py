"""Running migration scripts against a database.

By default each migration is its own transaction (Alembic's
``transaction_per_migration``): the script's operations, its bookkeeping record and
the recorded schema commit together or not at all. A failing migration raises with
its id and leaves the database as it was before that migration; migrations before
it in the same run stay applied and recorded. When at least one did, the run raises
:class:`~dsustore.errors.PartialRunError` naming what committed, what failed and
what was not run (the failure is its ``__cause__``); a failure of the run's first
migration raises as it is.

``upgrade()`` goes to ``head`` by default: a forked history (several heads) is
refused with :class:`~dsustore.errors.MultipleHeadsError` until a merge revision
joins it, or the caller asks for ``heads`` on purpose.

With ``transaction_per_migration=False`` the pending migrations run as the stages
of one patch: each sees what the earlier ones built, and one commit applies all of
them or none. A live update uses this, so the running application goes from the
old code and data to the new in one step.

Runs that write hold the database's migration lock (see :mod:`dsustore.runtime.lock`), so
two processes upgrading at once apply each migration exactly once. A run with
nothing to do takes no lock and writes nothing.

Dry runs take no lock and write nothing. They run every pending migration, in
order, as the stages of one patch that is then aborted, so each migration sees the
data as the earlier pending ones would leave it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..engine import Patch, PatchReport, Progress
from ..engine.bookkeeping import bookkeeping
from ..errors import DatabaseAheadError, DatabaseBehindError, DSUError, MigrationError, PartialRunError
from ..recovery import Snapshot, delete_snapshot, prune_snapshots, snapshot, unique_name
from ..storage import adapter_for
from ..storage.connections import private_connection, reading
from ..storage.transactions import mark
from .barrier import writes_held
from .checking import check_before_running
from .history import (
    applied_records,
    applied_revisions,
    record_applied,
    record_tid_after,
    record_unapplied,
    transaction_description,
)
from .lock import DEFAULT_TTL, MigrationLock, migration_lock
from .revisions import RevisionGraph
from .schema import record_schema
from .scripts import Script, load_scripts

log = logging.getLogger(__name__)

Direction = Literal["upgrade", "downgrade"]


@dataclass
class MigrationResult:
    """One migration run (or dry-run) and the report of its patch."""

    revision: str
    message: str
    direction: Direction
    report: PatchReport

    def as_dict(self) -> dict[str, Any]:
        return {"revision": self.revision, "message": self.message,
                "direction": self.direction, **self.report.as_dict()}


@dataclass
class UpgradeResult:
    """What a run did: the migrations in the order run, and the revisions they moved."""

    direction: Direction
    dry_run: bool
    migrations: list[MigrationResult] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    #: the snapshot taken before the run changed anything (None when nothing ran)
    snapshot: Snapshot | None = None

    @property
    def revisions(self) -> list[str]:
        """The revisions applied (or undone) by this run, in order."""
        return [m.revision for m in self.migrations]

    @property
    def reports(self) -> list[PatchReport]:
        return [m.report for m in self.migrations]

    @property
    def migrated(self) -> dict[str, int]:
        """Objects migrated per class, summed over the run."""
        total: dict[str, int] = {}
        for m in self.migrations:
            for name, count in m.report.migrated.items():
                total[name] = total.get(name, 0) + count
        return total

    def as_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "dry_run": self.dry_run,
                "revisions": self.revisions, "edited": list(self.edited),
                "snapshot": self.snapshot.as_dict() if self.snapshot else None,
                "migrations": [m.as_dict() for m in self.migrations]}


# -- queries -----------------------------------------------------------------------

def revision_graph(migrations_dir: str | Path) -> RevisionGraph:
    """The revision graph of the scripts in ``migrations_dir``."""
    return RevisionGraph(load_scripts(migrations_dir))


def current(db: Any) -> tuple[str, ...]:
    """The current heads: applied revisions no other applied revision builds on."""
    with reading(db) as root:
        bk = bookkeeping(root)
        records = dict(bk.applied.items()) if bk is not None else {}
    below = {parent for rec in records.values() for parent in rec.get("down_revisions", ())}
    return tuple(sorted(rev for rev in records if rev not in below))


def pending(db: Any, migrations_dir: str | Path, target: str = "heads") -> list[Script]:
    """The scripts an upgrade to ``target`` would run, parents first."""
    return revision_graph(migrations_dir).upgrade_path(applied_revisions(db), target)


def edited_scripts(db: Any, migrations_dir: str | Path) -> list[str]:
    """Applied revisions whose script changed since it was applied (checksum differs)."""
    return _edited(db, load_scripts(migrations_dir))


def unknown_revisions(db: Any, migrations_dir: str | Path) -> list[str]:
    """Applied revisions with no script in ``migrations_dir``."""
    known = {s.revision for s in load_scripts(migrations_dir)}
    return sorted(applied_revisions(db) - known)


# -- running -----------------------------------------------------------------------

def upgrade(
    db: Any,
    migrations_dir: str | Path,
    target: str = "head",
    *,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    lock_wait: float = 0,
    lock_ttl: float = DEFAULT_TTL,
    on_conflict: Literal["fail", "retry"] = "fail",
    transaction_per_migration: bool = True,
    snapshot: bool = True,
    keep_snapshots: int | None = None,
) -> UpgradeResult:
    """Apply the pending migrations up to ``target`` (each in its own transaction by default).

    A snapshot is taken first (``snapshot=False`` skips it), so the run can be undone
    with :func:`dsustore.restore`; ``result.snapshot`` names it. A run that fails before
    any migration commits forgets it again. ``keep_snapshots`` keeps only that many of
    the newest automatic snapshots once the run succeeds (``[tool.dsustore]
    keep_snapshots`` for the command line), so that ``pack`` can drop older states.
    ``lock_wait`` seconds are waited for another process's migration lock.
    """
    return migrate(db, migrations_dir, "upgrade", target, dry_run=dry_run, progress=progress,
                   lock_wait=lock_wait, lock_ttl=lock_ttl, on_conflict=on_conflict,
                   transaction_per_migration=transaction_per_migration, snapshot=snapshot,
                   keep_snapshots=keep_snapshots)


def downgrade(
    db: Any,
    migrations_dir: str | Path,
    target: str,
    *,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    lock_wait: float = 0,
    lock_ttl: float = DEFAULT_TTL,
    on_conflict: Literal["fail", "retry"] = "fail",
    transaction_per_migration: bool = True,
    snapshot: bool = True,
    keep_snapshots: int | None = None,
) -> UpgradeResult:
    """Undo applied migrations down to ``target`` (kept; ``"base"`` undoes all), children first."""
    return migrate(db, migrations_dir, "downgrade", target, dry_run=dry_run, progress=progress,
                   lock_wait=lock_wait, lock_ttl=lock_ttl, on_conflict=on_conflict,
                   transaction_per_migration=transaction_per_migration, snapshot=snapshot,
                   keep_snapshots=keep_snapshots)


def migrate(
    db: Any,
    migrations_dir: str | Path,
    direction: Direction,
    target: str,
    *,
    dry_run: bool = False,
    progress: Callable[[Progress], None] | None = None,
    lock_wait: float = 0,
    lock_ttl: float = DEFAULT_TTL,
    on_conflict: Literal["fail", "retry"] = "fail",
    transaction_per_migration: bool = True,
    snapshot: bool = True,
    keep_snapshots: int | None = None,
    configure: Callable[[Patch], None] | None = None,
    graph: RevisionGraph | None = None,
) -> UpgradeResult:
    """Run the migrations from where the database is to ``target``, in ``direction``.

    :func:`upgrade` and :func:`downgrade` are this with their direction;
    ``configure(patch)`` may add to the patch of a one-transaction run before it
    runs (a live update sets its commit gate and after-commit hook there).
    """
    graph = graph or revision_graph(migrations_dir)
    if direction == "upgrade":
        result = UpgradeResult("upgrade", dry_run, edited=_warn_edited(db, graph))

        def plan() -> list[Script]:
            return graph.upgrade_path(applied_revisions(db), target)
    else:
        result = UpgradeResult("downgrade", dry_run)

        def plan() -> list[Script]:
            return graph.downgrade_path(applied_revisions(db), target)

    scripts = plan()
    if not scripts:
        log.info("nothing to %s (current: %s)", direction, ", ".join(current(db)) or "base")
        return result
    options: dict[str, Any] = {"progress": progress, "on_conflict": on_conflict}
    if not dry_run:  # a misspelt class is refused before the run writes its lock or snapshot
        check_before_running(db, scripts, direction)
    if dry_run:
        result.migrations.extend(run_together(db, scripts, direction, dry_run=True, **options))
        return result
    with migration_lock(db, ttl=lock_ttl, wait=lock_wait) as lock:
        scripts = plan()  # under the lock: another process may have run them meanwhile
        if scripts and snapshot:
            result.snapshot = _snapshot_before(db, direction, scripts)
        with _snapshot_dropped_if_nothing_ran(db, result):
            if not transaction_per_migration and scripts:
                lock.keep_alive()
                result.migrations.extend(
                    run_together(db, scripts, direction, lock=lock, configure=configure, **options))
            for number, script in enumerate(scripts if transaction_per_migration else ()):
                try:
                    lock.keep_alive()
                    result.migrations.append(_run(db, script, direction, lock=lock, **options))
                except Exception as err:
                    if not result.migrations:
                        raise
                    raise _partial_run(db, result, script, scripts[number + 1:], err) from err
    if result.snapshot is not None and keep_snapshots is not None:
        pruned = prune_snapshots(db, keep_snapshots)
        if pruned:
            log.info("forgot %d older automatic snapshot(s), keeping %d", len(pruned), keep_snapshots)
    return result


@contextmanager
def _snapshot_dropped_if_nothing_ran(db: Any, result: UpgradeResult) -> Iterator[None]:
    """A run that fails before any migration commits forgets the snapshot it took first:
    the database is as the snapshot has it, and failed attempts would pile snapshots up."""
    try:
        yield
    except BaseException:
        taken = result.snapshot
        if taken is not None and not result.migrations:
            try:
                delete_snapshot(db, taken.name)
                result.snapshot = None
            except Exception as err:  # the failure itself is what the user must see
                log.warning("could not forget snapshot %s: %s", taken.name, err)
        raise


def _partial_run(db: Any, result: UpgradeResult, failed: Script, not_run: list[Script],
                 err: Exception) -> PartialRunError:
    """The error of a run whose first migrations committed before ``failed`` raised ``err``."""
    committed = result.revisions
    cause = err.facts() if isinstance(err, DSUError) else {"error": type(err).__name__,
                                                             "message": str(err)}
    what = cause.get("message") or type(err).__name__
    where = ", ".join(f"{label} {cause[key]}" for key, label in
                      (("operation", "operation"), ("class", "class"), ("oid", "oid")) if cause.get(key))
    stays = "applied" if result.direction == "upgrade" else "undone"
    undo = (f"; `dsustore snapshot restore {result.snapshot.name}` goes back to before the run"
            if result.snapshot is not None else "")
    return PartialRunError(
        f"{result.direction} stopped part-way: {', '.join(committed)} committed (and "
        f"{'stays' if len(committed) == 1 else 'stay'} {stays}), then {failed.revision} failed"
        f"{' (' + where + ')' if where else ''}: {what}; "
        f"{'not run: ' + ', '.join(s.revision for s in not_run) if not_run else 'nothing else was pending'}"
        f"; the database is at {', '.join(current(db)) or 'base'}{undo}",
        direction=result.direction, committed=committed, failed=failed.revision,
        pending=[s.revision for s in not_run], cause=cause, migration=failed.revision,
    )


def ensure_current(
    db: Any,
    migrations_dir: str | Path,
    mode: Literal["upgrade", "verify", "minimum"] = "upgrade",
    *,
    minimum: str | None = None,
    lock_wait: float = 0,
) -> UpgradeResult:
    """Bring the database in line with the code at start-up (like zope.generations).

    ``"upgrade"`` applies everything pending; ``"verify"`` changes nothing and raises
    :class:`DatabaseBehindError` when migrations are pending; ``"minimum"`` applies
    only what ``minimum`` needs. Every mode raises :class:`DatabaseAheadError` when
    the database has revisions the code does not know.
    """
    if mode not in ("upgrade", "verify", "minimum"):
        raise ValueError("mode must be 'upgrade', 'verify' or 'minimum'")
    unknown = unknown_revisions(db, migrations_dir)
    if unknown:
        raise DatabaseAheadError(
            f"the database has revision(s) {', '.join(unknown)} that the code does not know;"
            " is this code older than the database?",
            unknown=unknown, migration=unknown[0],
        )
    if mode == "upgrade":
        return upgrade(db, migrations_dir, "heads", lock_wait=lock_wait)
    if mode == "minimum":
        if minimum is None:
            raise ValueError("mode 'minimum' needs minimum=<revision>")
        return upgrade(db, migrations_dir, minimum, lock_wait=lock_wait)
    behind = [s.revision for s in pending(db, migrations_dir)]
    if behind:
        raise DatabaseBehindError(
            f"the database lacks {len(behind)} migration(s): {', '.join(behind)}",
            pending=behind, migration=behind[0],
        )
    return UpgradeResult("upgrade", False)


def stamp(db: Any, migrations_dir: str | Path, target: str, *, lock_wait: float = 0) -> tuple[str, ...]:
    """Mark ``target`` and its ancestors as applied, and nothing else, without running them.

    Returns the new current heads. Records written by a stamp have direction ``"stamp"``.
    """
    graph = revision_graph(migrations_dir)
    wanted = {s.revision for s in graph.upgrade_path((), target)}
    with migration_lock(db, wait=lock_wait), private_connection(db) as (conn, tm):
        root = conn.root()
        done = set(bookkeeping(root, create=True).applied.keys())
        for rev in sorted(done - wanted):
            record_unapplied(root, rev)
        for script in graph.history():
            if script.revision in wanted - done:
                record_applied(root, script, direction="stamp")
        mark(tm.get(), f"dsustore stamp {target}", stamp=target)
        tm.commit()
    log.info("database stamped at %s", target)
    return current(db)


def _edited(db: Any, scripts: Iterable[Script]) -> list[str]:
    by_rev = {s.revision: s for s in scripts}
    return sorted(
        rev for rev, rec in applied_records(db, tids=False).items()
        if rev in by_rev and rec.get("checksum") not in (None, by_rev[rev].checksum)
    )


def _warn_edited(db: Any, graph: RevisionGraph) -> list[str]:
    scripts = {s.revision: s for s in graph.history()}
    edited = _edited(db, scripts.values())
    if edited:
        log.warning("migration script(s) changed after being applied: %s",
                    ", ".join(scripts[rev].label for rev in edited))
    return edited


def _run(
    db: Any,
    script: Script,
    direction: Direction,
    *,
    lock: MigrationLock | None = None,
    progress: Callable[[Progress], None] | None = None,
    on_conflict: Literal["fail", "retry"] = "fail",
) -> MigrationResult:
    """Run one migration as one patch; its bookkeeping commits with it."""
    log.info("running migration %s %s: %s", direction, script.label, script.message)
    patch = Patch(db, on_conflict=on_conflict, progress=progress,
                  description=f"{transaction_description(script.revision, direction)}: {script.message}",
                  hold_writes=_barrier(db, lock))
    patch.before_commit(_bookkeeping_hook([script], direction, lock))
    patch.stage(script.revision, _builder(script, direction))  # a retry runs the script again
    with _naming_the_migration(patch, script.revision):
        patch.begin()
        report = patch.commit()
    result = MigrationResult(script.revision, script.message, direction, report)
    _note_tid_after(db, [result])
    return result


def _barrier(db: Any, lock: MigrationLock | None) -> Callable[[], AbstractContextManager[None]] | None:
    """What holds other processes' writes while the migration commits (see :mod:`.barrier`)."""
    if lock is None:
        return None
    return lambda: writes_held(db, lock)


def run_together(
    db: Any,
    scripts: list[Script],
    direction: Direction,
    *,
    dry_run: bool = False,
    lock: MigrationLock | None = None,
    progress: Callable[[Progress], None] | None = None,
    on_conflict: Literal["fail", "retry"] = "fail",
    configure: Callable[[Patch], None] | None = None,
) -> list[MigrationResult]:
    """Run ``scripts`` as the stages of one patch: one commit applies them all, or none.

    ``configure(patch)`` may add to the patch before it runs (a live update sets its
    commit gate and after-commit hook there).
    """
    label = "dry run of" if dry_run else "running"
    log.info("%s %d migration(s) %s as one transaction: %s", label, len(scripts), direction,
             ", ".join(s.label for s in scripts))
    last = scripts[-1]
    patch = Patch(db, on_conflict=on_conflict, progress=progress, dry_run=dry_run,
                  description=f"{transaction_description(last.revision, direction)}: "
                              f"{len(scripts)} migration(s) up to {last.message}",
                  hold_writes=None if dry_run else _barrier(db, lock))
    for script in scripts:
        patch.stage(script.revision, _builder(script, direction))
    if not dry_run:
        patch.before_commit(_bookkeeping_hook(scripts, direction, lock))
    if configure is not None:
        configure(patch)
    with _naming_the_migration(patch, None):
        patch.begin()
        report = patch.commit()
    by_revision = {s.revision: s for s in scripts}
    results = [
        MigrationResult(stage.label, by_revision[stage.label].message, direction, PatchReport.of_stages(
            [stage], committed=report.committed, dry_run=report.dry_run, tid_before=report.tid_before,
            tid_after=report.tid_after, duration=stage.duration, attempts=report.attempts,
        ))
        for stage in report.stages if stage.label is not None
    ]
    _note_tid_after(db, results)
    return results


def _note_tid_after(db: Any, results: list[MigrationResult]) -> None:
    """Where the storage keeps no transaction log, write each applied migration's tid_after
    now: :func:`applied_records` could not find its transaction later."""
    if adapter_for(db).keeps_history:
        return
    for result in results:
        tid_after = result.report.tid_after
        if result.report.committed and result.direction == "upgrade" and tid_after:
            record_tid_after(db, result.revision, tid_after)


@contextmanager
def _naming_the_migration(patch: Patch, revision: str | None) -> Iterator[None]:
    """Errors leave with the id of the migration that was running."""
    try:
        yield
    except DSUError as err:
        failed = revision or patch.failed_stage
        if err.migration is None and failed is not None:
            err.with_migration(failed)
        raise
    except Exception as err:
        raise MigrationError(f"{type(err).__name__}: {err}",
                             migration=revision or patch.failed_stage) from err


def _snapshot_before(db: Any, direction: Direction, scripts: list[Script]) -> Snapshot:
    """The snapshot every run that changes data takes first, named for where it goes."""
    last = re.sub(r"[^A-Za-z0-9._-]", "_", scripts[-1].revision)
    taken = snapshot(db, unique_name(f"before-{direction}-{last}"), auto=True,
                     note=f"taken before {direction} of {', '.join(s.revision for s in scripts)}")
    log.info("snapshot %s (%s) taken before the %s", taken.name, taken.kind, direction)
    return taken


def _builder(script: Script, direction: Direction) -> Callable[[Patch], None]:
    return script.upgrade if direction == "upgrade" else script.downgrade


def _bookkeeping_hook(
    scripts: list[Script], direction: Direction, lock: MigrationLock | None
) -> Callable[[Patch, PatchReport], None]:
    def hook(patch: Patch, report: PatchReport) -> None:
        root = patch.new_ns.root
        if lock is not None:
            lock.verify()
        for script, stage in zip(scripts, report.stages, strict=False):
            if direction == "upgrade":
                record_applied(root, script, stage)
            else:
                record_unapplied(root, script.revision)
        # the schema as the migrations' operations leave it, not as the code declares it
        record_schema(root, report.stages[-1].classes if report.stages else (), patch.operations)
    return hook


__all__ = [
    "MigrationResult",
    "UpgradeResult",
    "current",
    "downgrade",
    "edited_scripts",
    "ensure_current",
    "migrate",
    "pending",
    "revision_graph",
    "run_together",
    "stamp",
    "unknown_revisions",
    "upgrade",
]
