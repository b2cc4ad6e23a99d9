"""The stored schema: which fields each stored class declared when last migrated.

After every migration the runner records, for each class that has instances, the
fields its code declared. Comparing that record with the code running now shows
schema drift -- a class edited or removed without a migration -- and
:func:`draft_operations` turns the drift into the first lines of a migration.

A stored class whose module fails to import is not drift: the class may be there,
out of reach (the project folder not on ``sys.path``, a broken dependency). It is
reported as ``import_failed`` with the import's error, and never drafted as a
removal.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import persistent

from ..engine.bookkeeping import bookkeeping
from ..mop import read_class_definition
from ..mop.classes import import_problem, is_infrastructure, resolve
from ..storage.connections import reading


@dataclass(frozen=True)
class Drift:
    """One class whose code no longer matches its stored schema."""

    class_name: str
    kind: Literal["fields_differ", "class_missing", "import_failed"]
    stored_fields: tuple[str, ...]
    code_fields: tuple[str, ...] = ()
    added: tuple[str, ...] = field(default=())
    removed: tuple[str, ...] = field(default=())
    #: why the class does not resolve (``class_missing``, ``import_failed``)
    cause: str | None = None


def code_schema(class_names: Iterable[str]) -> dict[str, list[str]]:
    """The declared fields of each class as the current code defines it (unimportable ones omitted)."""
    schema: dict[str, list[str]] = {}
    for name in class_names:
        if resolve(name) is not None:
            schema[name] = list(read_class_definition(name).fields)
    return schema


def stored_schema(db: Any) -> dict[str, list[str]]:
    """The schema recorded in the database ({} before the first migration)."""
    with reading(db) as root:
        bk = bookkeeping(root)
        return {name: list(fields) for name, fields in bk.schema.items()} if bk is not None else {}


def record_schema(root: Any, classes: Iterable[str]) -> dict[str, list[str]]:
    """Record the declared fields of ``classes`` (those with instances) in the caller's transaction.

    A migration knows the classes from its own pass over the records, so recording
    costs no second scan. A class whose code does not import keeps its previous entry.
    """
    names = set(classes)
    bk = bookkeeping(root, create=True)
    previous = dict(bk.schema)
    schema = code_schema(name for name in names if not is_infrastructure(name))
    for name in names:
        if name not in schema and name in previous:
            schema[name] = list(previous[name])
    bk.schema = dict(sorted(schema.items()))
    return bk.schema


def schema_drift(db: Any) -> list[Drift]:
    """Classes whose current code differs from the schema recorded in ``db``."""
    drift: list[Drift] = []
    for name, stored in sorted(stored_schema(db).items()):
        stored_t = tuple(stored)
        problem = import_problem(name)
        if problem is not None and problem.missing:
            drift.append(Drift(name, "class_missing", stored_t, removed=stored_t, cause=problem.cause))
            continue
        if problem is not None:
            drift.append(Drift(name, "import_failed", stored_t, cause=problem.cause))
            continue
        code = read_class_definition(name).fields
        added = tuple(f for f in code if f not in stored_t)
        gone = tuple(f for f in stored_t if f not in code)
        if added or gone:
            drift.append(Drift(name, "fields_differ", stored_t, tuple(code), added, gone))
    return drift


def draft_operations(drift: Iterable[Drift]) -> list[str]:
    """Python source lines (``patch.…`` calls) for a draft migration fixing ``drift``."""
    lines: list[str] = []
    for item in drift:
        name = item.class_name
        if item.kind == "import_failed":
            lines.append(f"# TODO: {name} does not import ({item.cause}): nothing drafted for it")
            continue
        if item.kind == "class_missing":
            moved = _same_name_elsewhere(name)
            if moved:
                lines.append(f"patch.rename_class({name!r}, {moved!r})  # TODO check: guessed from the name")
            else:
                lines.append(f"patch.remove_class({name!r})  # TODO: or rename_class if it moved")
            continue
        if len(item.added) == 1 and len(item.removed) == 1:
            lines.append(
                f"patch.rename_field({name!r}, {item.removed[0]!r}, {item.added[0]!r})"
                "  # TODO check: guessed rename"
            )
            continue
        for new in item.added:
            lines.append(f"patch.add_field({name!r}, {new!r}, None)  # TODO value")
        for old in item.removed:
            lines.append(f"patch.remove_field({name!r}, {old!r})")
    return lines


def _same_name_elsewhere(dotted: str) -> str | None:
    """A persistent class of the same name in another loaded module (only when exactly one)."""
    module_name, _, name = dotted.rpartition(".")
    found = set()
    for mod_name, module in list(sys.modules.items()):
        if module is None or mod_name == module_name:
            continue
        candidate = getattr(module, name, None)
        if (isinstance(candidate, type) and issubclass(candidate, persistent.Persistent)
                and candidate.__module__ == mod_name):
            found.add(f"{mod_name}.{name}")
    return found.pop() if len(found) == 1 else None


__all__ = [
    "Drift",
    "code_schema",
    "draft_operations",
    "record_schema",
    "schema_drift",
    "stored_schema",
]
