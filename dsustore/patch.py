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
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import transaction as transaction_module
from transaction.interfaces import NoTransaction
from ZODB.POSException import ConflictError
from ZODB.utils import tid_repr

from ._capacity import check_lock_capacity
from ._classes import ClassRef, dotted_name
from ._engine import MigrationPass, Progress
from ._namespace import Namespace, committed_tid, snapshot_tid
from ._operations import (
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
from ._savepoints import release, use_appending_savepoints
from ._swap import swap_live_objects
from .errors import (
    DSUError,
    OperationError,
    PatchStateError,
    UpdateConflictError,
    ValidationError,
)
from .policies import as_policy
from .validations import Validation, as_validation

log = logging.getLogger(__name__)

#: the transaction extension key that marks a transaction as written by dsustore
TRANSACTION_MARK = "dsustore"


@dataclass
class PatchReport:
    """What a patch did: returned by :meth:`Patch.commit`."""

    committed: bool
    dry_run: bool
    tid_before: str
    tid_after: str | None
    operations: list[str]
    migrated: dict[str, int]
    references_rewritten: int
    scanned: int
    validations: list[str]
    unreferenced_removed: dict[str, int]
    duration: float
    attempts: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def objects_migrated(self) -> int:
        return sum(self.migrated.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form of the report."""
        return {
            "committed": self.committed,
            "dry_run": self.dry_run,
            "tid_before": self.tid_before,
            "tid_after": self.tid_after,
            "operations": list(self.operations),
            "migrated": dict(self.migrated),
            "references_rewritten": self.references_rewritten,
            "scanned": self.scanned,
            "validations": list(self.validations),
            "unreferenced_removed": dict(self.unreferenced_removed),
            "duration": round(self.duration, 3),
            "attempts": self.attempts,
            **self.extra,
        }


class Patch:
    """A transaction of DSU operations over ``db``.

    Use as a context manager: leaving the block commits, an exception inside it rolls
    back. ``on_conflict`` decides what happens when another writer changed an object
    this patch changed: ``"fail"`` raises :class:`UpdateConflictError`, ``"retry"``
    reruns the whole patch on a fresh snapshot up to ``retries`` times.
    ``commit_gate`` is a context manager entered around the final commit only (a
    running application uses it to hold new writes for that moment).
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
    ) -> None:
        if on_conflict not in ("fail", "retry"):
            raise ValueError("on_conflict must be 'fail' or 'retry'")
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
        self._operations: list[Operation] = []
        self._hooks: list[Callable[[Patch, PatchReport], None]] = []
        self._state: Literal["new", "begun", "done"] = "new"
        self._conn: Any = None
        self._old_conn: Any = None
        self._at: bytes | None = None
        self.report: PatchReport | None = None

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
            if self.report is not None and self.report.committed:
                # after closing, so the patch's own pooled connection is swapped too
                swap_live_objects(self.db, {op.old_name: op.new_name for op in self._operations
                                            if isinstance(op, RenameClass)})

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

    def change_superclass(self, cls: ClassRef, superclass: ClassRef, *, policy: Any = None) -> Patch:
        """Instances of ``cls`` (which now derives from ``superclass``) get the base's fields."""
        return self._record(ChangeSuperclass(
            dotted_name(cls), dotted_name(superclass), as_policy(policy) if policy else None))

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

    def rename_class(self, old_name: ClassRef, new_name: ClassRef) -> Patch:
        """A class renamed or moved: its records and every reference to them are rewritten."""
        return self._record(RenameClass(dotted_name(old_name), dotted_name(new_name)))

    def before_commit(self, hook: Callable[[Patch, PatchReport], None]) -> Patch:
        """Run ``hook(patch, report)`` inside the transaction, after validations pass."""
        self._hooks.append(hook)
        return self

    # -- inspection -------------------------------------------------------------

    @property
    def operations(self) -> tuple[Operation, ...]:
        return tuple(self._operations)

    def plan(self) -> list[str]:
        """The recorded operations, as they print."""
        return [op.describe() for op in self._operations]

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
        self._operations.append(op)
        return self

    def _require_begun(self) -> None:
        if self._state != "begun":
            raise PatchStateError("the patch has not begun (call begin() or use it in a with block)")

    def _open(self) -> None:
        tm = self.transaction_manager
        tm.begin()
        self._conn = self.db.open(transaction_manager=tm)
        self._at = snapshot_tid(self._conn)
        self._old_tm = transaction_module.TransactionManager(explicit=True)
        self._old_tm.begin()
        self._old_conn = self.db.open(transaction_manager=self._old_tm, at=self._at)
        self._new_ns = Namespace(self._conn, tid=None, historical=False)
        self._old_ns = Namespace(self._old_conn, tid=self._at, historical=True)

    def _close(self, *, abort: bool) -> None:
        if self._conn is not None:
            if abort:
                _abort(self.transaction_manager)
            release(self._conn)
            self._conn.close()
            self._conn = None
        if self._old_conn is not None:
            _abort(self._old_tm)
            self._old_conn.close()
            self._old_conn = None

    def _run(self, attempt: int) -> PatchReport:
        started = time.monotonic()
        conn = self._conn
        tm = self.transaction_manager
        txn = tm.get()
        if conn._needs_to_join:
            txn.join(conn)
            conn._needs_to_join = False
        use_appending_savepoints(conn)
        txn.savepoint(optimistic=True)  # from here on, writes go to the savepoint storage
        migration = MigrationPass(
            storage=self.db.storage, connection=conn, old_connection=self._old_conn,
            at=self._at, old_ns=self._old_ns, new_ns=self._new_ns,
            operations=self._operations, batch_size=self.batch_size, progress=self.progress,
        )
        for op in self._operations:
            try:
                op.prepare(migration)
            except DSUError:
                raise
            except Exception as err:
                raise OperationError(f"{type(err).__name__}: {err}", operation=op.describe()) from err
        check_lock_capacity(self.db, operations=self._operations)  # lock table: before the pass
        result = migration.run()
        validations = migration.system_validations() + [
            op.validation for op in self._operations if isinstance(op, AddValidation)
        ]
        passed = self._validate(validations)
        report = PatchReport(
            committed=False, dry_run=self.dry_run, tid_before=tid_repr(self._at), tid_after=None,
            operations=self.plan(), migrated=dict(result.migrated),
            references_rewritten=result.references_rewritten, scanned=result.scanned,
            validations=passed, unreferenced_removed=dict(result.unreferenced),
            duration=0.0, attempts=attempt,
        )
        for hook in self._hooks:
            hook(self, report)
        check_lock_capacity(self.db, connection=conn)  # lock table: the exact count, before commit
        if self.dry_run:
            report.duration = time.monotonic() - started
            log.info("dry run: %d objects would be migrated; nothing written", report.objects_migrated)
            return report
        txn.note(self.description or "dsustore patch")
        txn.setExtendedInfo(TRANSACTION_MARK, {
            "operations": report.operations,
            "migrated": report.migrated,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        })
        with (self.commit_gate() if self.commit_gate else nullcontext()):
            tm.commit()
        report.committed = True
        report.tid_after = tid_repr(committed_tid(conn))
        report.duration = time.monotonic() - started
        log.info("patch committed: %d objects migrated in %.2fs",
                 report.objects_migrated, report.duration)
        return report

    def _validate(self, validations: list[Validation]) -> list[str]:
        failures = []
        passed = []
        for validation in validations:
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


def _abort(tm: Any) -> None:
    try:
        tm.abort()
    except NoTransaction:  # already committed or aborted
        pass
