"""The dsustore error family.

Every error a user can meet derives from :class:`DSUError` and carries the facts
needed to act on it as attributes (``migration``, ``operation``, ``class_name``,
``oid``), which also appear in its message. Lower-level causes are chained with
``raise ... from``::

    DSUError
    ├── PatchStateError          begin/commit/rollback called out of order
    ├── ClassResolutionError     a class named by an operation or a record does not import
    ├── ReadOnlyStateError       a policy wrote to the old (pre-update) object
    ├── OperationError           an operation failed on one stored object
    │   └── PolicyError          ... because its migration policy raised
    ├── ValidationError          one or more validations failed (``failures``)
    └── UpdateConflictError      another writer changed objects the update changed
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ZODB.utils import u64


def format_oid(oid: bytes | int | None) -> str | None:
    """Render an oid the way users see it in ZODB tools: ``0x2a``."""
    if oid is None:
        return None
    if isinstance(oid, bytes):
        oid = u64(oid)
    return hex(oid)


class DSUError(Exception):
    """Root of every dsustore error."""

    def __init__(
        self,
        message: str,
        *,
        migration: str | None = None,
        operation: str | None = None,
        class_name: str | None = None,
        oid: bytes | int | None = None,
    ) -> None:
        self.reason = message
        self.migration = migration
        self.operation = operation
        self.class_name = class_name
        self.oid = format_oid(oid)
        super().__init__(self._render())

    def facts(self) -> dict[str, Any]:
        """The structured context of the error (for logs and ``--json``)."""
        return {
            "error": type(self).__name__,
            "message": self.reason,
            "migration": self.migration,
            "operation": self.operation,
            "class": self.class_name,
            "oid": self.oid,
        }

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


class PatchStateError(DSUError):
    """A patch was used out of order (commit before begin, operations after commit)."""


class ClassResolutionError(DSUError, ImportError):
    """A class named by an operation or found in a record cannot be imported."""


class ReadOnlyStateError(DSUError, AttributeError):
    """A policy tried to change the old object or the old namespace."""


class OperationError(DSUError):
    """An operation failed while migrating one stored object."""


class PolicyError(OperationError):
    """A migration policy raised while migrating one stored object."""


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
