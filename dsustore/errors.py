"""The dsustore error family: every error a user can meet, in one tree.

Each error derives from :class:`DSUError` and carries the facts needed to act on it
as attributes -- ``migration``, ``operation``, ``class_name``, ``oid`` for all, and
its own (the lock's holder, the heads of a fork, the pending revisions...) -- which
also appear in its message and, through :meth:`DSUError.facts`, in ``--json``.
Lower-level causes are chained with ``raise ... from``. Context is keyword-only::

    DSUError
    ├── PatchStateError             begin/commit/rollback called out of order
    ├── ClassResolutionError        a class an operation or a record names does not import
    │                               (also an ImportError)
    ├── ReadOnlyStateError          a policy wrote to the old, pre-update object
    │                               (also an AttributeError)
    ├── OperationError              an operation failed, or cannot apply (on one object)
    │   ├── PolicyError             ... because its migration policy raised
    │   └── UnknownClassError       ... because its class is nowhere: not in the code,
    │                               not in the stored records (``suggestions``)
    ├── ValidationError             validations failed; nothing was written (``failures``)
    ├── UpdateConflictError         another writer changed objects the update changed
    ├── CapacityError               the database server cannot lock that many objects
    ├── MigrationError              a migration script raised a non-dsustore error
    ├── PartialRunError             a run committed some migrations, then one failed
    │                               (``committed``, ``failed``, ``pending``)
    ├── MigrationScriptError        a migration script cannot be loaded or written
    ├── RevisionError               the scripts do not form a usable revision graph
    │   ├── DuplicateRevisionError  two scripts declare one revision
    │   ├── MissingParentError      a down_revision names no script
    │   ├── CycleError              scripts point down to each other (``cycle``)
    │   ├── MultipleHeadsError      one head was needed, there are several (``heads``)
    │   ├── UnknownRevisionError    a target names no script
    │   ├── AmbiguousRevisionError  a revision prefix matches several scripts
    │   └── MissingDowngradeError   a downgrade needs scripts without downgrade()
    ├── DatabaseBehindError         migrations are pending (``pending``)
    ├── DatabaseAheadError          the database has revisions the code lacks (``unknown``)
    ├── LockHeldError               another process holds the migration lock (``holder``)
    ├── LockLostError               this process's migration lock was taken over
    ├── SnapshotError               a snapshot cannot be taken, found or restored
    │   ├── UnknownSnapshotError    no snapshot has that name
    │   └── SnapshotConflictError   restoring would lose application writes
    ├── DatabaseOpenError           the database named by a URI cannot be opened
    │   ├── DatabaseLockedError     another process holds it open
    │   ├── DatabaseMissingError    there is no database there (and none was to be made)
    │   ├── DatabaseDamagedError    the file ends in damaged data that opening it for
    │   │                           writing would cut (``path``, ``position``, ``cut``)
    │   └── NoDatabaseConfiguredError  no --db, DSUSTORE_DB or [tool.dsustore] db
    ├── LiveUpdateError             the new code could not be loaded into the process
    ├── GateTimeoutError            transactions in flight did not end in time
    └── StaleCodeError              this process's code is older than the database
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, overload


@overload
def format_oid(oid: None) -> None: ...
@overload
def format_oid(oid: bytes | int | str) -> str: ...
def format_oid(oid: bytes | int | str | None) -> str | None:
    """Render an oid the way users see it in ZODB tools: ``0x2a``."""
    if oid is None or isinstance(oid, str):
        return oid
    if isinstance(oid, bytes):
        oid = int.from_bytes(oid, "big")
    return hex(oid)


class DSUError(Exception):
    """Root of every dsustore error."""

    #: names of the attributes a subclass adds to :meth:`facts`
    fact_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        message: str,
        *,
        migration: str | None = None,
        operation: str | None = None,
        class_name: str | None = None,
        oid: bytes | int | str | None = None,
    ) -> None:
        self.reason = message
        self.migration = migration
        self.operation = operation
        self.class_name = class_name
        self.oid = format_oid(oid)
        super().__init__(self._render())

    def facts(self) -> dict[str, Any]:
        """The structured context of the error (for logs and ``--json``)."""
        facts: dict[str, Any] = {
            "error": type(self).__name__,
            "message": self.reason,
            "migration": self.migration,
            "operation": self.operation,
            "class": self.class_name,
            "oid": self.oid,
        }
        for klass in reversed(type(self).__mro__):
            for name in vars(klass).get("fact_names", ()):
                facts[name] = _jsonable(getattr(self, name, None))
        return facts

    def _render(self) -> str:
        where = [
            f"{label} {value}"
            for label, value in (
                ("migration", self.migration),
                ("operation", self.operation),
                ("class", self.class_name),
                ("oid", self.oid),
            )
            if value is not None
        ]
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def with_migration(self, migration: str) -> DSUError:
        """Attach the migration id once the script runner knows it."""
        self.migration = migration
        return self.add_context()

    def add_context(self, *, operation: str | None = None, class_name: str | None = None,
                    oid: bytes | int | None = None, note: str | None = None) -> DSUError:
        """Fill in facts a lower layer did not know, keeping those it gave; re-render."""
        self.operation = self.operation or operation
        self.class_name = self.class_name or class_name
        self.oid = self.oid or format_oid(oid)
        if note:
            self.reason = f"{self.reason} ({note})"
        self.args = (self._render(),)
        return self


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return format_oid(value)
    return value


# -- the patch and its operations ------------------------------------------------------


class PatchStateError(DSUError):
    """A patch was used out of order (commit before begin, operations after commit)."""


class ClassResolutionError(DSUError, ImportError):
    """A class named by an operation or found in a record cannot be imported."""


class ReadOnlyStateError(DSUError, AttributeError):
    """A policy tried to change the old object or the old namespace."""


class OperationError(DSUError):
    """An operation failed while migrating one stored object, or cannot apply at all."""


class PolicyError(OperationError):
    """A migration policy raised while migrating one stored object."""


class UnknownClassError(OperationError):
    """An operation names a class that neither imports nor appears in the stored records."""

    fact_names = ("suggestions",)

    def __init__(self, message: str, *, suggestions: Iterable[str] = (), **context: Any) -> None:
        self.suggestions = tuple(suggestions)
        super().__init__(message, **context)


@dataclass(frozen=True)
class ValidationFailure:
    """One failed validation and the objects it flagged."""

    name: str
    message: str
    oids: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        flagged = ""
        if self.oids:
            shown = ", ".join(self.oids[:10])
            more = f" and {len(self.oids) - 10} more" if len(self.oids) > 10 else ""
            flagged = f" [objects: {shown}{more}]"
        return f"{self.name}: {self.message}{flagged}"


class ValidationError(DSUError):
    """Validations failed, so the update was rolled back."""

    def __init__(self, failures: list[ValidationFailure], **context: Any) -> None:
        self.failures = list(failures)
        summary = "; ".join(str(f) for f in self.failures)
        super().__init__(f"validation failed: {summary}", **context)

    def facts(self) -> dict[str, Any]:
        facts = super().facts()
        facts["failures"] = [
            {"validation": f.name, "message": f.message, "oids": list(f.oids)}
            for f in self.failures
        ]
        return facts


class UpdateConflictError(DSUError):
    """Another transaction changed objects this update changed; nothing was written."""


class CapacityError(DSUError):
    """The update modifies more objects than the database server can lock in one commit."""

    fact_names = ("objects", "capacity", "setting", "current", "needed")

    def __init__(self, message: str, *, objects: int, capacity: int, setting: str,
                 current: int, needed: int, **context: Any) -> None:
        self.objects = objects
        self.capacity = capacity
        self.setting = setting
        self.current = current
        self.needed = needed
        super().__init__(message, **context)


# -- migration scripts and runs ------------------------------------------------------


class MigrationError(DSUError):
    """A migration script raised something other than a dsustore error."""


class PartialRunError(DSUError):
    """A run of several migrations, each its own transaction, stopped part-way.

    ``committed`` lists the migrations that did commit (they stay applied),
    ``failed`` the one that failed, ``pending`` those not run; the failure itself
    is the ``__cause__``.
    """

    fact_names = ("direction", "committed", "failed", "pending", "cause")

    def __init__(self, message: str, *, direction: str, committed: Iterable[str],
                 failed: str | None, pending: Iterable[str], cause: dict[str, Any] | None = None,
                 **context: Any) -> None:
        self.direction = direction
        self.committed = tuple(committed)
        self.failed = failed
        self.pending = tuple(pending)
        self.cause = cause
        super().__init__(message, **context)

    def _render(self) -> str:
        return self.reason  # names the failed migration itself, among the others


class MigrationScriptError(DSUError):
    """A migration script cannot be loaded or written."""


class RevisionError(DSUError):
    """The scripts of a migrations folder do not form a usable revision graph."""


class DuplicateRevisionError(RevisionError):
    """Two scripts declare the same revision id."""


class MissingParentError(RevisionError):
    """A script's ``down_revision`` names a revision no script declares."""


class CycleError(RevisionError):
    """Scripts point down to each other in a loop."""

    fact_names = ("cycle",)

    def __init__(self, message: str, *, cycle: tuple[str, ...], **context: Any) -> None:
        self.cycle = tuple(cycle)
        super().__init__(message, **context)


class MultipleHeadsError(RevisionError):
    """A single head was needed but the graph has several."""

    fact_names = ("heads",)

    def __init__(self, message: str, *, heads: tuple[str, ...], **context: Any) -> None:
        self.heads = tuple(heads)
        super().__init__(message, **context)


class UnknownRevisionError(RevisionError):
    """A target or an applied revision names no known script."""


class AmbiguousRevisionError(RevisionError):
    """A revision prefix matches several scripts."""


class MissingDowngradeError(RevisionError):
    """A downgrade would need scripts that define no ``downgrade`` function."""


class DatabaseBehindError(DSUError):
    """The database lacks migrations the code has (``pending`` lists them)."""

    fact_names = ("pending",)

    def __init__(self, message: str, *, pending: Iterable[str] = (), **context: Any) -> None:
        self.pending = tuple(pending)
        super().__init__(message, **context)


class DatabaseAheadError(DSUError):
    """The database has migrations applied that the code does not know (``unknown``)."""

    fact_names = ("unknown",)

    def __init__(self, message: str, *, unknown: Iterable[str] = (), **context: Any) -> None:
        self.unknown = tuple(unknown)
        super().__init__(message, **context)


class LockHeldError(DSUError):
    """Another process holds the migration lock."""

    fact_names = ("holder",)

    def __init__(self, message: str, *, holder: dict[str, Any] | None = None,
                 **context: Any) -> None:
        self.holder = dict(holder) if holder else None
        super().__init__(message, **context)


class LockLostError(DSUError):
    """This process's migration lock expired and another process took it over."""


# -- snapshots ---------------------------------------------------------------------


class SnapshotError(DSUError):
    """A snapshot cannot be taken, found or restored."""


class UnknownSnapshotError(SnapshotError):
    """No snapshot has the given name."""


class SnapshotConflictError(SnapshotError):
    """The application wrote after the snapshot; restoring would lose those writes."""

    fact_names = ("application_transactions", "objects")

    def __init__(self, message: str, *, transactions: int, objects: int,
                 **context: Any) -> None:
        self.transactions = self.application_transactions = transactions
        self.objects = objects
        super().__init__(message, **context)


# -- opening databases -------------------------------------------------------------


class DatabaseOpenError(DSUError):
    """The database named by a URI cannot be opened."""


class DatabaseLockedError(DatabaseOpenError):
    """Another process holds the database (a FileStorage lock) open."""


class DatabaseMissingError(DatabaseOpenError):
    """No database exists where one was named, and none was to be created."""

    fact_names = ("path",)

    def __init__(self, message: str, *, path: str, **context: Any) -> None:
        self.path = path
        super().__init__(message, **context)


class DatabaseDamagedError(DatabaseOpenError):
    """A FileStorage ends in data that is not a whole transaction; opening it for writing
    would cut ``cut`` bytes from ``position`` (ZODB keeps them in a ``.trN`` file)."""

    fact_names = ("path", "position", "cut")

    def __init__(self, message: str, *, path: str, position: int, cut: int, **context: Any) -> None:
        self.path = path
        self.position = position
        self.cut = cut
        super().__init__(message, **context)


class NoDatabaseConfiguredError(DatabaseOpenError):
    """No ``--db``, no ``DSUSTORE_DB`` and no ``[tool.dsustore] db`` in pyproject.toml."""


# -- live update -------------------------------------------------------------------


class LiveUpdateError(DSUError):
    """The new code could not be loaded into the running process."""


class GateTimeoutError(DSUError):
    """Transactions in flight did not end in time for the update to commit."""


class StaleCodeError(DSUError):
    """This process's code is older than the database, so it may not write to it."""

    fact_names = ("unknown",)

    def __init__(self, message: str, *, unknown: Iterable[str] = (), **context: Any) -> None:
        self.unknown = tuple(sorted(unknown))
        super().__init__(message, **context)


__all__ = [
    "AmbiguousRevisionError",
    "CapacityError",
    "ClassResolutionError",
    "CycleError",
    "DSUError",
    "DatabaseAheadError",
    "DatabaseBehindError",
    "DatabaseDamagedError",
    "DatabaseLockedError",
    "DatabaseMissingError",
    "DatabaseOpenError",
    "DuplicateRevisionError",
    "GateTimeoutError",
    "LiveUpdateError",
    "LockHeldError",
    "LockLostError",
    "MigrationError",
    "MigrationScriptError",
    "MissingDowngradeError",
    "MissingParentError",
    "MultipleHeadsError",
    "NoDatabaseConfiguredError",
    "OperationError",
    "PartialRunError",
    "PatchStateError",
    "PolicyError",
    "ReadOnlyStateError",
    "RevisionError",
    "SnapshotConflictError",
    "SnapshotError",
    "StaleCodeError",
    "UnknownClassError",
    "UnknownRevisionError",
    "UnknownSnapshotError",
    "UpdateConflictError",
    "ValidationError",
    "ValidationFailure",
]
