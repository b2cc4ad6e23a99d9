"""Offline upgrade of a sample database with the newest code.

``python -m sample_app.upgrade --db PATH [--to N]`` activates the latest
release's code whatever the target, as a deployment of that code would run it,
then applies the migrations up to ``--to`` (default: the latest release), each
in its own transaction, and reports them one per line.
"""

from __future__ import annotations

import argparse
import sys
import time

import dsustore
from sample_app import releases
from sample_app.database import open_database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sample_app.upgrade",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="FileStorage path or database URI")
    parser.add_argument("--to", type=int, default=releases.LATEST,
                        help="the release to upgrade the data to")
    parser.add_argument("--dry-run", action="store_true",
                        help="report what would change, write nothing")
    args = parser.parse_args(argv)
    if not 1 <= args.to <= releases.LATEST:
        parser.error(f"--to must be 1 to {releases.LATEST}")
    releases.activate(releases.LATEST)
    started = time.monotonic()
    db = open_database(args.db)
    try:
        result = dsustore.upgrade(db, releases.MIGRATIONS, target=releases.revision(args.to),
                                  dry_run=args.dry_run)
    except dsustore.DSUError as err:
        print(f"upgrade failed: {err}", file=sys.stderr)
        return 1
    finally:
        db.close()
    for migration in result.migrations:
        report = migration.report
        print(f"{migration.revision} {migration.message.rstrip('.')}: "
              f"{report.objects_migrated} migrated, {report.references_rewritten} rewritten, "
              f"{report.duration:.1f}s")
    verb = "would apply" if args.dry_run else "applied"
    print(f"{verb} {len(result.migrations)} migration(s) in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
