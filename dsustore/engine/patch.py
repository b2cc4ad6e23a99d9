"""The patch: a transaction of DSU operations over one database (paper: Figure 2).

A patch records operations as data and runs them only when it commits, in its own
connection and transaction manager, so the running application keeps reading and
writing the old state until the single commit makes the new one visible to all.
Anything that goes wrong before that commit (an operation, a policy, a validation,
user code in the ``with`` block, the process dying) leaves the storage untouched.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any, Literal

import transaction as transaction_module
from ZODB.POSException import ConflictError
from ZODB.utils import tid_repr

from ..errors import (
    DSUError,
    OperationError,
    PatchStateError,
    UpdateConflictError,
    ValidationError,
)
from ..mop.classes import ClassRef, dotted_name
from ..mop.namespace import Namespace
from ..mop.swap import swap_live_objects
from ..operations.ops import (
    AddClass,
    AddField,
    AddValidation,
    ChangeSuperclass,
    MigrateInstances,
    Operation,
    RemoveClass,
    RemoveField,
    RenameClass,
    RenameField,
)
from ..operations.policies import as_policy
from ..operations.validations import SystemValidation, Validation, as_validation
from ..storage import adapter_for
from ..storage.connections import (
    abort_quietly,
    has_changes,
    join,
    overlay,
    registered_objects,
    remove_layers,
    reset_cache,
    savepoint_store,
)
from ..storage.savepoints import release, stage_commit, use_appending_savepoints
from ..storage.spool import ScanSpool
from ..storage.transactions import mark
from .capacity import check_lock_capacity
from .migration_pass import MigrationPass, catch_up
from .pacing import Pacer
from .reports import PatchReport, Progress, StageReport, Timeline

log = logging.getLogger(__name__)

#: catch-up rounds before the commit gate closes, and how few objects a round may
#: migrate for the next one to be the last (inside the gate)
CATCH_UP_ROUNDS = 8
CATCH_UP_ENOUGH = 100


class Patch:
    """A transaction of DSU operations over ``db``.

    Use as a context manager: leaving the block commits, an exception inside it rolls
    back. ``on_conflict`` decides what happens when another writer changed an object
    this patch changed: ``"fail"`` raises :class:`UpdateConflictError`, ``"retry"``
    reruns the whole patch on a fresh snapshot up to ``retries`` times.
    ``commit_gate`` is a context manager entered around the final moment only: the
    catch-up of what other transactions committed meanwhile, the commit, and the swap
    of live objects (a running application uses it to hold new transactions for
    that moment). ``hold_writes`` is entered inside it, for the same moment: it holds
    the writes of other processes (the runner sets the database's write barrier).
    ``pass_share`` below 1 makes the passes and the catch-up rounds run while the
    application does sleep between short slices of work, keeping to that share of the
    interpreter (a live update uses it so requests are not starved).

    A patch may run in stages (:meth:`stage`), each seeing what the earlier ones
    built, and still commit once: this is how several migrations apply as one
    atomic update.
    """

    def __init__(
        self,
        db: Any,
        *,
        transaction_manager: Any = None,
        on_conflict: Literal["fail", "retry"] = "fail",
        retries: int = 3,
        batch_size: int = 10_000,
        progress: Callable[[Progress], None] | None = None,
        description: str | None = None,
        dry_run: bool = False,
        commit_gate: Callable[[], AbstractContextManager[Any]] | None = None,
        hold_writes: Callable[[], AbstractContextManager[Any]] | None = None,
        isolated_caches: bool = False,
        pass_share: float = 1.0,
    ) -> None:
        if on_conflict not in ("fail", "retry"):
            raise ValueError("on_conflict must be 'fail' or 'retry'")
        if not 0 < pass_share <= 1:
            raise ValueError("pass_share is a fraction of the interpreter: above 0, at most 1")
        self.db = db
        self.transaction_manager = transaction_manager or transaction_module.TransactionManager(
            explicit=True)
        self.on_conflict = on_conflict
        self.retries = retries
        self.batch_size = batch_size
        self.progress = progress
        self.description = description
        self.dry_run = dry_run
        self.commit_gate = commit_gate
        self.hold_writes = hold_writes
        #: connections the patch uses start and end with empty caches, so that nothing it
        #: cached reaches another thread (a live update runs new code beside the old)
        self.isolated_caches = isolated_caches
        #: the share of the interpreter the passes and catch-up rounds may take from the
        #: process's other threads (1: all they can get; see :mod:`.pacing`)
        self.pass_share = pass_share
        self._pacer: Pacer | None = None
        self._adapter = adapter_for(db)
        self._passes: list[MigrationPass] = []
        self._pool_size: int | None = None
        self._stages: list[_Stage] = [_Stage(None, None)]
        self._recording = self._stages[0]
        self._hooks: list[Callable[[Patch, PatchReport], None]] = []
        self._after_commit: list[Callable[[Patch, PatchReport], None]] = []
        self._stage_conns: list[tuple[Any, Any]] = []
        #: the label of the stage that was running when the patch failed
        self.failed_stage: str | None = None
        self._wrote_directly = False
        self._state: Literal["new", "begun", "done"] = "new"
        self._conn: Any = None
        self._changes: Any = None
        self._old_conn: Any = None
        self._at = b""  # the transaction the patch starts from, once it has begun
        self.report: PatchReport | None = None
        self._timeline = Timeline()

    # -- transaction handling (paper: beginTransaction, commit, rollback) ------

    def begin(self) -> Patch:
        """Start the patch: open its own connection on the current database state."""
        if self._state == "begun":
            raise PatchStateError("the patch has already begun")
        if self._state == "done":
            raise PatchStateError("the patch has already been committed or rolled back")
        self._open()
        self._state = "begun"
        return self

    def commit(self) -> PatchReport:
        """Run every operation and validation, then commit them as one transaction."""
        self._require_begun()
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    self.report = self._run(attempt)
                    return self.report
                except ConflictError as err:
                    self._close(abort=True)
                    if self.on_conflict == "retry" and attempt <= self.retries and self._wrote_directly:
                        raise UpdateConflictError(
                            f"another transaction changed an object this update changed ({err}); "
                            "nothing was written, and the patch cannot be retried because code in "
                            "its with block wrote to the new namespace directly: make those writes "
                            "in a stage (patch.stage) or a policy, which a retry runs again",
                            oid=getattr(err, "oid", None),
                        ) from err
                    if self.on_conflict == "retry" and attempt <= self.retries:
                        log.warning("update conflicted with a concurrent commit (%s); retrying", err)
                        self._open()
                        continue
                    raise UpdateConflictError(
                        f"another transaction changed an object this update changed ({err}); "
                        "nothing was written",
                        oid=getattr(err, "oid", None),
                    ) from err
        finally:
            self._close(abort=True)
            self._state = "done"

    def rollback(self) -> None:
        """Discard the patch; nothing it recorded reaches the database."""
        if self._state != "begun":
            raise PatchStateError("rollback needs a begun patch")
        self._close(abort=True)
        self._state = "done"

    def __enter__(self) -> Patch:
        if self._state == "new":
            self.begin()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._state != "begun":
            return
        if exc_type is not None:
            self.rollback()
            return
        self.commit()

    # -- operations (paper: Figure 2) -------------------------------------------

    def add_class(self, cls: ClassRef, *, initializer: Any = None) -> Patch:
        """A class new in the code; ``initializer(None, cls, old_ns, new_ns)`` sets up its state."""
        return self._record(AddClass(dotted_name(cls), initializer))

    def change_superclass(self, cls: ClassRef, superclass: ClassRef, *, policy: Any = None,
                          old_superclass: ClassRef | None = None) -> Patch:
        """Instances of ``cls`` (which now derives from ``superclass``) get the base's fields.

        ``old_superclass``, the base ``cls`` derived from before, makes it reversible.
        """
        return self._record(ChangeSuperclass(
            dotted_name(cls), dotted_name(superclass), as_policy(policy) if policy else None,
            dotted_name(old_superclass) if old_superclass is not None else None))

    def remove_class(self, class_name: ClassRef) -> Patch:
        """A class gone from the code: validated that nothing references an instance."""
        return self._record(RemoveClass(dotted_name(class_name)))

    def add_field(self, cls: ClassRef, name: str, initial: Any, *, keep_existing: bool = True) -> Patch:
        """Add ``name`` to every instance; ``initial`` is a policy or a constant value."""
        return self._record(AddField.of(dotted_name(cls), name, initial, keep_existing=keep_existing))

    def remove_field(self, cls: ClassRef, name: str) -> Patch:
        """Drop ``name`` from every instance."""
        return self._record(RemoveField(dotted_name(cls), name))

    def rename_field(self, cls: ClassRef, old: str, new: str) -> Patch:
        """Rename a field of every instance, keeping its value."""
        return self._record(RenameField(dotted_name(cls), old, new))

    def migrate_instances(self, cls: ClassRef, policy: Any) -> Patch:
        """Pass every instance through ``policy`` (a value change)."""
        return self._record(MigrateInstances(dotted_name(cls), as_policy(policy)))

    def add_validation(self, validation: Any) -> Patch:
        """Check ``validation.execute(old_ns, new_ns)`` before committing."""
        return self._record(AddValidation(as_validation(validation)))

    def rename_class(self, old_name: ClassRef, new_name: ClassRef, *, merge: bool = False) -> Patch:
        """A class renamed or moved: its records and every reference to them are rewritten.

        The records are rewritten by name, so the new name need not import (a
        downgrade runs with the newer code and writes the name the older code has).
        Renaming onto a class that already has stored instances merges the two
        classes for good, and is refused unless ``merge`` says it is meant.
        """
        return self._record(RenameClass(dotted_name(old_name), dotted_name(new_name), merge))

    def before_commit(self, hook: Callable[[Patch, PatchReport], None]) -> Patch:
        """Run ``hook(patch, report)`` inside the transaction, after validations pass."""
        self._hooks.append(hook)
        return self

    def after_commit(self, hook: Callable[[Patch, PatchReport], None]) -> Patch:
        """Run ``hook(patch, report)`` right after the commit, still inside the commit gate.

        A live update switches the process to the new code here, before the gate
        lets the application's next transaction in.
        """
        self._after_commit.append(hook)
        return self

    def stage(self, label: str, build: Callable[[Patch], None]) -> Patch:
        """Add a stage that runs after everything recorded so far, in the same transaction.

        ``build(patch)`` is called when the stage runs and records the stage's
        operations; ``patch.old_ns`` then shows the database as the earlier stages
        left it. Errors of the stage name ``label`` as their migration.
        """
        if self._state == "done":
            raise PatchStateError(f"cannot add stage {label}: the patch is finished")
        self._stages.append(_Stage(label, build))
        return self

    # -- inspection -------------------------------------------------------------

    @property
    def operations(self) -> tuple[Operation, ...]:
        """Every operation recorded so far (a stage records its own when it runs)."""
        return tuple(op for stage in self._stages for op in stage.operations)

    def plan(self) -> list[str]:
        """The recorded operations, as they print."""
        return [op.describe() for op in self.operations]

    @property
    def old_ns(self) -> Namespace:
        """The database as it was when the patch began (read-only)."""
        self._require_begun()
        return self._old_ns

    @property
    def new_ns(self) -> Namespace:
        """The database as the patch is building it."""
        self._require_begun()
        return self._new_ns

    # -- internals --------------------------------------------------------------

    def _record(self, op: Operation) -> Patch:
        if self._state == "done":
            raise PatchStateError(f"cannot add {op.describe()}: the patch is finished")
        self._recording.operations.append(op)
        return self

    def _require_begun(self) -> None:
        if self._state != "begun":
            raise PatchStateError("the patch has not begun (call begin() or use it in a with block)")

    def _open(self) -> None:
        tm = self.transaction_manager
        tm.begin()
        self._conn = self.db.open(transaction_manager=tm)
        if self.isolated_caches:  # its cache may hold objects of the old code
            reset_cache(self._conn)
        self._changes = self._adapter.change_recorder(self._conn)  # before the snapshot is taken
        self._at = self._adapter.snapshot_tid(self._conn)
        self._old_tm, self._old_conn = self._open_old()
        self._new_ns = Namespace(self._conn, tid=None, historical=False)
        self._old_ns = Namespace(self._old_conn, tid=self._at, historical=True)

    def _open_old(self) -> tuple[Any, Any]:
        tm = transaction_module.TransactionManager(explicit=True)
        tm.begin()
        wanted = len(self._stage_conns) + 2  # every stage keeps its old namespace until the commit
        if self.db.historical_pool.size < wanted:  # given back when the patch closes
            if self._pool_size is None:
                self._pool_size = self.db.historical_pool.size
            self.db.setHistoricalPoolSize(wanted)
        conn = self.db.open(transaction_manager=tm, at=self._at)
        self._adapter.historical_view(conn, self._conn)
        if self.isolated_caches:
            reset_cache(conn)
        return tm, conn

    def _close_stage_views(self) -> None:
        for migration in self._passes:
            migration.release()
        self._passes = []
        for tm, conn in self._stage_conns:
            abort_quietly(tm)
            remove_layers(conn)
            if self.isolated_caches:
                reset_cache(conn)
            conn.close()
        self._stage_conns = []
        if self._pool_size is not None:
            self.db.setHistoricalPoolSize(self._pool_size)
            self._pool_size = None

    def _close(self, *, abort: bool) -> None:
        if self._changes is not None:
            self._changes.remove()
            self._changes = None
        if self._conn is not None:
            if abort:
                abort_quietly(self.transaction_manager)
            release(self._conn)
            if self.isolated_caches:
                reset_cache(self._conn)
            self._conn.close()
            self._conn = None
        if self._old_conn is not None:
            self._stage_conns.insert(0, (self._old_tm, self._old_conn))
        self._close_stage_views()
        self._old_conn = None

    def _run(self, attempt: int) -> PatchReport:
        started = time.monotonic()
        self._timeline = Timeline()
        self._pacer = Pacer(self.pass_share) if self.pass_share < 1 else None
        conn = self._conn
        tm = self.transaction_manager
        txn = tm.get()
        join(conn)
        use_appending_savepoints(conn)
        user_changed = {obj._p_oid for obj in registered_objects(conn) if obj._p_oid is not None}
        self._wrote_directly = has_changes(conn)
        txn.savepoint(optimistic=True)  # from here on, writes go to the savepoint storage
        passes = self._passes
        stages = self._run_stages(passes)
        report = PatchReport.of_stages(
            stages, committed=False, dry_run=self.dry_run, tid_before=tid_repr(self._at),
            tid_after=None, duration=0.0, attempts=attempt,
        )
        for hook in self._hooks:
            hook(self, report)
        check_lock_capacity(self.db, connection=conn)  # lock table: the exact count, before commit
        if self.dry_run:
            report.duration = time.monotonic() - started
            log.info("dry run: %d objects would be migrated; nothing written", report.objects_migrated)
            return report
        mark(txn, self.description or "dsustore patch",
             operations=report.operations, migrated=report.migrated,
             stages=[stage.label for stage in report.stages if stage.label is not None],
             host=socket.gethostname(), pid=os.getpid())
        caught_up, since = self._catch_up_while_running(passes, user_changed)
        timeline = self._timeline
        with timeline.phase("stage commit"):  # what can be prepared before writes are held
            staged = stage_commit(conn, since)
        if staged:  # what others committed while it was staged
            with timeline.phase("catch-up"):
                count, since = self._catch_up(passes, user_changed, since)
            caught_up += count
        with timeline.phase("writes held"), ExitStack() as held:
            with timeline.phase("hold writes"):
                if self.commit_gate:
                    held.enter_context(self.commit_gate())
                if self.hold_writes:
                    held.enter_context(self.hold_writes())
            with timeline.phase("final catch-up"):
                count, upto = self._catch_up(passes, user_changed, since)
            report.caught_up = caught_up + count
            if passes:  # every record is migrated from its state as of upto, or later
                savepoint_store(conn).serials_upto = upto
            with timeline.phase("commit"):
                self._close_stage_views()  # their copies of the savepoint index are not needed now
                tm.commit()
            report.committed = True
            report.tid_after = tid_repr(self._adapter.committed_tid(conn))
            with timeline.phase("swap"):
                self._close(abort=False)
                # after closing, so the patch's own pooled connection is swapped too
                swap_live_objects(self.db, {op.old_name: op.new_name for op in self.operations
                                            if isinstance(op, RenameClass)})
            report.duration = time.monotonic() - started
            report.phases = timeline
            with timeline.phase("switch"):
                for hook in self._after_commit:
                    hook(self, report)
        log.info("patch committed: %d objects migrated in %.2fs",
                 report.objects_migrated, report.duration)
        return report

    def _run_stages(self, passes: list[MigrationPass]) -> list[StageReport]:
        """Every stage's pass and validations, in order; ``passes`` collects the passes."""
        stages: list[StageReport] = []
        to_run = [stage for number, stage in enumerate(self._stages)
                  if number > 0 or stage.operations or len(self._stages) == 1]
        # later stages read the first one's scan from disk, where a scan costs round trips
        spool = ScanSpool() if len(to_run) > 1 and self._adapter.scans_are_remote else None
        try:
            for stage in to_run:
                self.failed_stage = stage.label
                try:
                    stages.append(self._run_stage(stage, passes, spool))
                except DSUError as err:
                    if stage.label is not None and err.migration is None:
                        err.with_migration(stage.label)
                    raise
        finally:
            if spool is not None:
                spool.close()
        self.failed_stage = None
        return stages

    def _catch_up_while_running(self, passes: list[MigrationPass],
                                user_changed: set[bytes]) -> tuple[int, bytes]:
        """Catch up in rounds while the application runs, until a round finds little to do
        (or no longer less than the one before): what is left waits for the gate."""
        caught_up, since, previous = 0, self._at, None
        for _round in range(CATCH_UP_ROUNDS):
            with self._timeline.phase("catch-up"):
                count, since = self._catch_up(passes, user_changed, since, self._pacer)
            caught_up += count
            if count <= CATCH_UP_ENOUGH or (previous is not None and count > previous // 2):
                break
            previous = count
        return caught_up, since

    def _run_stage(self, stage: _Stage, passes: list[MigrationPass],
                   spool: ScanSpool | None = None) -> StageReport:
        """One pass over the database for the stage's operations, then its validations."""
        conn = self._conn
        frozen = None
        if passes:  # a later stage starts from what the earlier ones wrote
            frozen = savepoint_store(conn).frozen()
            old_tm, old_conn = self._open_old()
            overlay(old_conn, frozen)
            self._stage_conns.append((old_tm, old_conn))
            self._old_ns = Namespace(old_conn, tid=self._at, historical=True)
        if stage.build is not None:
            stage.operations.clear()
            self._recording = stage
            try:
                stage.build(self)
            finally:
                self._recording = self._stages[0]
        earlier_renames: dict[tuple[str, str], tuple[str, str]] = {}
        for earlier in passes:
            earlier_renames = {old: earlier.renames.get(new, new) for old, new in earlier_renames.items()}
            earlier_renames.update(earlier.renames)
        migration = MigrationPass(
            adapter=self._adapter, connection=conn, old_connection=self._old_ns.connection,
            at=self._at, old_ns=self._old_ns, new_ns=self._new_ns,
            operations=stage.operations, batch_size=self.batch_size, progress=self.progress,
            frozen=frozen, label=stage.label, old_renames=earlier_renames, spool=spool,
            pace=self._pacer,
        )
        for op in stage.operations:
            try:
                op.prepare(migration)
            except DSUError:
                raise
            except Exception as err:
                raise OperationError(f"{type(err).__name__}: {err}", operation=op.describe()) from err
        check_lock_capacity(self.db, operations=stage.operations)  # lock table: before the pass
        started = time.monotonic()
        passes.append(migration)  # released when the patch closes, even if the pass fails
        with self._timeline.phase(f"pass {stage.label}" if stage.label else "pass"):
            result = migration.run()
            validations = migration.system_validations() + [
                op.validation for op in stage.operations if isinstance(op, AddValidation)
            ]
            checked = self._validate(validations)
        return StageReport(
            label=stage.label, operations=[op.describe() for op in stage.operations],
            migrated=dict(result.migrated), unchanged=dict(result.unchanged),
            references_rewritten=result.references_rewritten,
            records_rewritten=result.records_rewritten, scanned=result.scanned,
            validations=checked,
            unreferenced_removed=dict(result.unreferenced), classes=sorted(migration.classes),
            tid_before=tid_repr(self._at), duration=time.monotonic() - started,
        )

    def _catch_up(self, passes: list[MigrationPass], user_changed: set[bytes],
                  since: bytes, pace: Pacer | None = None) -> tuple[int, bytes]:
        """Migrate what others committed after ``since`` (see :func:`catch_up`).

        Returns how many objects, and the transaction it caught up to.
        """
        upto = self._adapter.last_committed()
        if not passes:
            return 0, upto
        changed = self._changes.changed(since, upto) if self._changes is not None else None
        if changed is None:
            changed = self._adapter.changed_since(since, upto)
        if changed is None:
            raise ConflictError(
                "the database changed during the update and this storage cannot list the changes")
        if changed:
            log.info("migrating %d objects committed during the update", len(changed))
        return catch_up(passes, self._adapter, changed, user_changed, pace), upto

    def _validate(self, validations: list[Validation]) -> list[str]:
        failures = []
        passed = []
        for validation in validations:
            if not isinstance(validation, SystemValidation):
                validation.flagged, validation.flagged_count = [], 0  # a retry starts afresh
            try:
                ok = bool(validation.execute(self._old_ns, self._new_ns))
            except Exception as err:
                failure = validation.failure(f"raised {type(err).__name__}: {err}")
                raise ValidationError([failure]) from err
            if ok:
                passed.append(validation.name)
            else:
                failures.append(validation.failure())
        if failures:
            raise ValidationError(failures)
        return passed


@dataclass
class _Stage:
    label: str | None
    build: Callable[[Patch], None] | None
    operations: list[Operation] = field(default_factory=list)
