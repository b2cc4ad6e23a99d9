"""Operations written out as Python: the lines of a migration script.

:func:`render` writes one operation as the ``patch.…`` call that records it, so a
drafted operation can go straight into ``upgrade(patch)`` and ``dsustore plan``
shows a pending migration's operations the way its script would say them. What
has no source form -- a lambda, a value whose ``repr`` does not read back, a policy
object's constructor arguments -- is written as a placeholder with a ``# TODO``
comment, so the line stays valid Python. An operation's ``note`` (why it was
drafted, what to check) is the comment too.

:func:`draft_downgrade` writes the reverses of a list of operations, last first:
the draft of a ``downgrade(patch)``. An operation that cannot be reversed (a field
removed, values converted) becomes a ``# TODO`` line naming it, or -- for a
removed field -- an ``add_field`` whose value is left to fill in.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from .ops import (
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
from .policies import (
    _MISSING,
    Chain,
    Compute,
    Constant,
    Convert,
    Copy,
    Factory,
    MigrationPolicy,
    _CallablePolicy,
    as_policy,
)
from .validations import Validation, _CallableValidation

__all__ = ["draft_downgrade", "render", "render_value"]


def render(op: Operation) -> str:
    """One operation as the line of Python that records it: ``patch.add_field("pkg.C", "x", 0)``."""
    todos: list[str] = []
    args = _arguments(op, todos)
    if args is None:
        return f"# TODO: {op.describe()} has no patch method to write it with"
    comment = "; ".join(part for part in (op.note, *todos) if part)
    line = f"patch.{op.name}({', '.join(args)})"
    return f"{line}  # {comment}" if comment else line


def draft_downgrade(operations: Iterable[Operation]) -> list[str]:
    """The lines of a downgrade undoing ``operations``: their reverses, last first.

    Validations need no undoing and are left out. A note that asks for a guess to be
    checked (``TODO check ...``) goes with the reverse, since a wrong guess is wrong
    both ways.
    """
    lines: list[str] = []
    for op in reversed(list(operations)):
        if isinstance(op, AddValidation):
            continue
        reverse = op.reverse()
        if reverse is not None:
            lines.append(render(replace(reverse, note=op.note if op.note.startswith("TODO check") else "")))
        elif isinstance(op, RemoveField):
            lines.append(render(AddField.of(op.class_name, op.field, None,
                                            note="TODO value: the upgrade dropped the stored values")))
        else:
            lines.append(f"# TODO: undo {render(op).split('  # ')[0]} -- {_why_irreversible(op)}")
    return lines


def render_value(value: Any) -> str | None:
    """``value`` as a Python literal that reads back equal, or None when it has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    text = repr(value)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return text if type(back) is type(value) and back == value else None


# -- the arguments of each operation -------------------------------------------------


def _arguments(op: Operation, todos: list[str]) -> list[str] | None:
    if isinstance(op, AddClass):
        extra = [f"initializer={_policy(op.initializer, todos)}"] if op.initializer is not None else []
        return [_name(op.class_name), *extra]
    if isinstance(op, ChangeSuperclass):
        args = [_name(op.class_name), _name(op.superclass)]
        if op.old_superclass:
            args.append(f"old_superclass={_name(op.old_superclass)}")
        if op.policy is not None:
            args.append(f"policy={_policy(op.policy, todos)}")
        return args
    if isinstance(op, RemoveClass):
        return [_name(op.class_name)]
    if isinstance(op, AddField):
        args = [_name(op.class_name), _name(op.field), _initial(op.policy, todos)]
        return args if op.keep_existing else [*args, "keep_existing=False"]
    if isinstance(op, RemoveField):
        return [_name(op.class_name), _name(op.field)]
    if isinstance(op, RenameField):
        return [_name(op.class_name), _name(op.old), _name(op.new)]
    if isinstance(op, MigrateInstances):
        return [_name(op.class_name), _policy(op.policy, todos)]
    if isinstance(op, RenameClass):
        return [_name(op.old_name), _name(op.new_name), *(["merge=True"] if op.merge else [])]
    if isinstance(op, AddValidation):
        return [_validation(op.validation, todos)]
    return None


def _why_irreversible(op: Operation) -> str:
    if isinstance(op, RemoveClass):
        return "its instances are no longer referenced; restore a snapshot to get them back"
    if isinstance(op, MigrateInstances):
        return "write the policy that computes the old values back"
    if isinstance(op, RenameClass):
        return "a merge forgets which instances had which class"
    if isinstance(op, ChangeSuperclass):
        return "the class's previous superclass is not known"
    return "it has no reverse"


def _name(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _initial(policy: Any, todos: list[str]) -> str:
    """``add_field``'s third argument: a plain value where the policy is a constant."""
    if isinstance(policy, Constant):
        literal = render_value(policy.constant)
        if literal is not None:
            return literal
        todos.append(f"TODO value: {policy.describe()}")
        return "None"
    return _policy(policy, todos)


def _policy(policy: Any, todos: list[str]) -> str:
    """A policy as the expression that builds it (``policies.compute(email_of)``)."""
    policy = as_policy(policy)
    if isinstance(policy, Constant):
        literal = render_value(policy.constant)
        if literal is None:
            todos.append(f"TODO value: {policy.describe()}")
        return f"policies.constant({literal or 'None'})"
    if isinstance(policy, Factory):
        return f"policies.factory({_function(policy.make, todos)})"
    if isinstance(policy, Copy):
        extra = ""
        if policy.default is not _MISSING:
            default = render_value(policy.default)
            if default is None:
                todos.append(f"TODO default: {policy.default!r}")
            extra = f", default={default or 'None'}"
        return f"policies.copy({_name(policy.source)}{extra})"
    if isinstance(policy, Compute):
        return f"policies.compute({_function(policy.function, todos)})"
    if isinstance(policy, Convert):
        source = f", source={_name(policy.source)}" if policy.source else ""
        return f"policies.convert({_name(policy.field or '')}, {_function(policy.function, todos)}{source})"
    if isinstance(policy, Chain):
        return f"policies.chain({', '.join(_policy(p, todos) for p in policy.policies)})"
    if isinstance(policy, _CallablePolicy):
        return _function(policy.function, todos)
    return _instance(policy, todos)


def _validation(validation: Any, todos: list[str]) -> str:
    """A validation as the script builds it: its class called, or its function named."""
    if isinstance(validation, _CallableValidation):
        return _function(validation.function, todos)
    return _instance(validation, todos)


def _instance(obj: MigrationPolicy | Validation | Any, todos: list[str]) -> str:
    """An object of the script's own class, as a call of that class."""
    cls = type(obj)
    state = {k: v for k, v in getattr(obj, "__dict__", {}).items()
             if not k.startswith("_") and k not in ("flagged", "flagged_count")}
    if state:
        shown = ", ".join(f"{k}={render_value(v) or '...'}" for k, v in state.items())
        todos.append(f"TODO arguments: built with {shown}")
    return f"{cls.__qualname__}()"


def _function(function: Callable[..., Any], todos: list[str]) -> str:
    """A function by the name the script knows it by; a lambda or local one as a TODO.

    A bound ``migrate`` or ``execute`` stands for its object (a policy or validation
    given as any object with that method): the object's class is called.
    """
    owner = getattr(function, "__self__", None)
    if owner is not None and getattr(function, "__name__", None) in ("migrate", "execute"):
        return _instance(owner, todos)
    name = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    if isinstance(name, str) and all(part.isidentifier() for part in name.split(".")):
        return name
    todos.append(f"TODO function: {name or repr(function)} has no name to write")
    return "None"
