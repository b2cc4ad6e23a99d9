"""The ``dsustore`` command line: Alembic-style migration commands for a ZODB database.

Every error ends as one ``dsustore: error: ...`` line on stderr and a documented exit
code, never a traceback (``-v`` shows it). ``--json`` prints results, and errors with
their facts, as JSON on stdout -- usage errors included. The global options may come
before or after the command.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import traceback
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from .. import commands
from ..errors import DatabaseLockedError, DSUError, LockHeldError, PartialRunError, ValidationError
from ..operations import Operation, render
from ..operations.ops import RenameClass, RenameField
from ..runtime.config import prepend_sys_path, resolve_settings
from ..runtime.lock import describe_holder
from ..storage.uri import open_db
from .progress import ProgressReporter

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_LOCKED = 4
EXIT_VALIDATION = 5
EXIT_PARTIAL = 6
EXIT_DRIFT = 7
EXIT_INTERRUPTED = 130

EPILOG = f"""\
global options (--db, --migrations, --json, -v, -q) go before or after the command.

database: --db URI, else $DSUSTORE_DB, else [tool.dsustore] db in ./pyproject.toml
  (a FileStorage path or file://, memory://, zeo://host:port, postgresql://...).
  Commands that only read open it read-only and never change a file; commands that
  write refuse a path with no database (init or upgrade --create make one) and a
  FileStorage ending in a damaged transaction (--repair cuts it).
[tool.dsustore] sys_path (default: the folder of pyproject.toml) is put on sys.path
  first, so the project's classes and the migrations import.

exit codes:
  {EXIT_OK}  success
  {EXIT_FAILURE}  failure
  {EXIT_USAGE}  usage error
  {EXIT_PENDING}  status --check: migrations are pending
  {EXIT_LOCKED}  lock held (another process migrates or holds the database)
  {EXIT_VALIDATION}  validation failure (nothing was written); verify found problems
  {EXIT_PARTIAL}  partial run: some migrations committed, then one failed; the
     message (and --json: committed, failed, pending) says which
  {EXIT_DRIFT}  status --check: nothing pending, but the code and the database
     disagree: schema drift, classes that do not import, applied scripts edited,
     or applied revisions the scripts do not know (the reasons are printed)
  {EXIT_INTERRUPTED}  interrupted
"""

#: commands that only read the database: it is opened read-only
_READ_ONLY = {"current", "history", "status", "plan", "scan", "verify", "revision"}


class UsageError(Exception):
    """The command line does not parse; carries argparse's message and the usage line."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse raising :class:`UsageError`, and printing help as JSON under ``--json``."""

    #: set while :func:`main` parses a command line that asks for JSON
    json_output: ClassVar[bool] = False

    def error(self, message: str) -> Any:
        raise UsageError(message, self.format_usage().strip())

    def print_help(self, file: Any = None) -> None:
        if not self.json_output:
            super().print_help(file)
            return
        print(json.dumps({"ok": True, "exit_code": EXIT_OK, "help": self.format_help()}, indent=2))


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--db, --migrations, --json, -v, -q: on the main parser, and on every command's
    parser too (defaults suppressed there, so one given before the command stays)."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument("--db", metavar="URI", default=default(None),
                       help="the database (default: $DSUSTORE_DB, else [tool.dsustore] db)")
    group.add_argument("--migrations", metavar="DIR", default=default(None),
                       help="the migrations folder (default: [tool.dsustore] migrations, else migrations)")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="print results and errors as JSON on stdout")
    group.add_argument("-v", "--verbose", action="count", default=default(0),
                       dest="verbose" if top else "verbose_after",
                       help="more output (twice: debug); tracebacks of errors")
    group.add_argument("-q", "--quiet", action="store_true", default=default(False),
                       help="print only errors")


def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    common = _Parser(add_help=False)
    _global_options(common, top=False)
    writing = _Parser(add_help=False)
    writing.add_argument("--repair", action="store_true",
                         help="open a FileStorage that ends in a damaged transaction anyway, "
                              "letting ZODB cut that tail (it keeps a copy in a .trN file)")
    return common, writing


def _command(sub: Any, name: str, summary: str, description: str,
             *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
    paragraphs = [f"{summary[0].upper()}{summary[1:]}.", *description.split("\n\n")]
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description="\n\n".join(textwrap.fill(p, 78) for p in paragraphs),
        parents=list(parents), formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="run the migrations in a transaction that is aborted: report, write nothing")
    parser.add_argument("--one-transaction", action="store_true",
                        help="apply all migrations in one atomic transaction (default: one each)")
    parser.add_argument("--no-snapshot", action="store_true",
                        help="do not take the snapshot a run takes before changing data")
    parser.add_argument("--lock-wait", type=float, default=0, metavar="SECONDS",
                        help="wait up to SECONDS for another process's migration lock, then look "
                             "again at what is pending (default: fail at once)")


TARGETS = ("TARGET is a revision id or a unique prefix of one, head (the single head), heads "
           "(every head), base (nothing applied), REV+N / REV-N, or +N / -N from the current "
           "revision.")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dsustore`` command."""
    parser = _Parser(prog="dsustore", description=__doc__.splitlines()[0],
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _global_options(parser, top=True)
    common, writing = _parents()
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser,
                                help="what to do (COMMAND --help describes each)")
    sub.required = True

    _command(sub, "init", "create the migrations folder",
             "Creates the migrations folder with a README, and the database when one is "
             "configured and missing. Prints the [tool.dsustore] section to put in "
             "pyproject.toml.", common, writing)

    p = _command(sub, "revision", "write a new migration script",
                 "Writes the next numbered script on top of the single head; "
                 "--autogenerate drafts its operations from the schema drift between the "
                 "classes the code has and the schema the database recorded (read-only): "
                 "upgrade() from the operations, downgrade() from their reverses, a # TODO "
                 "for each value to give and each guess to check (a renamed field, a moved "
                 "class). With no drift it writes nothing, unless --empty.", common)
    p.add_argument("-m", "--message", required=True, help="what the migration does (its docstring)")
    p.add_argument("--autogenerate", action="store_true", help="draft operations from schema drift")
    p.add_argument("--interactive", action="store_true",
                   help="with --autogenerate: ask about each guess (was this field renamed? was "
                        "this class moved?) instead of drafting it with a TODO")
    p.add_argument("--empty", action="store_true",
                   help="with --autogenerate: write the script even when there is no drift")
    p.add_argument("--rev-id", help="the revision id (default: the next number)")

    p = _command(sub, "merge", "write a merge revision joining several heads",
                 "A forked history (two scripts on the same parent) has several heads; a "
                 "merge revision lists them as its down_revision, so the history has one "
                 "head again. Its upgrade() is empty unless you add to it.", common)
    p.add_argument("-m", "--message", required=True, help="what the merge is for (its docstring)")
    p.add_argument("revisions", nargs="*", metavar="REV",
                   help="the revisions to merge (default: every head)")
    p.add_argument("--rev-id", help="the revision id (default: the next number)")

    p = _command(sub, "upgrade", "apply pending migrations",
                 "Applies the migrations up to TARGET (default: head, the single head; a "
                 "forked history is refused, name 'heads' to apply every branch), each in "
                 "its own transaction unless --one-transaction. A snapshot is taken first.\n\n"
                 + TARGETS, common, writing)
    p.add_argument("target", nargs="?", default="head", help="where to go (default: head)")
    _run_options(p)
    p.add_argument("--create", action="store_true",
                   help="create the database if there is none at the path (a new FileStorage)")

    p = _command(sub, "downgrade", "undo migrations down to TARGET",
                 "Runs the downgrade() of every applied migration above TARGET, children "
                 "first, each in its own transaction unless --one-transaction. A snapshot is "
                 "taken first.\n\n" + TARGETS, common, writing)
    p.add_argument("target", help="the revision to keep (base: undo everything)")
    _run_options(p)

    _command(sub, "current", "the revisions the database is at",
             "Prints the applied revisions no other applied revision builds on ((base) "
             "when none is applied).", common)
    _command(sub, "history", "the migration scripts, base first",
             "Lists every script with its parents; with a database, '*' marks the applied "
             "ones.", common)
    _command(sub, "heads", "the head revisions of the scripts",
             "Prints the revisions no script builds on; more than one means the history "
             "forked (see merge).", common)

    p = _command(sub, "status", "where the database stands",
                 "Current revisions, the heads of the scripts (and whether they forked), "
                 "pending migrations, schema drift, stored classes that do not import, "
                 "applied scripts edited since, and applied revisions no script declares.",
                 common)
    p.add_argument("--check", action="store_true",
                   help=f"exit {EXIT_PENDING} when migrations are pending, else {EXIT_DRIFT} when "
                        "there is drift, an import failure, an edited script or an unknown revision")

    p = _command(sub, "plan", "the operations pending migrations would run",
                 "Runs each pending migration's upgrade() against a patch that is rolled "
                 "back, and prints the operations it records. Nothing is written.\n\n"
                 + TARGETS, common)
    p.add_argument("target", nargs="?", default="head", help="where an upgrade would go (default: head)")

    p = _command(sub, "stamp", "record TARGET as applied without running it",
                 "Marks TARGET and its ancestors as applied, and nothing else, without "
                 "running any migration (for a database brought up to date by other means)."
                 "\n\n" + TARGETS, common, writing)
    p.add_argument("target", help="the revision to record as the current one")

    _command(sub, "verify", "check the whole database",
             "Reads every record: classes that do not import (grouped per class, with the "
             f"import error) and references to objects that have no record. Exits "
             f"{EXIT_VALIDATION} when it finds any.", common)
    _command(sub, "scan", "count stored objects per class",
             "Reads every current record and counts them by class.", common)

    p = _command(sub, "snapshot", "create, list, restore or delete snapshots",
                 "A snapshot is a transaction id where the storage keeps history, else an "
                 "export file of every record. Every upgrade and downgrade takes one first.",
                 common)
    snap = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser,
                            help="what to do with snapshots")
    snap.required = True
    s = _command(snap, "create", "take a snapshot", "Records the database as it is now under a name.",
                 common, writing)
    s.add_argument("name", nargs="?", help="its name (default: one from the date and time)")
    s.add_argument("--note", default="", help="a note kept with it")
    s.add_argument("--dir", dest="directory", default=None,
                   help="where an export snapshot's file goes (history-free storages; "
                        "default $DSUSTORE_SNAPSHOTS, else next to the other exports)")
    _command(snap, "list", "list snapshots", "The recorded snapshots, oldest first (read-only).",
             common)
    s = _command(snap, "restore", "bring the database back to a snapshot",
                 "Rewrites the objects changed since the snapshot; takes a snapshot of the "
                 "present first, so the restore can be undone. Refuses when the application "
                 "wrote since, unless --force.", common, writing)
    s.add_argument("name", help="the snapshot to restore")
    s.add_argument("--force", action="store_true", help="restore even over application writes")
    s = _command(snap, "delete", "forget a snapshot",
                 "Forgets it (and deletes its export file); a later pack may drop its state.",
                 common, writing)
    s.add_argument("name", help="the snapshot to forget")

    s = _command(snap, "prune", "forget all but the newest automatic snapshots",
                 "Forgets the snapshots dsustore took itself (before upgrades, downgrades and "
                 "restores) but the KEEP newest, and deletes their export files, so that pack "
                 "can drop the states only they kept. [tool.dsustore] keep_snapshots does this "
                 "after every successful run.", common, writing)
    s.add_argument("--keep", type=int, default=0, metavar="KEEP",
                   help="how many of the newest to keep (default: 0)")
    s.add_argument("--all", dest="include_named", action="store_true",
                   help="count snapshots taken by name too")

    _command(sub, "unlock", "break the migration lock",
             "Frees the migration lock whoever holds it (status shows the holder). For a lock "
             "whose holder you know is gone: a holder on this machine whose process died is "
             "taken over without it, one elsewhere after its lease (30 s). A holder still "
             "running loses the lock and stops before its next commit.", common, writing)

    p = _command(sub, "pack", "pack history, keeping what snapshots need",
                 "Removes old revisions of objects, but not those a recorded snapshot needs.",
                 common, writing)
    p.add_argument("--days", type=float, default=0, help="keep the history of the last DAYS days")
    return parser


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for JSON, read before (or without) parsing it."""
    for arg in argv:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dsustore`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _Parser.json_output = _wants_json(argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as err:
        return _usage_error(err)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    finally:
        _Parser.json_output = False
    args.verbose += getattr(args, "verbose_after", 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else
                        logging.INFO if args.verbose else logging.WARNING,
                        format="dsustore: %(message)s", stream=sys.stderr)
    try:
        result, code = _dispatch(args)
    except UsageError as err:  # options that parse but do not go together
        return _usage_error(err)
    except DSUError as err:
        return _fail(args, err, _exit_code(err), err.facts())
    except OSError as err:
        return _fail(args, err, EXIT_FAILURE, {"error": type(err).__name__, "message": str(err)})
    except KeyboardInterrupt as err:
        return _fail(args, err, EXIT_INTERRUPTED, {"error": "KeyboardInterrupt", "message": "interrupted"})
    except Exception as err:  # a bug, or a migration script raising something odd
        return _fail(args, err, EXIT_FAILURE, {"error": type(err).__name__, "message": str(err)},
                     hint=True)
    _emit(args, result)
    return code


def _usage_error(err: UsageError) -> int:
    if _Parser.json_output:
        print(json.dumps({"ok": False, "exit_code": EXIT_USAGE, "error": "UsageError",
                          "message": str(err), "usage": err.usage}))
    sys.stderr.write(f"dsustore: error: {err}\n")
    return EXIT_USAGE


def _exit_code(err: DSUError) -> int:
    if isinstance(err, PartialRunError):
        return EXIT_PARTIAL
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
    prepend_sys_path(settings.sys_path)
    args.keep_snapshots = settings.keep_snapshots
    folder = settings.migrations
    command = args.command
    if command == "heads":
        return commands.heads(folder), EXIT_OK
    if command == "merge":
        return commands.merge(folder, args.message, args.revisions, revision_id=args.rev_id), EXIT_OK
    if command == "revision":
        if (args.interactive or args.empty) and not args.autogenerate:
            raise UsageError(f"{'--interactive' if args.interactive else '--empty'} goes with "
                             "--autogenerate", "dsustore revision -m MESSAGE --autogenerate")
        with _database(args, settings.db, wanted=args.autogenerate) as db:
            return commands.revision(folder, args.message, autogenerate=args.autogenerate, db=db,
                                     revision_id=args.rev_id, empty=args.empty,
                                     confirm=_ask if args.interactive else None), EXIT_OK
    if command == "history":
        with _database(args, settings.db, wanted=bool(settings.db)) as db:
            return commands.history(folder, db=db), EXIT_OK
    if command == "init":
        with _database(args, settings.db, wanted=bool(settings.db)) as db:
            return commands.init(folder, db=db), EXIT_OK
    with _database(args, settings.db) as db:
        return _with_db(args, db, folder)


def _with_db(args: argparse.Namespace, db: Any, folder: Path) -> tuple[Any, int]:
    command = args.command
    if command in ("upgrade", "downgrade"):
        run = commands.upgrade if command == "upgrade" else commands.downgrade
        reporter = _progress(args)
        try:
            result = run(db, folder, args.target, dry_run=args.dry_run, progress=reporter,
                         transaction_per_migration=not args.one_transaction,
                         snapshot=not args.no_snapshot, lock_wait=args.lock_wait,
                         keep_snapshots=args.keep_snapshots)
        finally:
            if reporter is not None:
                reporter.close()
        return result, EXIT_OK
    if command == "current":
        return commands.current(db), EXIT_OK
    if command == "status":
        result = commands.status(db, folder)
        return result, _status_code(result) if args.check else EXIT_OK
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
    if command == "unlock":
        return commands.unlock(db), EXIT_OK
    if command == "snapshot":
        if args.action == "create":
            return commands.snapshot_create(db, args.name, note=args.note,
                                            directory=args.directory), EXIT_OK
        if args.action == "list":
            return commands.snapshot_list(db), EXIT_OK
        if args.action == "restore":
            return commands.snapshot_restore(db, args.name, force=args.force), EXIT_OK
        if args.action == "prune":
            return commands.snapshot_prune(db, keep=args.keep,
                                           include_named=args.include_named), EXIT_OK
        return commands.snapshot_delete(db, args.name), EXIT_OK
    raise DSUError(f"unknown command {command!r}")


def _ask(op: Operation) -> bool:
    """Ask on the terminal whether a guess is right, as Django's makemigrations does."""
    if isinstance(op, RenameField):
        question = f"Did you rename {op.class_name}.{op.old} to {op.new}?"
    elif isinstance(op, RenameClass):
        question = f"Did you move {op.old_name} to {op.new_name}?"
    else:
        question = f"Is this right: {render(op)}?"
    if op.note:
        question += f" ({op.note.removeprefix('TODO check: ')})"
    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _status_code(result: dict[str, Any]) -> int:
    """status --check: pending migrations first (upgrade resolves them), then the rest."""
    if result["pending"]:
        return EXIT_PENDING
    return EXIT_DRIFT if result["problems"] else EXIT_OK


def _read_only(args: argparse.Namespace) -> bool:
    return args.command in _READ_ONLY or (args.command == "snapshot" and args.action == "list")


@contextmanager
def _database(args: argparse.Namespace, uri: str | None, *, wanted: bool = True) -> Iterator[Any]:
    """The command's database, opened only when it needs one -- read-only when it only
    reads -- and always closed."""
    db = None
    if wanted:
        db = open_db(uri, read_only=_read_only(args),
                     create=args.command == "init" or getattr(args, "create", False),
                     repair=getattr(args, "repair", False))
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
    if command in ("revision", "merge"):
        if not result["written"]:
            return ("no schema drift: the stored schema matches the code, so there is nothing to "
                    "draft and nothing was written (--empty writes an empty script anyway)")
        drafted = "".join(f"\n    {op}" for op in result["operations"])
        if result["downgrade"]:
            drafted += "\n  downgrade:" + "".join(f"\n    {op}" for op in result["downgrade"])
        merged = f" merging {', '.join(result['down_revisions'])}" if command == "merge" else ""
        return f"wrote {result['path']} (revision {result['revision']}{merged}){drafted}"
    if command in ("upgrade", "downgrade"):
        return _format_run(result)
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
        return _format_status(args, result)
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
        lines += [f"broken: {_objects(b['count'])} of class {b['class']} "
                  f"{'does' if b['count'] == 1 else 'do'} not import: {b['cause']} "
                  f"(e.g. {', '.join(b['oids'][:3])})" for b in result["broken"]]
        lines += [f"dangling: {d['oid']} referenced by {d['referenced_by']} has no record"
                  for d in result["dangling"]]
        lines += _sys_path_hint(b["cause"] for b in result["broken"])
        lines.append(f"{result['objects']} objects: " + ("ok" if result["ok"] else "PROBLEMS FOUND"))
        return "\n".join(lines)
    if command == "pack":
        return result["message"]
    if command == "unlock":
        if result["broken"] is None:
            return "the migration lock was not held"
        return (f"broke the migration lock held by {_holder(result['broken'])}; if that process "
                "still runs, it loses the lock and stops before its next commit")
    if command == "snapshot":
        return _format_snapshot(args, result)
    return json.dumps(result, indent=2, default=str)


def _format_run(result: dict[str, Any]) -> str:
    verb = "would run" if result.get("dry_run") else "ran"
    lines = [f"{verb} {m['revision']}: {m.get('message', '')} ({_changes(m)})"
             for m in result.get("migrations", [])]
    lines = lines or ["nothing to do"]
    if result.get("snapshot"):
        snap = result["snapshot"]
        lines.insert(0, f"snapshot {snap['name']} ({snap['kind']}) taken first")
    lines.append(f"current: {_revs(result.get('current'))}")
    return "\n".join(lines)


def _format_status(args: argparse.Namespace, result: dict[str, Any]) -> str:
    lines = [f"current: {_revs(result['current'])}"]
    if result["forked"]:
        lines.append(f"forked: the scripts have {len(result['heads'])} heads, "
                     f"{', '.join(result['heads'])}; join them with `dsustore merge -m MESSAGE`, "
                     "or apply every branch with `dsustore upgrade heads`")
    lines += [f"pending: {p['revision']} {p['message']}" for p in result["pending"]]
    lines += [f"drift: {d['python']}" for d in result["drift"]]
    for cause, names in _by_cause(result["import_failed"]).items():
        lines.append(f"does not import: {_objects(len(names), 'stored class', 'stored classes')} "
                     f"({', '.join(names)}): {cause}")
    lines += _sys_path_hint(_by_cause(result["import_failed"]))
    lines += [f"edited since applied: {rev}" for rev in result["edited"]]
    lines += [f"unknown to the scripts: {rev}" for rev in result["unknown"]]
    if result.get("lock"):
        lines.append(f"locked: {_holder(result['lock'])}")
    if result["pending"]:
        lines.append(f"{len(result['pending'])} pending")
    elif args.check and result["problems"]:
        lines.append("not in line with the code: " + "; ".join(result["problems"]))
    else:
        lines.append("up to date")
    return "\n".join(lines)


def _by_cause(failed: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Classes that do not import, grouped by the error their import raised."""
    grouped: dict[str, list[str]] = {}
    for item in failed:
        grouped.setdefault(item["cause"], []).append(item["class"])
    return grouped


def _sys_path_hint(causes: Iterable[str]) -> list[str]:
    """A hint where a module is not found: the project's code may not be on sys.path."""
    if any(cause.startswith("ModuleNotFoundError") for cause in causes):
        return ["hint: is the project's code on sys.path? It is put there from "
                "[tool.dsustore] sys_path in pyproject.toml (default: its folder)"]
    return []


def _holder(holder: dict[str, Any]) -> str:
    """``pid 12 on host vm (dsustore upgrade), lease expires in 20s; its process is gone...``"""
    text = describe_holder(holder)
    if holder.get("alive") is False:
        text += "; its process is gone, so the next run takes the lock over"
    return text


def _format_snapshot(args: argparse.Namespace, result: Any) -> str:
    if args.action == "list":
        return "\n".join(f"{s['name']}  {s['kind']}  {s['tid'] or 'INCOMPLETE'}  {s['created']}"
                         f"{'  auto' if s.get('auto') else ''}"
                         f"{'  ' + s['path'] if s.get('path') else ''}"
                         f"{'  ' + s['note'] if s['note'] else ''}" for s in result) or "no snapshots"
    if args.action == "prune":
        kept = f"; kept {len(result['kept'])}" if result["kept"] else ""
        return (f"forgot {_objects(len(result['pruned']), 'snapshot', 'snapshots')}"
                f"{': ' + ', '.join(s['name'] for s in result['pruned']) if result['pruned'] else ''}"
                f"{kept}; `dsustore pack` can now drop the states only they kept")
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


def _changes(migration: dict[str, Any]) -> str:
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


def _objects(count: int, one: str = "object", many: str = "objects") -> str:
    return f"{count:,} {one if count == 1 else many}"


def _revs(revisions: Any) -> str:
    return ", ".join(revisions) if revisions else "(base)"
