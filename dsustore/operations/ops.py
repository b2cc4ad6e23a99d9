"""The DSU operations (paper, Figure 2) as data: printable, checkable, reversible where they can be.

An operation is recorded by a patch and executed only when the patch commits. Each
knows which stored classes it applies to (a class and its subclasses), what it does
to one stored instance -- and whether that changed it, so an instance that already
has the shape is left as it is --, what it promises about the instance afterwards
(checked by a system validation), the classes it needs to exist, and its inverse
when it has one. Classes are spoken of by name: an operation on a class the code
no longer has (a downgrade runs with the newer code) works on its stored records.

Operations are the one currency of migrations: a patch records them, ``plan`` and
``status`` print them, and autogenerate drafts them from schema drift and writes
them out as Python with :func:`dsustore.operations.render.render` (their
:meth:`Operation.reverse` giving the draft downgrade). A drafted operation carries a
``note`` -- why it was drafted, what to check -- that the rendering shows as a comment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import OperationError
from ..mop.classes import declared_fields, require, resolve
from ..mop.inline import InlineInstance
from ..mop.instance import StoredInstance
from .policies import FieldPolicy, MigrationPolicy, as_policy, field_policy
from .validations import as_validation

#: what an operation migrates: a record, or an object stored inline in one
Instance = StoredInstance | InlineInstance


class Context:
    """What operations may use while they run: the two namespaces."""

    old_ns: Any
    new_ns: Any


@dataclass(frozen=True)
class Operation:
    """Base of all operations."""

    name: ClassVar[str] = "operation"
    #: whether the operation changes stored instances of its class (and subclasses)
    per_instance: ClassVar[bool] = False
    #: why it was drafted or what to check (autogenerate); rendered as a comment, never compared
    note: str = field(default="", compare=False, repr=False, kw_only=True)

    def describe(self) -> str:
        raise NotImplementedError

    def reverse(self) -> Operation | None:
        """The operation that undoes this one, or None when data is lost."""
        return None

    def targets(self) -> tuple[str, ...]:
        """Dotted names of the classes the operation applies to (its own class by default)."""
        class_name = getattr(self, "class_name", None)
        return (class_name,) if class_name else ()

    def classes_named(self) -> tuple[str, ...]:
        """The classes that must exist, in the code or in the stored records."""
        return self.targets() if self.per_instance else ()

    def unknown_classes(self, stored: Callable[[str], bool]) -> tuple[str, ...]:
        """The classes it names that neither import nor are ``stored``: misspelt, most likely."""
        return tuple(name for name in self.classes_named()
                     if resolve(name) is None and not stored(name))

    def reads_old(self) -> bool:
        """Whether applying it may read the instance's old view (``inst.old``)."""
        return self.per_instance

    def prepare(self, ctx: Context) -> None:
        """Class-level checks and work, before any instance is migrated."""

    def apply(self, inst: Instance, ctx: Context) -> bool | None:
        """Migrate one stored instance; whether that changed it (None: a policy ran, it may have)."""
        return False

    def broken_promise(self, inst: Instance) -> str | None:
        """Why the instance does not have the shape this operation promises, if it does not."""
        return None

    def __str__(self) -> str:
        return self.describe()


def _set_field(inst: Instance, policy: MigrationPolicy, name: str | None,
               ctx: Context, *, keep_existing: bool = False) -> bool | None:
    """Run a policy on one instance, at the dict level when the policy allows it.

    Returns True when it gave the instance a field it lacked, False when it kept the
    one there, None when it replaced a value or ran a policy on the object.
    """
    if isinstance(policy, FieldPolicy) and not policy.needs_new and name is not None:
        fields = inst.fields
        had = name in fields
        if keep_existing and had:
            return False
        old = inst.old if policy.reads_old else None  # no view for a value that ignores it
        fields[name] = policy.value(old, None, ctx.old_ns, ctx.new_ns)
        return None if had else True
    if keep_existing and name is not None and name in inst.fields:
        return False
    policy.migrate(inst.old, inst.obj(), ctx.old_ns, ctx.new_ns)
    return None


@dataclass(frozen=True)
class AddClass(Operation):
    """A class new in the code; its initializer sets up class-level state in the new namespace."""

    name: ClassVar[str] = "add_class"
    class_name: str
    initializer: Any = None

    def describe(self) -> str:
        init = f", initializer={as_policy(self.initializer).describe()}" if self.initializer else ""
        return f"add_class({self.class_name}{init})"

    def reverse(self) -> Operation | None:
        return RemoveClass(self.class_name)

    def prepare(self, ctx: Context) -> None:
        cls = require(self.class_name, operation=self.describe())
        if self.initializer is not None:
            as_policy(self.initializer).migrate(None, cls, ctx.old_ns, ctx.new_ns)


@dataclass(frozen=True)
class ChangeSuperclass(Operation):
    """A class now derives from another; its instances get the fields the new base declares.

    ``old_superclass``, the base it derived from before, makes the operation
    reversible: the reverse puts the class back under it. When the new base declares
    fields the class did not have, the instances need values for them: a ``policy``
    here, or an ``add_field`` per field (a system validation checks they have them).
    """

    name: ClassVar[str] = "change_superclass"
    per_instance: ClassVar[bool] = True
    class_name: str
    superclass: str
    policy: Any = None
    old_superclass: str | None = None
    promised: tuple[str, ...] = field(default=(), compare=False)

    def describe(self) -> str:
        policy = f", policy={as_policy(self.policy).describe()}" if self.policy else ""
        old = f", old_superclass={self.old_superclass}" if self.old_superclass else ""
        return f"change_superclass({self.class_name}, {self.superclass}{old}{policy})"

    def reverse(self) -> Operation | None:
        if self.old_superclass is None:
            return None
        return ChangeSuperclass(self.class_name, self.old_superclass, old_superclass=self.superclass)

    def prepare(self, ctx: Context) -> None:
        """Check the code agrees, where it has both classes; promise the base's fields.

        A side the code does not have is taken by name (a downgrade runs with the
        newer code): its instances are found by their stored name, and a base the
        code lacks promises no fields. Likewise when the code's class still derives
        from ``old_superclass``: the code is the newer one, and the stored instances
        go back under the older base by name.
        """
        cls, base = resolve(self.class_name), resolve(self.superclass)
        if base is None:
            return
        if cls is not None and not issubclass(cls, base):
            old = resolve(self.old_superclass) if self.old_superclass else None
            if old is not None and issubclass(cls, old):
                return
            raise OperationError(
                f"the code's class does not derive from {self.superclass}; change the class "
                "in the code first, the patch migrates the stored instances",
                operation=self.describe(),
                class_name=self.class_name,
            )
        promised = tuple(f for f in declared_fields(base) if cls is None or not hasattr(cls, f))
        object.__setattr__(self, "promised", promised)

    def apply(self, inst: Instance, ctx: Context) -> bool | None:
        if self.policy is None:
            return False
        as_policy(self.policy).migrate(inst.old, inst.obj(), ctx.old_ns, ctx.new_ns)
        return None

    def broken_promise(self, inst: Instance) -> str | None:
        missing = [f for f in self.promised if not inst.has_field(f)]
        if missing:
            return f"lacks {', '.join(missing)} declared by {self.superclass}"
        return None


@dataclass(frozen=True)
class RemoveClass(Operation):
    """A class gone from the code: validated that nothing references an instance of it."""

    name: ClassVar[str] = "remove_class"
    class_name: str

    def describe(self) -> str:
        return f"remove_class({self.class_name})"

    def classes_named(self) -> tuple[str, ...]:
        return (self.class_name,)


@dataclass(frozen=True)
class AddField(Operation):
    """A new field, its value computed per instance by a policy."""

    name: ClassVar[str] = "add_field"
    per_instance: ClassVar[bool] = True
    class_name: str
    field: str
    policy: MigrationPolicy
    keep_existing: bool = True

    @classmethod
    def of(cls, class_name: str, field_name: str, initial: Any, *, keep_existing: bool = True,
           note: str = "") -> AddField:
        """The operation ``patch.add_field(class_name, field_name, initial)`` records."""
        return cls(class_name, field_name, field_policy(initial, field_name), keep_existing, note=note)

    def describe(self) -> str:
        return f"add_field({self.class_name}, {self.field!r}, {self.policy.describe()})"

    def reverse(self) -> Operation | None:
        return RemoveField(self.class_name, self.field)

    def reads_old(self) -> bool:
        return getattr(self.policy, "reads_old", True)

    def apply(self, inst: Instance, ctx: Context) -> bool | None:
        return _set_field(inst, self.policy, self.field, ctx, keep_existing=self.keep_existing)

    def broken_promise(self, inst: Instance) -> str | None:
        return None if inst.has_field(self.field) else f"has no field {self.field!r}"


@dataclass(frozen=True)
class RemoveField(Operation):
    """A field dropped from every instance."""

    name: ClassVar[str] = "remove_field"
    per_instance: ClassVar[bool] = True
    class_name: str
    field: str

    def describe(self) -> str:
        return f"remove_field({self.class_name}, {self.field!r})"

    def reads_old(self) -> bool:
        return False

    def apply(self, inst: Instance, ctx: Context) -> bool | None:
        fields = inst.fields
        if self.field not in fields:
            return False
        del fields[self.field]
        return True

    def broken_promise(self, inst: Instance) -> str | None:
        return f"still has field {self.field!r}" if inst.stores(self.field) else None


@dataclass(frozen=True)
class RenameField(Operation):
    """A field renamed, its value kept."""

    name: ClassVar[str] = "rename_field"
    per_instance: ClassVar[bool] = True
    class_name: str
    old: str
    new: str

    def __post_init__(self) -> None:
        if self.old == self.new:
            raise OperationError(
                f"renaming field {self.old!r} to itself changes nothing and could never hold; "
                "name the field's new name", operation=self.describe(), class_name=self.class_name)

    def describe(self) -> str:
        return f"rename_field({self.class_name}, {self.old!r}, {self.new!r})"

    def reverse(self) -> Operation | None:
        return RenameField(self.class_name, self.new, self.old)

    def reads_old(self) -> bool:
        return False

    def apply(self, inst: Instance, ctx: Context) -> bool | None:
        fields = inst.fields
        if self.old not in fields:
            return False
        fields[self.new] = fields.pop(self.old)
        return True

    def broken_promise(self, inst: Instance) -> str | None:
        if inst.stores(self.old):
            return f"still has field {self.old!r}"
        if not inst.has_field(self.new):
            return f"has no field {self.new!r}"
        return None


@dataclass(frozen=True)
class MigrateInstances(Operation):
    """A value change: every instance passed through a policy."""

    name: ClassVar[str] = "migrate_instances"
    per_instance: ClassVar[bool] = True
    class_name: str
    policy: MigrationPolicy

    def describe(self) -> str:
        return f"migrate_instances({self.class_name}, {self.policy.describe()})"

    def apply(self, inst: Instance, ctx: Context) -> bool | None:
        field_name = self.policy.field if isinstance(self.policy, FieldPolicy) else None
        _set_field(inst, self.policy, field_name, ctx)
        return None


@dataclass(frozen=True)
class RenameClass(Operation):
    """A class renamed or moved to another module: records and references rewritten.

    Records are rewritten by name: the new name is written as given, whether the
    code has it or not (a downgrade runs with the newer code, and writes the name
    the older code will import). Renaming onto a class that already has stored
    instances merges the two, which ``merge`` must say is meant.
    """

    name: ClassVar[str] = "rename_class"
    old_name: str
    new_name: str
    merge: bool = False

    def describe(self) -> str:
        return f"rename_class({self.old_name}, {self.new_name}{', merge=True' if self.merge else ''})"

    def reverse(self) -> Operation | None:
        # a merge forgets which instances had which class
        return None if self.merge else RenameClass(self.new_name, self.old_name)

    def targets(self) -> tuple[str, ...]:
        return (self.old_name, self.new_name)

    def classes_named(self) -> tuple[str, ...]:
        return (self.old_name,)

    def unknown_classes(self, stored: Callable[[str], bool]) -> tuple[str, ...]:
        if self.merge and stored(self.new_name):
            return ()  # a merge into stored instances: the old name may have none left
        return super().unknown_classes(stored)


@dataclass(frozen=True)
class AddValidation(Operation):
    """An application validation to run before commit."""

    name: ClassVar[str] = "add_validation"
    validation: Any

    def describe(self) -> str:
        return f"add_validation({as_validation(self.validation).name})"


def matches(op: Operation, stored_name: str, new_name: str, klass: type | None) -> bool:
    """Whether a per-instance operation applies to a record of class ``stored_name``."""
    for target in op.targets():
        if target in (stored_name, new_name):
            return True
        if klass is not None:
            base = resolve(target)
            if base is not None and issubclass(klass, base):
                return True
    return False
