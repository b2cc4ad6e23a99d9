"""Validations: invariants checked after the new state is built and before it commits.

A validation (paper, Figure 5) is an object with ``execute(old_ns, new_ns) -> bool``,
or a callable of that signature. System validations always run; application
validations are added per patch. A failing validation rolls the update back and is
reported with the objects it flagged: a validation flags objects with :meth:`flag`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ValidationFailure, format_oid

__all__ = ["Validation", "SystemValidation", "as_validation"]

#: how many flagged objects a failure lists by oid
FLAG_LIMIT = 100


class Validation:
    """An invariant over the old and new namespaces (paper: Validation)."""

    #: what is checked, shown when it fails; defaults to the class docstring's first line
    message: str = ""

    def __init__(self) -> None:
        self.flagged: list[str] = []
        self.flagged_count = 0

    def execute(self, old_ns: Any, new_ns: Any) -> bool:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def flag(self, obj_or_oid: Any) -> None:
        """Record an object (or oid) that breaks the invariant."""
        if not hasattr(self, "flagged"):
            Validation.__init__(self)
        self.flagged_count += 1
        if len(self.flagged) < FLAG_LIMIT:
            oid = getattr(obj_or_oid, "_p_oid", obj_or_oid)
            self.flagged.append(format_oid(oid) if isinstance(oid, (bytes, int)) else str(oid))

    def describe(self) -> str:
        doc = (type(self).__doc__ or "").strip().splitlines()
        return self.message or (doc[0] if doc else self.name)

    def failure(self, detail: str | None = None) -> ValidationFailure:
        flagged = getattr(self, "flagged", [])
        count = getattr(self, "flagged_count", 0)
        message = detail or self.describe()
        if count > len(flagged):
            message += f" ({count} objects)"
        return ValidationFailure(self.name, message, tuple(flagged))


class SystemValidation(Validation):
    """A validation dsustore runs on every update, from what the migration pass found."""

    def __init__(self, message: str, flagged: Iterable[bytes] = (), *, count: int | None = None,
                 failed: bool | None = None) -> None:
        super().__init__()
        self.message = message
        for oid in flagged:
            self.flag(oid)
        if count is not None:
            self.flagged_count = count
        self._failed = bool(self.flagged_count) if failed is None else failed

    def execute(self, old_ns: Any, new_ns: Any) -> bool:
        return not self._failed


class _CallableValidation(Validation):
    def __init__(self, function: Callable[[Any, Any], bool], *, name: str | None = None,
                 doc: str | None = None) -> None:
        super().__init__()
        self.function = function
        self._name = name or str(getattr(function, "__qualname__", repr(function)))
        first = (doc or getattr(function, "__doc__", None) or "").strip().splitlines()
        self.message = first[0] if first else self._name

    @property
    def name(self) -> str:
        return self._name

    def execute(self, old_ns: Any, new_ns: Any) -> bool:
        return self.function(old_ns, new_ns)


def as_validation(validation: Any) -> Validation:
    """A Validation for a validation object or a callable ``(old_ns, new_ns) -> bool``."""
    if isinstance(validation, Validation):
        if not hasattr(validation, "flagged"):
            Validation.__init__(validation)
        return validation
    if callable(getattr(validation, "execute", None)):
        return _CallableValidation(
            validation.execute, name=type(validation).__name__, doc=type(validation).__doc__
        )
    if callable(validation):
        return _CallableValidation(validation)
    raise TypeError(f"{validation!r} is not a validation: give an object with execute(old_ns, new_ns)")
