"""Migration scripts: loading them from a folder, fingerprinting them, writing new ones.

A migration script is a Python file in a migrations folder (``0001_add_email.py``)
whose module docstring is its message and which declares::

    revision = "0002"
    down_revision = "0001"          # None for a base, a tuple of ids for a merge

    def upgrade(patch): ...
    def downgrade(patch): ...       # optional

Scripts are imported by file path under a module name unique to their folder, so
two folders never clash and the folder never needs to be on ``sys.path``. Nothing
here touches a database; :mod:`.authoring` writes new scripts.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from ..errors import MigrationScriptError

log = logging.getLogger(__name__)

MODULE_PREFIX = "dsustore_migrations"
RESERVED_REVISIONS = frozenset({"head", "heads", "base"})
_REVISION_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_DOCSTRING_OWNERS = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


@dataclass(frozen=True)
class Script:
    """One loaded migration script and the facts declared in it."""

    revision: str
    down_revisions: tuple[str, ...]
    message: str
    doc: str
    path: Path
    module: ModuleType = field(repr=False, compare=False)
    has_downgrade: bool
    checksum: str

    @property
    def label(self) -> str:
        """How messages name the script: ``0002 (0002_add_email.py)``."""
        return f"{self.revision} ({self.path.name})"

    @property
    def is_base(self) -> bool:
        return not self.down_revisions

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1

    def upgrade(self, patch: Any) -> Any:
        """Run the script's ``upgrade(patch)``."""
        return self.module.upgrade(patch)

    def downgrade(self, patch: Any) -> Any:
        """Run the script's ``downgrade(patch)``; scripts without one refuse."""
        if not self.has_downgrade:
            raise MigrationScriptError(
                f"{self.path.name} defines no downgrade()", migration=self.revision
            )
        return self.module.downgrade(patch)


def script_checksum(source: str) -> str:
    """A sha256 of the script's code, blind to formatting, comments and docstrings.

    It lets a runner notice that an already-applied script was edited, without
    crying wolf over a reformat or a reworded message.
    """
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, _DOCSTRING_OWNERS) and _has_docstring(node):
            node.body = node.body[1:] or [ast.Pass()]
    dumped = ast.dump(tree, annotate_fields=True, include_attributes=False)
    return hashlib.sha256(dumped.encode("utf-8")).hexdigest()


def _has_docstring(node: Any) -> bool:
    first = node.body[0] if node.body else None
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def script_files(folder: str | Path) -> list[Path]:
    """The migration files of a folder, sorted by name (``_*``, ``.*``, non-.py skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MigrationScriptError(f"migrations folder {folder} does not exist")
    return sorted(
        p
        for p in folder.iterdir()
        if p.suffix == ".py" and p.is_file() and not p.name.startswith(("_", "."))
    )


def load_scripts(folder: str | Path) -> list[Script]:
    """Import every migration script of ``folder``, sorted by file name."""
    folder = Path(folder)
    files = script_files(folder)
    package = f"{MODULE_PREFIX}.{_folder_key(folder)}"
    return [load_script(path, package=package) for path in files]


def load_script(path: str | Path, *, package: str | None = None) -> Script:
    """Import one migration script by path and check what it declares."""
    path = Path(path)
    source = _read(path)
    code = compile_script(source, path)
    package = package or f"{MODULE_PREFIX}.{_folder_key(path.parent)}"
    module = _execute(code, path, f"{package}.{_identifier(path.stem)}")
    revision = _declared_revision(module, path)
    down_revisions = _declared_down_revisions(module, path, revision)
    if not callable(getattr(module, "upgrade", None)):
        raise MigrationScriptError(
            f"{path.name} defines no upgrade(patch) function", migration=revision
        )
    downgrade = getattr(module, "downgrade", None)
    if downgrade is not None and not callable(downgrade):
        raise MigrationScriptError(
            f"{path.name}: downgrade is not a function", migration=revision
        )
    doc = inspect.cleandoc(module.__doc__) if isinstance(module.__doc__, str) else ""
    log.debug("loaded migration %s from %s", revision, path)
    return Script(
        revision=revision,
        down_revisions=down_revisions,
        message=first_line(doc),
        doc=doc,
        path=path,
        module=module,
        has_downgrade=downgrade is not None,
        checksum=script_checksum(source),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MigrationScriptError(f"cannot read {path.name}: {exc}") from exc


def compile_script(source: str, path: Path) -> CodeType:
    try:
        return compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f"{path.name}, line {exc.lineno}" if exc.lineno else path.name
        raise MigrationScriptError(f"syntax error in {where}: {exc.msg}") from exc
    except ValueError as exc:  # e.g. null bytes in the source
        raise MigrationScriptError(f"cannot compile {path.name}: {exc}") from exc


def _execute(code: CodeType, path: Path, name: str) -> ModuleType:
    """Run the already-compiled code as module ``name`` (so it matches the checksum)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise MigrationScriptError(f"cannot import {path.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except Exception as exc:
        sys.modules.pop(name, None)
        detail = next(iter(str(exc).splitlines()), "")
        raise MigrationScriptError(
            f"importing {path.name} failed: {type(exc).__name__}: {detail}"
        ) from exc
    return module


def _declared_revision(module: ModuleType, path: Path) -> str:
    if not hasattr(module, "revision"):
        raise MigrationScriptError(f"{path.name} declares no module-level 'revision'")
    return check_revision_id(module.revision, path)


def _declared_down_revisions(module: ModuleType, path: Path, revision: str) -> tuple[str, ...]:
    if not hasattr(module, "down_revision"):
        raise MigrationScriptError(
            f"{path.name} declares no 'down_revision' (use None for a first script)",
            migration=revision,
        )
    declared = module.down_revision
    if declared is None:
        return ()
    if isinstance(declared, str):
        declared = (declared,)
    if not isinstance(declared, (tuple, list)):
        raise MigrationScriptError(
            f"{path.name}: down_revision must be None, a revision id or a tuple of ids,"
            f" not {declared!r}",
            migration=revision,
        )
    parents = tuple(check_revision_id(p, path, what="down_revision") for p in declared)
    if len(set(parents)) != len(parents):
        raise MigrationScriptError(
            f"{path.name}: down_revision lists a revision twice: {parents!r}",
            migration=revision,
        )
    return parents


def check_revision_id(value: Any, path: Path | None = None, *, what: str = "revision") -> str:
    """Return ``value`` if it is a usable revision id, else raise naming the file."""
    where = f"{path.name}: " if path is not None else ""
    if not isinstance(value, str) or not _REVISION_RE.match(value):
        raise MigrationScriptError(
            f"{where}{what} must be a non-empty string of letters, digits, '_', '.'"
            f" or '-', not {value!r}"
        )
    if value in RESERVED_REVISIONS:
        raise MigrationScriptError(f"{where}{what} {value!r} is a reserved name")
    return value


def first_line(doc: str) -> str:
    return next((line.strip() for line in doc.splitlines() if line.strip()), "")


def _folder_key(folder: Path) -> str:
    digest = hashlib.sha256(str(folder.resolve()).encode("utf-8")).hexdigest()
    return f"f{digest[:16]}"


def _identifier(stem: str) -> str:
    return re.sub(r"\W", "_", stem)


__all__ = [
    "Script",
    "check_revision_id",
    "compile_script",
    "first_line",
    "load_script",
    "load_scripts",
    "script_checksum",
    "script_files",
]
