"""The ``dsustore`` command line: Alembic-style migration commands for a ZODB database.

Every error ends as one ``dsustore: error: ...`` line on stderr and a documented exit
code, never a traceback (``-v`` shows it). ``--json`` prints results, and errors with
their facts, as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import commands
from ..errors import DatabaseLockedError, DSUError, LockHeldError, ValidationError
from ..runtime.config import resolve_settings
from ..storage.uri import open_db
from .progress import ProgressReporter

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_LOCKED = 4
EXIT_VALIDATION = 5

EPILOG = f"""\
database: --db URI, else $DSUSTORE_DB, else [tool.dsustore] db in ./pyproject.toml
  (a FileStorage path or file://, memory://, zeo://host:port, postgresql://...)

exit codes:
  {EXIT_OK}  success
  {EXIT_FAILURE}  failure
  {EXIT_USAGE}  usage error
  {EXIT_PENDING}  pending migrations (status --check)
  {EXIT_LOCKED}  lock held (another process migrates or holds the database)
  {EXIT_VALIDATION}  validation failure (nothing was written)
"""

#: commands that may create a missing FileStorage
_CREATING = {"init", "upgrade"}
#: commands that do not need a database
_NO_DB = {"revision", "heads", "history"}


class _Parser(argparse.ArgumentParser):
    """argparse with errors in dsustore's one-line form."""

    def error(self, message: str) -> Any:
        sys.stderr.write(f"dsustore: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dsustore`` command."""
    parser = _Parser(prog="dsustore", description=__doc__.splitlines()[0],
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", metavar="URI", help="the database (see below)")
    parser.add_argument("--migrations", metavar="DIR", help="the migrations folder (default: migrations)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more output; tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    sub.add_parser("init", help="create the migrations folder")
    p = sub.add_parser("revision", help="write a new migration script")
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--autogenerate", action="store_true", help="draft operations from schema drift")
    p.add_argument("--rev-id", help="the revision id (default: the next number)")
    for name, help_text in (("upgrade", "apply pending migrations"),
                            ("downgrade", "undo migrations down to TARGET")):
        p = sub.add_parser(name, help=help_text)
        if name == "upgrade":
            p.add_argument("target", nargs="?", default="heads")
        else:
            p.add_argument("target")
        p.add_argument("--dry-run", action="store_true")
        p.add_argument("--one-transaction", action="store_true",
                       help="apply all migrations in one atomic transaction (default: one each)")
        p.add_argument("--no-snapshot", action="store_true",
                       help="do not take the snapshot a run takes before changing data")
    sub.add_parser("current", help="the revisions the database is at")
    sub.add_parser("history", help="the migration scripts, base first")
    sub.add_parser("heads", help="the head revisions of the scripts")
    p = sub.add_parser("status", help="pending migrations and schema drift")
    p.add_argument("--check", action="store_true", help=f"exit {EXIT_PENDING} when migrations are pending")
    p = sub.add_parser("plan", help="the operations pending migrations would run")
    p.add_argument("target", nargs="?", default="heads")
    p = sub.add_parser("stamp", help="record TARGET as applied without running it")
    p.add_argument("target")
    sub.add_parser("verify", help="check the whole database (broken classes, dangling references)")
    sub.add_parser("scan", help="count stored objects per class")
    p = sub.add_parser("snapshot", help="create, list, restore or delete snapshots")
    snap = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    snap.required = True
    s = snap.add_parser("create", help="take a snapshot")
    s.add_argument("name", nargs="?")
    s.add_argument("--note", default="")
    s.add_argument("--dir", dest="directory", default=None,
                   help="where an export snapshot's file goes (history-free storages; "
                        "default $DSUSTORE_SNAPSHOTS, else next to the other exports)")
    snap.add_parser("list", help="list snapshots")
    s = snap.add_parser("restore", help="bring the database back to a snapshot")
    s.add_argument("name")
    s.add_argument("--force", action="store_true", help="restore even over application writes")
    s = snap.add_parser("delete", help="forget a snapshot")
    s.add_argument("name")
    p = sub.add_parser("pack", help="pack history, keeping what snapshots need")
    p.add_argument("--days", type=float, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dsustore`` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else
                        logging.INFO if args.verbose else logging.WARNING,
                        format="dsustore: %(message)s", stream=sys.stderr)
    try:
        result, code = _dispatch(args)
    except DSUError as err:
        return _fail(args, err, _exit_code(err), err.facts())
    except OSError as err:
        return _fail(args, err, EXIT_FAILURE, {"error": type(err).__name__, "message": str(err)})
    except KeyboardInterrupt:
        sys.stderr.write("dsustore: interrupted\n")
        return 130
    except Exception as err:  # a bug, or a migration script raising something odd
        return _fail(args, err, EXIT_FAILURE, {"error": type(err).__name__, "message": str(err)},
                     hint=True)
    _emit(args, result)
    return code


def _exit_code(err: DSUError) -> int:
    if isinstance(err, (LockHeldError, DatabaseLockedError)):
        return EXIT_LOCKED
    if isinstance(err, ValidationError) or isinstance(err.__cause__, ValidationError):
        return EXIT_VALIDATION
    return EXIT_FAILURE


def _fail(args: argparse.Namespace, err: BaseException, code: int, facts: dict[str, Any],
          *, hint: bool = False) -> int:
    if args.verbose:
        traceback.print_exception(err, file=sys.stderr)
    if args.json:
        print(json.dumps({"ok": False, "exit_code": code, **facts}, default=str))
    message = " ".join(str(err).split()) or type(err).__name__
    if hint and not args.verbose:
        message = f"{type(err).__name__}: {message} (run with -v for the traceback)"
    sys.stderr.write(f"dsustore: error: {message}\n")
    return code


def _dispatch(args: argparse.Namespace) -> tuple[Any, int]:
    settings = resolve_settings(args.db, args.migrations)
    folder = settings.migrations
    command = args.command
    if command == "revision":
        with _database(settings.db, command, wanted=args.autogenerate) as db:
            return commands.revision(folder, args.message, autogenerate=args.autogenerate, db=db,
                                     revision_id=args.rev_id), EXIT_OK
    if command == "heads":
        return commands.heads(folder), EXIT_OK
    if command == "history":
        with _database(settings.db, command, wanted=bool(settings.db)) as db:
            return commands.history(folder, db=db), EXIT_OK
    if command == "init":
        with _database(settings.db, command, wanted=bool(settings.db)) as db:
            return commands.init(folder, db=db), EXIT_OK
    with _database(settings.db, command) as db:
        return _with_db(args, db, folder)


def _with_db(args: argparse.Namespace, db: Any, folder: Path) -> tuple[Any, int]:
    command = args.command
    if command in ("upgrade", "downgrade"):
        run: Callable[..., dict[str, Any]] = getattr(commands, command)
        reporter = _progress(args)
        try:
            result = run(db, folder, args.target, dry_run=args.dry_run, progress=reporter,
                         transaction_per_migration=not args.one_transaction,
                         snapshot=not args.no_snapshot)
        finally:
            if reporter is not None:
                reporter.close()
        return result, EXIT_OK
    if command == "current":
        return commands.current(db), EXIT_OK
    if command == "status":
        result = commands.status(db, folder)
        return result, EXIT_PENDING if args.check and result["pending"] else EXIT_OK
    if command == "plan":
        return commands.plan(db, folder, args.target), EXIT_OK
    if command == "stamp":
        return commands.stamp(db, folder, args.target), EXIT_OK
    if command == "verify":
        result = commands.verify(db)
        return result, EXIT_OK if result["ok"] else EXIT_VALIDATION
    if command == "scan":
        return commands.scan(db), EXIT_OK
    if command == "pack":
        return commands.pack(db, days=args.days), EXIT_OK
    if command == "snapshot":
        if args.action == "create":
            return commands.snapshot_create(db, args.name, note=args.note,
                                            directory=args.directory), EXIT_OK
        if args.action == "list":
            return commands.snapshot_list(db), EXIT_OK
        if args.action == "restore":
            return commands.snapshot_restore(db, args.name, force=args.force), EXIT_OK
        return commands.snapshot_delete(db, args.name), EXIT_OK
    raise DSUError(f"unknown command {command!r}")


def _open(uri: str | None, command: str) -> Any:
    return open_db(uri, create=command in _CREATING)


@contextmanager
def _database(uri: str | None, command: str, *, wanted: bool = True) -> Iterator[Any]:
    """The command's database, opened only when it needs one, and always closed."""
    db = _open(uri, command) if wanted else None
    try:
        yield db
    finally:
        if db is not None:
            db.close()


def _progress(args: argparse.Namespace) -> Any:
    if args.quiet or args.json:
        return None
    reporter = ProgressReporter(sys.stderr)
    return reporter if reporter.tty or args.verbose else None


# -- output -----------------------------------------------------------------------


def _emit(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    if args.quiet:
        return
    text = _format(args, result)
    if text:
        print(text)


def _format(args: argparse.Namespace, result: Any) -> str:
    command = args.command
    if command == "init":
        return (f"migrations folder {result['migrations']} ready\n"
                f"configure the project in pyproject.toml:\n\n{result['pyproject']}")
    if command == "revision":
        drafted = "".join(f"\n    {op}" for op in result["operations"])
        return f"wrote {result['path']} (revision {result['revision']}){drafted}"
    if command in ("upgrade", "downgrade"):
        verb = "would run" if result.get("dry_run") else "ran"
        lines = [f"{verb} {m['revision']}: {m.get('message', '')} ({_objects(m)})"
                 for m in result.get("migrations", [])]
        lines = lines or ["nothing to do"]
        if result.get("snapshot"):
            snap = result["snapshot"]
            lines.insert(0, f"snapshot {snap['name']} ({snap['kind']}) taken first")
        lines.append(f"current: {_revs(result.get('current'))}")
        return "\n".join(lines)
    if command in ("current", "stamp"):
        return _revs(result["current"])
    if command == "heads":
        return "\n".join(result)
    if command == "history":
        return "\n".join(
            f"{'*' if h['applied'] else ' '} {h['revision']}"
            f" <- {','.join(h['down_revisions']) or 'base'}"
            f"{' (head)' if h['head'] else ''}: {h['message']}" for h in result)
    if command == "status":
        lines = [f"current: {_revs(result['current'])}"]
        lines += [f"pending: {p['revision']} {p['message']}" for p in result["pending"]]
        lines += [f"drift: {d['class']} {d['kind']} +{d['added']} -{d['removed']}"
                  for d in result["drift"]]
        lines += [f"edited since applied: {rev}" for rev in result["edited"]]
        lines += [f"unknown to the scripts: {rev}" for rev in result["unknown"]]
        lines.append("up to date" if result["up_to_date"] else f"{len(result['pending'])} pending")
        return "\n".join(lines)
    if command == "plan":
        if not result:
            return "nothing pending"
        return "\n".join(f"{p['revision']}: {p['message']}" + "".join(f"\n    {op}" for op in p["operations"])
                         for p in result)
    if command in ("scan", "verify"):
        lines = [f"{count:>10}  {name}" for name, count in result["classes"].items()]
        if command == "scan":
            lines.append(f"{result['total']:>10}  objects")
            return "\n".join(lines)
        lines += [f"broken: {b['oid']} class {b['class']} does not import" for b in result["broken"]]
        lines += [f"dangling: {d['oid']} referenced by {d['referenced_by']} has no record"
                  for d in result["dangling"]]
        lines.append(f"{result['objects']} objects: " + ("ok" if result["ok"] else "PROBLEMS FOUND"))
        return "\n".join(lines)
    if command == "pack":
        return result["message"]
    if command == "snapshot":
        if args.action == "list":
            return "\n".join(f"{s['name']}  {s['kind']}  {s['tid']}  {s['created']}"
                             f"{'  ' + s['path'] if s.get('path') else ''}"
                             f"{'  ' + s['note'] if s['note'] else ''}" for s in result) or "no snapshots"
        if args.action == "restore":
            unknown = ("; application writes since it cannot be told apart on a history-free "
                       "storage and were undone too" if result["application_transactions"] is None
                       else "")
            source = _snapshot_source(result["kind"], result["source"])
            return (f"restored {result['snapshot']} from {source}: "
                    f"{result['rewritten']} objects rewritten, "
                    f"{result['created_since']} created since left unreachable{unknown}; "
                    f"undo with: dsustore snapshot restore {result['safety_snapshot']}")
        verb = "created" if args.action == "create" else "deleted"
        source = result["path"] if result["kind"] == "export" else result["tid"]
        return f"{verb} snapshot {result['name']} as {_snapshot_source(result['kind'], source)}"
    return json.dumps(result, indent=2, default=str)


def _objects(migration: dict[str, Any]) -> str:
    """What a migration did to the objects: changed, left as they were, records written."""
    changed = sum(migration.get("migrated", {}).values())
    unchanged = sum(migration.get("unchanged", {}).values())
    records = migration.get("records_rewritten", 0)
    return (f"{changed} changed, {unchanged} already had it, "
            f"{records} record{'' if records == 1 else 's'} rewritten")


def _snapshot_source(kind: str, source: str) -> str:
    """Which kind of snapshot, in words: a transaction id to rewrite back to, or an export file."""
    if kind == "export":
        return f"export {source} (the storage keeps no history)"
    return f"transaction id {source} (history kept by the storage)"


def _revs(revisions: Any) -> str:
    return ", ".join(revisions) if revisions else "(base)"
