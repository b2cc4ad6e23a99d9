"""The dsustore commands as plain functions: what the CLI runs, usable from Python.

Each function takes an open database (and a migrations folder where it needs one)
and returns data -- dicts ready for JSON -- and never prints or exits; the CLI
formats the results. Errors are :class:`~dsustore.errors.DSUError` subclasses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ZODB.serialize import referencesf
from ZODB.utils import u64

from . import recovery
from .engine import Patch
from .errors import ClassResolutionError, DSUError
from .mop import class_counts
from .mop.classes import ImportProblem, import_problem
from .mop.records import class_name_of
from .operations import Operation, draft_downgrade, render
from .runtime import runner
from .runtime.authoring import write_merge, write_script
from .runtime.checking import check_recorded
from .runtime.history import applied_revisions
from .runtime.lock import break_lock, lock_status
from .runtime.revisions import RevisionGraph
from .runtime.schema import Confirm, import_failures, operation_class, schema_drift
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
sys_path = "."    # where the project's code imports from (the default)
"""

#: how many oids of a class that does not import :func:`verify` lists
BROKEN_OIDS_SHOWN = 10


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
             db: Any = None, revision_id: str | None = None, empty: bool = False,
             confirm: Confirm | None = None) -> dict[str, Any]:
    """Write a new migration script; ``autogenerate`` drafts it from the schema drift of ``db``.

    The draft's ``upgrade`` is the drift's operations, its ``downgrade`` their
    reverses (last first, a ``# TODO`` for what cannot be reversed). With no drift,
    nothing is written (``written`` is false) unless ``empty`` asks for a script
    anyway. ``confirm(operation)`` is asked about each guess (a renamed field, a
    moved class) instead of drafting it with a ``TODO check`` note.

    Drafting refuses while stored classes do not import: it could not tell a class
    that is gone from one that is out of reach, and would draft removing it.
    """
    body, downgrade_body = "pass", "pass"
    operations: list[str] = []
    downgrade_lines: list[str] = []
    if autogenerate:
        if db is None:
            raise DSUError("--autogenerate needs a database to compare the code with")
        _refuse_import_failures(import_failures(db))
        drift = schema_drift(db, confirm=confirm)
        if not drift and not empty:
            return {"written": False, "revision": None, "down_revisions": [], "path": None,
                    "message": message, "operations": [], "downgrade": []}
        operations = [render(op) for op in drift]
        downgrade_lines = draft_downgrade(drift)
        body = "\n".join(operations) or "pass"
        downgrade_body = "\n".join(_with_a_statement(downgrade_lines))
    path = write_script(migrations_dir, message=message, revision=revision_id, body_upgrade=body,
                        body_downgrade=downgrade_body)
    return _written(migrations_dir, path, operations, downgrade_lines)


def _with_a_statement(lines: list[str]) -> list[str]:
    """A function body of comments alone does not compile: end it with ``pass``."""
    return lines if any(not line.startswith("#") for line in lines) else [*lines, "pass"]


def merge(migrations_dir: str | Path, message: str, revisions: Iterable[str] = (), *,
          revision_id: str | None = None) -> dict[str, Any]:
    """Write a merge revision joining ``revisions`` (default: every head) into one history."""
    path = write_merge(migrations_dir, message=message, revisions=revisions, revision=revision_id)
    return _written(migrations_dir, path, [], [])


def _written(migrations_dir: str | Path, path: Path, operations: list[str],
             downgrade_lines: list[str]) -> dict[str, Any]:
    script = next(s for s in load_scripts(migrations_dir) if s.path == path)
    return {"written": True, "revision": script.revision,
            "down_revisions": list(script.down_revisions), "path": str(path),
            "message": script.message, "operations": operations, "downgrade": downgrade_lines}


def _refuse_import_failures(failed: list[ImportProblem]) -> None:
    if not failed:
        return
    causes = sorted({problem.cause for problem in failed})
    raise ClassResolutionError(
        f"cannot draft a migration: {len(failed)} stored class(es) do not import "
        f"({', '.join(problem.class_name for problem in failed)}): {'; '.join(causes)}. Is the "
        "project folder on sys.path ([tool.dsustore] sys_path)?")


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


def upgrade(db: Any, migrations_dir: str | Path, target: str = "head", *, dry_run: bool = False,
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
    """Where the database stands: current revisions, the scripts' heads (a fork), pending
    migrations (on every branch), schema drift, classes that do not import, edits.

    ``drift`` lists the operations a migration would need, each with the Python line
    that records it; ``up_to_date`` means nothing is pending; ``ok`` that nothing at
    all is amiss, and ``problems`` says in words what is.
    """
    heads = list(runner.revision_graph(migrations_dir).heads())
    waiting = runner.pending(db, migrations_dir, "heads")
    drift = schema_drift(db)
    failed = import_failures(db)
    edited = runner.edited_scripts(db, migrations_dir)
    unknown = runner.unknown_revisions(db, migrations_dir)
    drifted = sorted({operation_class(op) for op in drift})
    problems = [
        *([f"{len(waiting)} migration(s) pending"] if waiting else []),
        *([f"schema drift in {len(drifted)} class(es) without a migration"] if drifted else []),
        *([f"{len(failed)} stored class(es) do not import"] if failed else []),
        *([f"applied script(s) edited since: {', '.join(edited)}"] if edited else []),
        *([f"applied revision(s) no script declares: {', '.join(unknown)}"] if unknown else []),
    ]
    return {
        "current": list(runner.current(db)),
        "heads": heads,
        "forked": len(heads) > 1,
        "pending": [{"revision": s.revision, "message": s.message, "path": s.path.name}
                    for s in waiting],
        "drift": [{"class": operation_class(op), "operation": op.name, "python": render(op),
                   "note": op.note} for op in drift],
        "import_failed": [{"class": problem.class_name, "cause": problem.cause} for problem in failed],
        "edited": edited,
        "unknown": unknown,
        "lock": lock_status(db),
        "up_to_date": not waiting,
        "ok": not problems,
        "problems": problems,
    }


def plan(db: Any, migrations_dir: str | Path, target: str = "head") -> list[dict[str, Any]]:
    """The operations each pending migration would record, as the Python lines that record
    them; nothing is run or written.

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
            operations = [render(op) for op in patch.operations]
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

    Records whose class does not import are reported once per class: how many, the
    error its import raised, and the first few oids.

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
    broken: dict[str, dict[str, Any]] = {}
    causes: dict[str, str | None] = {}
    objects = 0
    for oid, _tid, data in adapter.current_records():
        objects += 1
        name = class_name_of(data)
        counts[name] += 1
        if name not in causes:
            problem = import_problem(name)
            causes[name] = problem.cause if problem is not None else None
        if causes[name] is not None:
            entry = broken.setdefault(name, {"class": name, "count": 0, "cause": causes[name],
                                             "oids": []})
            entry["count"] += 1
            if len(entry["oids"]) < BROKEN_OIDS_SHOWN:
                entry["oids"].append(_hex(oid))
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
            "classes": dict(sorted(counts.items())),
            "broken": [broken[name] for name in sorted(broken)], "dangling": dangling}


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


# -- the migration lock and snapshot retention ----------------------------------------------


def lock(db: Any) -> dict[str, Any]:
    """Who holds the migration lock (``holder`` None when nobody does)."""
    return {"holder": lock_status(db)}


def unlock(db: Any) -> dict[str, Any]:
    """Break the migration lock whoever holds it; ``broken`` is the holder it had."""
    return {"broken": break_lock(db)}


def snapshot_prune(db: Any, *, keep: int, include_named: bool = False) -> dict[str, Any]:
    """Forget all but the ``keep`` newest automatic snapshots (all kinds with ``include_named``)."""
    gone = recovery.prune_snapshots(db, keep, include_named=include_named)
    return {"pruned": [s.as_dict() for s in gone], "kept": [s.name for s in recovery.snapshots(db)]}
