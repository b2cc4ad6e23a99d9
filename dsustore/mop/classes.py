"""Class naming, resolution and definitions: the class half of the meta-object protocol.

Stored records name their class by module and name, so the DSU speaks of classes by
dotted name; a class object is only needed where the code has one.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import sys
import textwrap
import types
from dataclasses import dataclass, field
from typing import Any

from ZODB.broken import Broken

from ..errors import ClassResolutionError

ClassRef = type | str

#: modules whose classes are infrastructure (containers, bookkeeping), not an application's
INFRASTRUCTURE_MODULES = ("dsustore.", "persistent.", "BTrees.", "ZODB.", "builtins.")


def is_infrastructure(class_name: str) -> bool:
    """Whether a dotted class name is infrastructure rather than an application's class."""
    return class_name.startswith(INFRASTRUCTURE_MODULES) or "." not in class_name


def dotted_name(cls: ClassRef) -> str:
    """``"pkg.module.Class"`` for a class object or a dotted name."""
    if isinstance(cls, str):
        if "." not in cls:
            raise ValueError(f"class name {cls!r} must be dotted: 'package.module.Class'")
        return cls
    return f"{cls.__module__}.{cls.__qualname__}"


def split_name(name: str) -> tuple[str, str]:
    """Split a dotted class name into (module, qualname) at the last dot."""
    module, _, qualname = name.rpartition(".")
    return module, qualname


def resolve(name: str) -> type | None:
    """The class the code currently has under a dotted name, or None when it has none.

    Looked up through ``sys.modules`` each time (no cache) so a live update that
    replaces a module is seen at once.
    """
    return _lookup(name)[0]


@dataclass(frozen=True)
class ImportProblem:
    """Why a dotted class name does not resolve.

    ``missing`` means the code around it imports but has no such class (or module):
    the class is gone. Otherwise its module fails to import -- the project folder
    not on ``sys.path``, a missing dependency, an error in the module -- and the
    class may well exist; ``cause`` is the error, once for all its instances.
    """

    class_name: str
    cause: str
    missing: bool


def import_problem(name: str) -> ImportProblem | None:
    """Why ``name`` does not resolve (None when it does)."""
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[type | None, ImportProblem | None]:
    module_name, qualname = split_name(name)
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception as err:  # a module that fails on import has no usable class either
            return None, ImportProblem(name, _describe(err), _module_is_gone(module_name, err))
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None, ImportProblem(name, f"module {module_name} has no {qualname}", True)
    if not isinstance(obj, type) or getattr(obj, "__module__", None) is None:
        return None, ImportProblem(name, f"{name} is not a class", True)
    if issubclass(obj, Broken):
        return None, ImportProblem(name, f"{name} is a broken placeholder", True)
    return obj, None


def _module_is_gone(module_name: str, err: Exception) -> bool:
    """The module itself is missing while its package imports: it was removed or moved.
    (A missing top-level package more likely means the code is not on ``sys.path``.)"""
    if not isinstance(err, ModuleNotFoundError) or err.name != module_name:
        return False
    package = module_name.rpartition(".")[0]
    if not package:
        return False
    try:
        importlib.import_module(package)
    except Exception:
        return False
    return True


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {next(iter(str(err).splitlines()), '')}"


def require(name: str, *, operation: str | None = None) -> type:
    """Like :func:`resolve`, but a missing class is an error naming it."""
    cls = resolve(name)
    if cls is None:
        raise ClassResolutionError(
            "the class does not import from the current code",
            class_name=name,
            operation=operation,
        )
    return cls


@dataclass(frozen=True)
class ClassDef:
    """What the DSU knows of a class: where it lives, what it derives from, its fields."""

    module: str
    name: str
    bases: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    defaults: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


def declared_fields(cls: type) -> tuple[str, ...]:
    """Fields a class declares, in order, including inherited ones.

    Annotations where the class has them; otherwise ``__slots__``; otherwise the
    attributes its methods assign on ``self`` (read from the source). Class
    variables (``ClassVar``) and private names are not fields.
    """
    seen: dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or klass.__module__ in ("persistent", "builtins"):
            continue
        for name in _own_fields(klass):
            seen.setdefault(name, None)
    return tuple(seen)


def _own_fields(klass: type) -> list[str]:
    annotations = inspect.get_annotations(klass)
    if annotations:
        return [
            name
            for name, hint in annotations.items()
            if not name.startswith("_") and "ClassVar" not in str(hint)
        ]
    slots = klass.__dict__.get("__slots__")
    if slots:
        slots = (slots,) if isinstance(slots, str) else slots
        return [s for s in slots if not s.startswith("_")]
    return _assigned_in_methods(klass)


def _assigned_in_methods(klass: type) -> list[str]:
    try:
        source = textwrap.dedent(inspect.getsource(klass))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return []
    names: list[str] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
                and not target.attr.startswith("_")
                and target.attr not in names
            ):
                names.append(target.attr)
    return names


def read_class_definition(cls: ClassRef) -> ClassDef:
    """The definition of a class in the current code (paper: readClassDefinition)."""
    klass = require(cls) if isinstance(cls, str) else cls
    fields_ = declared_fields(klass)
    defaults = {
        name: getattr(klass, name)
        for name in fields_
        if hasattr(klass, name) and not inspect.isdatadescriptor(getattr(klass, name, None))
    }
    return ClassDef(
        module=klass.__module__,
        name=klass.__qualname__,
        bases=tuple(dotted_name(b) for b in klass.__bases__ if b is not object),
        fields=fields_,
        defaults=defaults,
    )


def create_class(class_def: ClassDef, *, namespace: dict[str, Any] | None = None,
                 install: bool = False) -> type:
    """Build a class from a definition (paper: createClass).

    Bases are resolved from the current code. With ``install`` the class is bound
    in its module (created in ``sys.modules`` if missing), so that unpickling finds it.
    """
    bases = tuple(require(b) for b in class_def.bases) or (object,)
    body: dict[str, Any] = {"__module__": class_def.module, "__qualname__": class_def.name}
    body["__annotations__"] = {name: Any for name in class_def.fields}
    body.update(class_def.defaults)
    body.update(namespace or {})
    cls = types.new_class(class_def.name.rpartition(".")[2], bases, exec_body=lambda ns: ns.update(body))
    if install:
        module = sys.modules.get(class_def.module)
        if module is None:
            module = types.ModuleType(class_def.module)
            sys.modules[class_def.module] = module
        setattr(module, class_def.name.rpartition(".")[2], cls)
    return cls
