"""The stored schema: the shape of each stored class as the migrations left it, and drift.

After every migration the runner records, for each class that has instances, its
fields, its bases and the types its fields declare. A class seen for the first time
is recorded as the code declares it then; from then on its record follows the
migrations' operations -- ``add_field`` adds the field, ``rename_field`` renames it,
``rename_class`` moves the entry, ``change_superclass`` changes the bases and adds
the fields the new base promises -- so the record describes the stored data, not
whatever the code said when some migration last ran.

Comparing that record with the code running now gives schema drift, as the
operations a migration needs (:func:`schema_drift`): fields added and removed, a
field renamed (one gone and one of the same type new in the same class, a guess to
confirm), a class moved (gone from one module while a class of the same name and
fields is in another), a superclass changed. Each drafted operation's ``note`` says
what to check; :mod:`dsustore.operations.render` writes them as Python.

Where a database has no record yet, :func:`record_observed_schema` can start it from
the data itself: the fields its stored instances have, read without their classes
(the testing helpers do so, so that the migrations' tests start from the shape the
oldest release stored, not from the code under test).

A stored class whose module fails to import is not drift: the class may be there,
out of reach (the project folder not on ``sys.path``, a broken dependency). It is
reported by :func:`import_failures` with the import's error, and never drafted as a
removal.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import persistent

from ..engine.bookkeeping import bookkeeping
from ..mop import read_class_definition
from ..mop.classes import ImportProblem, import_problem, is_infrastructure, resolve
from ..mop.records import class_name_of
from ..mop.stored import decode_state, state_fields
from ..operations.ops import (
    AddField,
    ChangeSuperclass,
    Operation,
    RemoveClass,
    RemoveField,
    RenameClass,
    RenameField,
)
from ..operations.render import render_value
from ..storage import adapter_for
from ..storage.connections import private_connection, reading
from ..storage.transactions import mark

#: asked about each guess (a renamed field, a moved class) when drafting interactively
Confirm = Callable[[Operation], bool]


@dataclass(frozen=True)
class ClassShape:
    """What the schema knows of one class: its fields, its bases, its fields' types.

    ``bases`` is None where it was not recorded (databases written before dsustore
    recorded bases); ``types`` holds the declared type of the fields that have one
    (annotations), as text.
    """

    fields: tuple[str, ...]
    bases: tuple[str, ...] | None = None
    types: Mapping[str, str] = field(default_factory=dict)


# -- the code's side ------------------------------------------------------------------


def code_shape(class_name: str) -> ClassShape | None:
    """The shape of a class as the current code defines it (None when it does not import)."""
    klass = resolve(class_name)
    if klass is None:
        return None
    definition = read_class_definition(klass)
    return ClassShape(definition.fields, definition.bases, _field_types(klass))


def code_schema(class_names: Iterable[str]) -> dict[str, list[str]]:
    """The declared fields of each class as the current code defines it (unimportable ones omitted)."""
    schema: dict[str, list[str]] = {}
    for name in class_names:
        shape = code_shape(name)
        if shape is not None:
            schema[name] = list(shape.fields)
    return schema


def _field_types(klass: type) -> dict[str, str]:
    """The declared type of each annotated field, as text (``"float"``, ``"list[str]"``)."""
    types: dict[str, str] = {}
    for cls in reversed(klass.__mro__):
        if cls is object or cls.__module__ in ("persistent", "builtins"):
            continue
        for name, hint in inspect.get_annotations(cls).items():
            if not name.startswith("_") and "ClassVar" not in str(hint):
                types[name] = hint if isinstance(hint, str) else getattr(hint, "__qualname__", repr(hint))
    return types


# -- the stored side ------------------------------------------------------------------


def stored_schema(db: Any) -> dict[str, list[str]]:
    """The fields of each stored class as recorded in the database ({} before the first migration)."""
    return {name: list(shape.fields) for name, shape in stored_shapes(db).items()}


def stored_shapes(db: Any) -> dict[str, ClassShape]:
    """The recorded shape of each stored class ({} before the first migration)."""
    with reading(db) as root:
        bk = bookkeeping(root)
        return _recorded(bk) if bk is not None else {}


def _recorded(bk: Any) -> dict[str, ClassShape]:
    shapes = bk.shapes or {}
    found: dict[str, ClassShape] = {}
    for name, fields in bk.schema.items():
        extra = shapes.get(name) or {}
        bases = extra.get("bases")
        found[name] = ClassShape(tuple(fields), tuple(bases) if bases is not None else None,
                                 dict(extra.get("types") or {}))
    return found


def observed_shapes(db: Any, *, samples: int | None = None) -> dict[str, ClassShape]:
    """The fields the stored instances of each application class have, read from the records.

    Every record is scanned; at most ``samples`` instances per class are decoded
    (all of them by default), their fields joined in the order first seen. Nothing
    of the application is imported. Bases and types cannot be read from the data
    and are left unknown.
    """
    fields: dict[str, dict[str, None]] = {}
    decoded: Counter[str] = Counter()
    for _oid, _tid, data in adapter_for(db).current_records():
        name = class_name_of(data)
        if is_infrastructure(name) or (samples is not None and decoded[name] >= samples):
            continue
        state = state_fields(decode_state(data))
        if state is None:
            continue
        decoded[name] += 1
        fields.setdefault(name, {}).update(dict.fromkeys(f for f in state if not f.startswith("_")))
    return {name: ClassShape(tuple(found)) for name, found in sorted(fields.items())}


def record_observed_schema(db: Any) -> dict[str, list[str]]:
    """Record, for each stored class the schema has no entry for, the fields its instances have
    (:func:`observed_shapes`), in a transaction of its own; the schema as it is then."""
    observed = observed_shapes(db)
    with private_connection(db) as (conn, tm):
        bk = bookkeeping(conn.root(), create=True)
        missing = {name: shape for name, shape in observed.items() if name not in bk.schema}
        if missing:
            shapes = dict(bk.shapes or {})
            schema = dict(bk.schema)
            for name, shape in missing.items():
                schema[name] = list(shape.fields)
                shapes[name] = {"bases": None, "types": {}}
            bk.schema, bk.shapes = dict(sorted(schema.items())), shapes
            mark(tm.get(), "dsustore record the schema of the stored data",
                 observed=sorted(missing))
            tm.commit()
        return {name: list(fields) for name, fields in bk.schema.items()}


def record_schema(root: Any, classes: Iterable[str],
                  operations: Iterable[Operation] = ()) -> dict[str, list[str]]:
    """Record the shape of ``classes`` (those with instances) in the caller's transaction.

    The previous record, with ``operations`` (the migration's, in order) applied to
    it, is the new one; a class not recorded before starts as the code declares it.
    A migration knows the classes from its own pass over the records, so recording
    costs no second scan. A class whose code does not import keeps its entry.
    """
    names = {name for name in classes if not is_infrastructure(name)}
    bk = bookkeeping(root, create=True)
    picture = _recorded(bk)
    for name in sorted(names - picture.keys()):
        shape = code_shape(name)
        if shape is not None:
            picture[name] = shape
    for op in operations:
        _replay(picture, op)
    kept = {name: picture[name] for name in sorted(names) if name in picture}
    bk.schema = {name: list(shape.fields) for name, shape in kept.items()}
    bk.shapes = {name: {"bases": list(shape.bases) if shape.bases is not None else None,
                        "types": dict(shape.types)} for name, shape in kept.items()}
    return bk.schema


def _replay(picture: dict[str, ClassShape], op: Operation) -> None:
    """What ``op`` did to the stored instances, done to their recorded shapes."""
    if isinstance(op, RenameClass):
        moved = picture.pop(op.old_name, None)
        if moved is not None:
            into = picture.get(op.new_name) if op.merge else None
            if into is not None:
                moved = replace(into, fields=into.fields + tuple(f for f in moved.fields
                                                                  if f not in into.fields),
                                types={**moved.types, **into.types})
            picture[op.new_name] = moved
        for name, shape in picture.items():
            if shape.bases and op.old_name in shape.bases:
                picture[name] = replace(shape, bases=tuple(op.new_name if b == op.old_name else b
                                                           for b in shape.bases))
        return
    if isinstance(op, RemoveClass):
        picture.pop(op.class_name, None)
        return
    if isinstance(op, ChangeSuperclass):
        changed = picture.get(op.class_name)
        if changed is not None:
            bases = changed.bases or ()
            if op.old_superclass in bases:
                bases = tuple(op.superclass if b == op.old_superclass else b for b in bases)
            else:
                bases = (op.superclass,)
            picture[op.class_name] = replace(changed, bases=bases)
        for name in _affected(picture, op.class_name):
            _add_fields(picture, name, op.promised)
        return
    if isinstance(op, AddField):
        for name in _affected(picture, op.class_name):
            _add_fields(picture, name, (op.field,))
        return
    if isinstance(op, RemoveField):
        for name in _affected(picture, op.class_name):
            shape = picture[name]
            types = {k: v for k, v in shape.types.items() if k != op.field}
            picture[name] = replace(shape, fields=tuple(f for f in shape.fields if f != op.field),
                                    types=types)
        return
    if isinstance(op, RenameField):
        for name in _affected(picture, op.class_name):
            shape = picture[name]
            if op.old not in shape.fields:
                continue
            fields = tuple(op.new if f == op.old else f for f in shape.fields if f != op.new)
            types = {(op.new if k == op.old else k): v for k, v in shape.types.items() if k != op.new}
            picture[name] = replace(shape, fields=fields, types=types)


def _add_fields(picture: dict[str, ClassShape], name: str, fields: Iterable[str]) -> None:
    shape = picture[name]
    new = tuple(f for f in fields if f not in shape.fields)
    if not new:
        return
    klass = resolve(name)
    declared = _field_types(klass) if klass is not None else {}
    types = dict(shape.types)
    types.update({f: declared[f] for f in new if f in declared})
    picture[name] = replace(shape, fields=shape.fields + new, types=types)


def _affected(picture: Mapping[str, ClassShape], class_name: str) -> list[str]:
    """The recorded classes an operation on ``class_name`` reaches: it and its subclasses,
    by the recorded bases or, where both import, by the code."""
    base = resolve(class_name)
    found = []
    for name in picture:
        if name == class_name or class_name in _recorded_ancestors(picture, name):
            found.append(name)
            continue
        klass = resolve(name) if base is not None else None
        if klass is not None and base is not None and issubclass(klass, base):
            found.append(name)
    return found


def _recorded_ancestors(picture: Mapping[str, ClassShape], name: str) -> set[str]:
    seen: set[str] = set()
    stack = list(picture[name].bases or ())
    while stack:
        base = stack.pop()
        if base not in seen:
            seen.add(base)
            if base in picture:
                stack.extend(picture[base].bases or ())
    return seen


# -- drift ------------------------------------------------------------------------------


def import_failures(db: Any) -> list[ImportProblem]:
    """Stored classes whose module fails to import (not drift: they may well exist)."""
    problems = []
    for name in sorted(stored_shapes(db)):
        problem = import_problem(name)
        if problem is not None and not problem.missing:
            problems.append(problem)
    return problems


def schema_drift(db: Any, *, confirm: Confirm | None = None) -> list[Operation]:
    """The operations that would bring the stored schema in line with the code, class by class.

    Guesses -- a renamed field, a class moved to another module where its fields
    differ -- carry a ``TODO check`` note. With ``confirm``, each guess is asked about instead: a
    confirmed one is drafted without the note, a refused one as what it otherwise
    is (a field added and one removed; a class removed). Classes whose module fails
    to import are left out (see :func:`import_failures`).
    """
    stored = stored_shapes(db)
    operations: list[Operation] = []
    for name, shape in sorted(stored.items()):
        problem = import_problem(name)
        if problem is None:
            code = code_shape(name)
            if code is not None:
                operations += _class_drift(name, shape, code, confirm)
        elif problem.missing:
            operations += _gone(name, shape, stored, confirm)
    return _said_once(operations)


def _said_once(operations: list[Operation]) -> list[Operation]:
    """Drop a field operation on a subclass that the same operation on its base already does
    (``remove_field`` on ``User`` reaches ``Admin``'s instances)."""
    def key(op: Operation) -> tuple[Any, ...] | None:
        if isinstance(op, AddField):
            return ("add", op.field)
        if isinstance(op, RemoveField):
            return ("remove", op.field)
        if isinstance(op, RenameField):
            return ("rename", op.old, op.new)
        return None

    by_key: dict[tuple[Any, ...], list[type]] = {}
    for op in operations:
        k, klass = key(op), resolve(operation_class(op))
        if k is not None and klass is not None:
            by_key.setdefault(k, []).append(klass)
    kept = []
    for op in operations:
        k, klass = key(op), resolve(operation_class(op))
        if k is not None and klass is not None and any(
                base is not klass and issubclass(klass, base) for base in by_key[k]):
            continue
        kept.append(op)
    return kept


def _class_drift(name: str, stored: ClassShape, code: ClassShape,
                 confirm: Confirm | None) -> list[Operation]:
    """The operations from one class's stored shape to its code: superclass, renames, fields."""
    operations: list[Operation] = []
    added = [f for f in code.fields if f not in stored.fields]
    removed = [f for f in stored.fields if f not in code.fields]
    if stored.bases is not None and set(stored.bases) != set(code.bases or ()):
        new_bases = [b for b in code.bases or () if b not in stored.bases]
        old_bases = [b for b in stored.bases if b not in (code.bases or ())]
        if len(new_bases) == 1:
            declared = [f for f in added if f in _declared_by(new_bases[0])]
            note = (f"{new_bases[0]} declares {', '.join(declared)}: the add_field below gives "
                    "it a value, or give this a policy" if declared else "")
            operations.append(ChangeSuperclass(name, new_bases[0],
                                               old_superclass=old_bases[0] if len(old_bases) == 1 else None,
                                               note=note))
    for old, new, why in _field_renames(removed, added, stored.types, code.types):
        rename = RenameField(name, old, new, note=f"TODO check: guessed rename ({why})")
        if confirm is not None:
            if not confirm(rename):
                continue
            rename = replace(rename, note="")
        operations.append(rename)
        added.remove(new)
        removed.remove(old)
    defaults = _defaults(name)
    for new in added:
        literal = render_value(defaults[new]) if new in defaults else None
        if literal is not None:
            operations.append(AddField.of(name, new, defaults[new], note="the class's default"))
        else:
            operations.append(AddField.of(name, new, None, note="TODO value"))
    operations += [RemoveField(name, old) for old in removed]
    return operations


def _field_renames(removed: list[str], added: list[str], old_types: Mapping[str, str],
                   new_types: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Pairs (old, new, why) that look like renames: the one field of a type gone and the one
    of that type new; then, types unknown, the one field gone and the one new."""
    pairs = []
    for kind in sorted({old_types[f] for f in removed if f in old_types}):
        gone = [f for f in removed if old_types.get(f) == kind]
        new = [f for f in added if new_types.get(f) == kind]
        if len(gone) == 1 and len(new) == 1:
            pairs.append((gone[0], new[0], f"both {kind}"))
    paired_old = {p[0] for p in pairs}
    paired_new = {p[1] for p in pairs}
    gone = [f for f in removed if f not in paired_old]
    new = [f for f in added if f not in paired_new]
    if len(gone) == 1 and len(new) == 1 and (gone[0] not in old_types or new[0] not in new_types):
        pairs.append((gone[0], new[0], "one field gone, one new"))
    return pairs


def _gone(name: str, shape: ClassShape, stored: Mapping[str, ClassShape],
          confirm: Confirm | None) -> list[Operation]:
    """A stored class the code no longer has: moved (a class of its name elsewhere), or removed."""
    candidates = [c for c in _same_name_elsewhere(name) if c not in stored]
    shapes = {c: code_shape(c) for c in candidates}
    same_fields = [c for c, s in shapes.items() if s is not None and set(s.fields) == set(shape.fields)]
    target, note = None, ""
    if len(same_fields) == 1:
        target, note = same_fields[0], "moved: a class of the same name and fields"
    elif len(candidates) == 1:
        target, note = candidates[0], "TODO check: guessed from the name, its fields differ"
    if target is not None:
        move = RenameClass(name, target, note=note)
        if confirm is None or confirm(move):
            code = shapes[target]
            drift = _class_drift(target, shape, code, confirm) if code is not None else []
            return [move if confirm is None else replace(move, note=""), *drift]
    elsewhere = f" ({', '.join(candidates)} have its name)" if len(candidates) > 1 else ""
    return [RemoveClass(name, note=f"TODO check: or rename_class, if it moved{elsewhere}")]


def _declared_by(base: str) -> tuple[str, ...]:
    shape = code_shape(base)
    return shape.fields if shape is not None else ()


def _defaults(class_name: str) -> dict[str, Any]:
    klass = resolve(class_name)
    return dict(read_class_definition(klass).defaults) if klass is not None else {}


def _same_name_elsewhere(dotted: str) -> list[str]:
    """Persistent classes of the same name defined in other modules of the same package.

    Every module of the package the class lived in is imported first, so a class
    moved into a module nothing imported yet is found too.
    """
    module_name, _, name = dotted.rpartition(".")
    _import_package(module_name.partition(".")[0])
    found = set()
    for mod_name, module in list(sys.modules.items()):
        if module is None or mod_name == module_name:
            continue
        candidate = getattr(module, name, None)
        if (isinstance(candidate, type) and issubclass(candidate, persistent.Persistent)
                and candidate.__module__ == mod_name and candidate.__qualname__ == name):
            found.add(f"{mod_name}.{name}")
    return sorted(found)


def _import_package(package_name: str) -> None:
    """Import every module of ``package_name`` that imports (errors are ignored)."""
    try:
        package = importlib.import_module(package_name)
    except Exception:
        return
    path = getattr(package, "__path__", None)
    if path is None:
        return
    for info in pkgutil.walk_packages(path, prefix=f"{package_name}.", onerror=lambda _name: None):
        if info.name in sys.modules:
            continue
        try:
            importlib.import_module(info.name)
        except Exception:  # a module that does not import holds no class to find
            continue


def operation_class(op: Operation) -> str:
    """The class an operation is about (for grouping drift by class)."""
    return str(getattr(op, "class_name", None) or getattr(op, "old_name", ""))


__all__ = [
    "ClassShape",
    "Confirm",
    "code_schema",
    "code_shape",
    "import_failures",
    "observed_shapes",
    "operation_class",
    "record_observed_schema",
    "record_schema",
    "schema_drift",
    "stored_schema",
    "stored_shapes",
]
