"""The dsustore commands as plain functions: what the CLI runs, usable from Python.

Each function takes an open database (and a migrations folder where it needs one)
and returns data -- dicts ready for JSON -- and never prints or exits; the CLI
formats the results. Errors are :class:`~dsustore.errors.DSUError` subclasses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ZODB.serialize import referencesf
from ZODB.utils import u64

from . import recovery
from .engine import Patch
from .errors import DSUError
from .mop import class_counts
from .mop.classes import resolve
from .mop.records import class_name_of
from .operations import Operation
from .runtime import runner
from .runtime.authoring import write_script
from .runtime.checking import check_recorded
from .runtime.history import applied_revisions
from .runtime.revisions import RevisionGraph
from .runtime.schema import draft_operations, schema_drift
from .runtime.scripts import load_scripts
from .storage import adapter_for

README = """\
# Migrations

Each file here is one dsustore migration: a module whose docstring is its message,
declaring `revision`, `down_revision` and `upgrade(patch)` (and optionally
`downgrade(patch)`). Create one with:

    dsustore revision -m "add email to users"

and apply pending migrations with `dsustore upgrade`. See `dsustore --help`.
"""

PYPROJECT_HINT = """\
[tool.dsustore]
db = "Data.fs"
migrations = "{migrations}"
"""


# -- folder and scripts ---------------------------------------------------------


def init(migrations_dir: str | Path, *, db: Any = None) -> dict[str, Any]:
    """Create the migrations folder with a README; say how to configure the project."""
    folder = Path(migrations_dir)
    existed = folder.is_dir() and any(folder.iterdir())
    folder.mkdir(parents=True, exist_ok=True)
    readme = folder / "README.md"
    if not readme.exists():
        readme.write_text(README, encoding="utf-8")
    return {
        "migrations": str(folder),
        "created": not existed,
        "database": _describe_db(db) if db is not None else None,
        "pyproject": PYPROJECT_HINT.format(migrations=folder.name),
    }


def revision(migrations_dir: str | Path, message: str, *, autogenerate: bool = False,
             db: Any = None, revision_id: str | None = None) -> dict[str, Any]:
    """Write a new migration script; ``autogenerate`` drafts it from the schema drift of ``db``."""
    body = "pass"
    operations: list[str] = []
    if autogenerate:
        if db is None:
            raise DSUError("--autogenerate needs a database to compare the code with")
        operations = draft_operations(schema_drift(db))
        if operations:
            body = "\n".join(operations)
    path = write_script(migrations_dir, message=message, revision=revision_id, body_upgrade=body)
    script = next(s for s in load_scripts(migrations_dir) if s.path == path)
    return {"revision": script.revision, "down_revisions": list(script.down_revisions),
            "path": str(path), "message": script.message, "operations": operations}


def history(migrations_dir: str | Path, *, db: Any = None) -> list[dict[str, Any]]:
    """Every script, base first, with whether ``db`` (when given) has it applied."""
    applied = applied_revisions(db) if db is not None else None
    graph = RevisionGraph(load_scripts(migrations_dir))
    heads = set(graph.heads())
    return [
        {"revision": s.revision, "down_revisions": list(s.down_revisions), "message": s.message,
         "path": s.path.name, "head": s.revision in heads,
         "applied": (s.revision in applied) if applied is not None else None}
        for s in graph.history()
    ]


def heads(migrations_dir: str | Path) -> list[str]:
    """The head revisions of the migrations folder."""
    return list(RevisionGraph(load_scripts(migrations_dir)).heads())


# -- running migrations -------------------------------------------------------------


def upgrade(db: Any, migrations_dir: str | Path, target: str = "heads", *, dry_run: bool = False,
            progress: Callable[[Any], None] | None = None, **options: Any) -> dict[str, Any]:
    """Apply pending migrations up to ``target`` (options as :func:`dsustore.upgrade`)."""
    result = runner.upgrade(db, migrations_dir, target, dry_run=dry_run, progress=progress,
                            **options)
    return dict(result.as_dict(), current=list(runner.current(db)))


def downgrade(db: Any, migrations_dir: str | Path, target: str, *, dry_run: bool = False,
              progress: Callable[[Any], None] | None = None, **options: Any) -> dict[str, Any]:
    """Undo applied migrations down to ``target`` (options as :func:`dsustore.downgrade`)."""
    result = runner.downgrade(db, migrations_dir, target, dry_run=dry_run, progress=progress,
                              **options)
    return dict(result.as_dict(), current=list(runner.current(db)))


def current(db: Any) -> dict[str, Any]:
    """The revisions the database is at."""
    return {"current": list(runner.current(db))}


def stamp(db: Any, migrations_dir: str | Path, target: str) -> dict[str, Any]:
    """Record ``target`` as applied without running anything."""
    return {"current": list(runner.stamp(db, migrations_dir, target))}


def status(db: Any, migrations_dir: str | Path) -> dict[str, Any]:
    """Where the database stands: current revisions, pending migrations, schema drift."""
    waiting = runner.pending(db, migrations_dir)
    drift = schema_drift(db)
    return {
        "current": list(runner.current(db)),
        "pending": [{"revision": s.revision, "message": s.message, "path": s.path.name}
                    for s in waiting],
        "drift": [{"class": d.class_name, "kind": d.kind, "added": list(d.added),
                   "removed": list(d.removed)} for d in drift],
        "edited": runner.edited_scripts(db, migrations_dir),
        "unknown": runner.unknown_revisions(db, migrations_dir),
        "up_to_date": not waiting,
    }


def plan(db: Any, migrations_dir: str | Path, target: str = "heads") -> list[dict[str, Any]]:
    """The operations each pending migration would record; nothing is run or written.

    Each migration's operations are checked against the stored classes as an
    upgrade's pass would check them (one count of the classes for all of them): a
    class that neither imports nor is stored, a rename that would merge unasked.
    """
    planned = []
    recorded: list[tuple[str, list[Operation]]] = []
    for script in runner.pending(db, migrations_dir, target):
        patch = Patch(db, description=f"plan {script.revision}").begin()
        try:
            try:
                script.upgrade(patch)
            except DSUError as err:
                err.with_migration(script.revision)
                raise
            except Exception as err:
                raise DSUError(f"upgrade() raised {type(err).__name__}: {err}",
                               migration=script.revision) from err
            operations = patch.plan()
            recorded.append((script.revision, list(patch.operations)))
        finally:
            patch.rollback()
        planned.append({"revision": script.revision, "message": script.message,
                        "operations": operations})
    check_recorded(db, recorded)
    return planned


# -- looking at the data ---------------------------------------------------------------


def scan(db: Any) -> dict[str, Any]:
    """How many stored objects each class has."""
    counts = class_counts(db)
    return {"classes": dict(sorted(counts.items())), "total": sum(counts.values())}


def verify(db: Any) -> dict[str, Any]:
    """Whole-database checks: records whose class does not import, references to missing oids.

    Where the storage keeps an index of oids in memory anyway (FileStorage), the walk
    streams; other storages are checked against the set of oids the walk has seen,
    which grows with the database.
    """
    adapter = adapter_for(db)
    index = adapter.oid_index()
    known: set[bytes] = set()
    referenced: dict[bytes, bytes] = {}
    dangling: list[dict[str, str]] = []
    counts: Counter[str] = Counter()
    broken: list[dict[str, str]] = []
    resolved: dict[str, bool] = {}
    objects = 0
    for oid, _tid, data in adapter.current_records():
        objects += 1
        name = class_name_of(data)
        counts[name] += 1
        if name not in resolved:
            resolved[name] = resolve(name) is not None
        if not resolved[name]:
            broken.append({"oid": _hex(oid), "class": name})
        if index is not None:
            dangling.extend({"oid": _hex(ref), "referenced_by": _hex(oid)}
                            for ref in referencesf(data) if ref not in index)
            continue
        known.add(oid)
        for ref in referencesf(data):
            referenced.setdefault(ref, oid)
    dangling += [{"oid": _hex(ref), "referenced_by": _hex(holder)}
                 for ref, holder in sorted(referenced.items()) if ref not in known]
    return {"ok": not broken and not dangling, "objects": objects,
            "classes": dict(sorted(counts.items())), "broken": broken, "dangling": dangling}


# -- snapshots ---------------------------------------------------------------------------


def snapshot_create(db: Any, name: str | None = None, *, note: str = "",
                    directory: str | Path | None = None) -> dict[str, Any]:
    """Take a named snapshot: a transaction id, or an export file where history is not kept."""
    return recovery.snapshot(db, name, note=note, directory=directory).as_dict()


def snapshot_list(db: Any) -> list[dict[str, Any]]:
    """The recorded snapshots, oldest first."""
    return [s.as_dict() for s in recovery.snapshots(db)]


def snapshot_restore(db: Any, name: str, *, force: bool = False) -> dict[str, Any]:
    """Bring the database back to snapshot ``name``."""
    return recovery.restore(db, name, force=force).as_dict()


def snapshot_delete(db: Any, name: str) -> dict[str, Any]:
    """Forget snapshot ``name``."""
    return recovery.delete_snapshot(db, name).as_dict()


def pack(db: Any, *, days: float = 0) -> dict[str, Any]:
    """Pack old history, keeping what the snapshots need."""
    return recovery.pack(db, days=days).as_dict()


# -- helpers -----------------------------------------------------------------------------


def _hex(oid: bytes) -> str:
    return hex(u64(oid))


def _describe_db(db: Any) -> str:
    return str(getattr(db.storage, "getName", lambda: "database")())
