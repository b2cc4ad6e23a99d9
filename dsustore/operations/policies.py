"""Migration policies: how the new state of an object is computed from the old one.

A policy (paper, Figure 4) is an object with ``migrate(old, new, old_ns, new_ns)``:
``old`` is a read-only view of the object as it was stored, ``new`` the object being
migrated, ``old_ns``/``new_ns`` the namespaces before and during the update. Policies
never change ``old`` or ``old_ns``.

Field policies compute the value of one field; ``add_field`` binds them to the field
it adds. The engine asks them for the value directly, so a constant or a value
computed from the old state never needs the object itself to be built.

Users write their own by subclassing :class:`MigrationPolicy` (or
:class:`FieldPolicy`), or pass a plain callable of the same signature.
"""

from __future__ import annotations

import copy as _copy
import inspect
from collections.abc import Callable
from typing import Any

__all__ = [
    "MigrationPolicy",
    "FieldPolicy",
    "Constant",
    "Factory",
    "Copy",
    "Compute",
    "Convert",
    "Chain",
    "constant",
    "factory",
    "copy",
    "compute",
    "convert",
    "chain",
    "as_policy",
]

_MISSING: Any = object()


class MigrationPolicy:
    """Computes the new state of one migrated object (paper: MigrationPolicy)."""

    def migrate(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> None:
        raise NotImplementedError

    def __call__(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> None:
        self.migrate(old, new, old_ns, new_ns)

    def describe(self) -> str:
        """How the policy shows in a printed plan."""
        return type(self).__name__

    def __repr__(self) -> str:
        return self.describe()


class FieldPolicy(MigrationPolicy):
    """A policy that computes the value of one field of the new object."""

    #: the field it sets; ``add_field`` fills it in when it is not given
    field: str | None = None
    #: whether :meth:`value` looks at ``new``; when not, the object is never built
    needs_new: bool = True
    #: whether :meth:`value` looks at ``old``; when not, no old view is prepared
    reads_old: bool = True

    def value(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> Any:
        raise NotImplementedError

    def for_field(self, name: str) -> FieldPolicy:
        """This policy bound to the field ``name``."""
        if self.field not in (None, name):
            raise ValueError(f"{self.describe()} sets {self.field!r}, not {name!r}")
        bound = _copy.copy(self)
        bound.field = name
        return bound

    def migrate(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> None:
        if self.field is None:
            raise ValueError(f"{self.describe()} is not bound to a field")
        setattr(new, self.field, self.value(old, new, old_ns, new_ns))


class Constant(FieldPolicy):
    """The same value for every object."""

    needs_new = False
    reads_old = False

    def __init__(self, value: Any, field: str | None = None) -> None:
        self.constant = value
        self.field = field

    def value(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> Any:
        return self.constant

    def describe(self) -> str:
        return f"constant({self.constant!r})"


class Factory(FieldPolicy):
    """A fresh value per object, from a callable taking no argument (``list``, ``dict``)."""

    needs_new = False
    reads_old = False

    def __init__(self, make: Callable[[], Any], field: str | None = None) -> None:
        self.make = make
        self.field = field

    def value(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> Any:
        return self.make()

    def describe(self) -> str:
        return f"factory({_name(self.make)})"


class Copy(FieldPolicy):
    """The value another field had before the update."""

    needs_new = False

    def __init__(self, source: str, *, default: Any = _MISSING, field: str | None = None) -> None:
        self.source = source
        self.default = default
        self.field = field

    def value(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> Any:
        if self.default is _MISSING:
            return getattr(old, self.source)
        return old.get(self.source, self.default)

    def describe(self) -> str:
        return f"copy({self.source!r})"


class Compute(FieldPolicy):
    """A value computed by a function of the old state.

    The function takes ``(old)``, ``(old, new)`` or ``(old, new, old_ns, new_ns)``.
    """

    def __init__(self, function: Callable[..., Any], field: str | None = None) -> None:
        self.function = function
        self.field = field
        self.arity = _arity(function, (1, 2, 4))
        self.needs_new = self.arity > 1

    def value(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> Any:
        return self.function(*(old, new, old_ns, new_ns)[: self.arity])

    def describe(self) -> str:
        return f"compute({_name(self.function)})"


class Convert(FieldPolicy):
    """A field's old value passed through a function (``price`` → ``Money(price)``)."""

    needs_new = False

    def __init__(self, field: str | None, function: Callable[[Any], Any], *,
                 source: str | None = None) -> None:
        self.field = field
        self.function = function
        self.source = source

    def value(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> Any:
        return self.function(getattr(old, self.source or self.field or ""))

    def describe(self) -> str:
        return f"convert({self.source or self.field!r}, {_name(self.function)})"


class Chain(MigrationPolicy):
    """Several policies applied one after the other to the same object."""

    def __init__(self, *policies: Any) -> None:
        self.policies = [as_policy(p) for p in policies]

    def migrate(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> None:
        for policy in self.policies:
            policy.migrate(old, new, old_ns, new_ns)

    def describe(self) -> str:
        return "chain(" + ", ".join(p.describe() for p in self.policies) + ")"


class _CallablePolicy(MigrationPolicy):
    def __init__(self, function: Callable[[Any, Any, Any, Any], None]) -> None:
        self.function = function

    def migrate(self, old: Any, new: Any, old_ns: Any, new_ns: Any) -> None:
        self.function(old, new, old_ns, new_ns)

    def describe(self) -> str:
        return _name(self.function)


def constant(value: Any) -> Constant:
    """Every object gets ``value``."""
    return Constant(value)


def factory(make: Callable[[], Any]) -> Factory:
    """Every object gets a fresh ``make()`` (for mutable defaults)."""
    return Factory(make)


def copy(source: str, *, default: Any = _MISSING) -> Copy:
    """The new field takes the value ``source`` had before the update."""
    return Copy(source, default=default)


def compute(function: Callable[..., Any]) -> Compute:
    """The new field takes ``function(old)`` (or ``(old, new)``, or all four arguments)."""
    return Compute(function)


def convert(field: str, function: Callable[[Any], Any], *, source: str | None = None) -> Convert:
    """``field`` becomes ``function(old.<source or field>)``."""
    return Convert(field, function, source=source)


def chain(*policies: Any) -> Chain:
    """Apply ``policies`` in order."""
    return Chain(*policies)


def as_policy(policy: Any) -> MigrationPolicy:
    """A MigrationPolicy for a policy object or a callable ``(old, new, old_ns, new_ns)``."""
    if isinstance(policy, MigrationPolicy):
        return policy
    if callable(getattr(policy, "migrate", None)):
        return _CallablePolicy(policy.migrate)
    if callable(policy) and not isinstance(policy, type):
        _arity(policy, (4,))
        return _CallablePolicy(policy)
    raise TypeError(
        f"{policy!r} is not a migration policy: give a MigrationPolicy, a callable "
        "(old, new, old_ns, new_ns), or for a field a plain value or policies.factory(...)"
    )


def field_policy(initial: Any, name: str) -> MigrationPolicy:
    """The policy ``add_field`` uses for ``initial``: bound field policies, others as given."""
    if isinstance(initial, FieldPolicy):
        return initial.for_field(name)
    if isinstance(initial, MigrationPolicy) or callable(getattr(initial, "migrate", None)):
        return as_policy(initial)
    if isinstance(initial, type):
        raise TypeError(
            f"add_field({name!r}) got the class {initial.__name__}: for a fresh value per "
            f"object use policies.factory({initial.__name__}), for the class itself "
            "policies.constant(...)"
        )
    if callable(initial):
        return as_policy(initial)
    return Constant(initial, field=name)


def _arity(function: Callable[..., Any], allowed: tuple[int, ...]) -> int:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return allowed[0]
    positional = [
        p for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return max(allowed)
    if len(positional) not in allowed:
        raise TypeError(
            f"{_name(function)} takes {len(positional)} arguments; a policy function takes "
            + " or ".join(str(a) for a in allowed)
        )
    return len(positional)


def _name(function: Any) -> str:
    return getattr(function, "__qualname__", None) or repr(function)
