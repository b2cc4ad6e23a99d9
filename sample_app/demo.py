"""The demo: a live upgrade of a running sample_app server under load, then a restore.

``python -m sample_app.demo`` (``make demo``), with no other step:

1. creates a FileStorage with release 1's code and data (over 100,000 objects);
2. starts the release-1 server (waitress, loopback) and drives concurrent login
   and order requests against it;
3. applies every migration live, through the server's admin endpoint, while the
   load goes on;
4. prints the requests served before, during and after the update, the failed
   ones, the longest a request took, p50/p99 latency before, during and after,
   how long writes were held at the commit and what that moment was made of, the
   objects migrated per class and the snapshot the update took; and saves a
   picture of the run (``latency.svg``: request latency over time, the update's
   phases marked) next to ``run.json``, the measurements it was drawn from;
5. restores that snapshot into a copy of the database and shows the old data back.

``--db zeo://HOST:PORT`` runs it against a ZEO server instead (an empty database);
the restore then happens in that database itself, after the server process stops.

The work folder is its owner's alone (0700), and populate writes the
credentials file there 0600: both hold plain passwords.

Every number printed is measured in the run. Exit status 0 only when no request
failed and the restore brought release 1's data back.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ZODB import DB
from ZODB.FileStorage import FileStorage

import dsustore
from sample_app import releases
from sample_app.load import Load, Request, call
from sample_app.picture import draw
from sample_app.server import launch

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("accounts", "products", "orders", "sessions")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    work = Path(args.workdir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, mode=0o700)  # release 1's database keeps passwords in plain text
    data = args.db or str(work / "Data.fs")

    print(f"[1/5] creating a release-1 database in {data} ...", flush=True)
    started = time.monotonic()
    populate = _python("-m", "sample_app.populate", "--db", data, "--release", "1",
                       "--credentials", str(work / "credentials.json"), *args.sizes, capture=True)
    counts = _class_counts(populate)
    print(f"      {counts.get('total', 0):,} objects in {time.monotonic() - started:.1f}s "
          f"({', '.join(f'{n:,} {c.rsplit(chr(46), 1)[-1]}' for c, n in counts.items() if c.startswith('sampleshop'))})")
    credentials = json.loads((work / "credentials.json").read_text())

    token = secrets.token_hex(16)
    print("[2/5] starting the release-1 server ...", flush=True)
    server, base = launch(data, 1, admin_token=token)
    try:
        load = Load(base, credentials, workers=args.workers).start()
        print(f"      {base}: {args.workers} clients logging in and ordering; "
              f"warming up {args.warmup:.0f}s", flush=True)
        time.sleep(args.warmup)
        print(f"[3/5] live upgrade to release {releases.LATEST} ...", flush=True)
        update_start = time.time()
        status, update = call(base, "POST", "/admin/upgrade", {"release": releases.LATEST},
                              token=token, timeout=1800)
        update_end = time.time()
        time.sleep(args.after)
        requests = load.stop()
        _, health = call(base, "GET", "/health")
    finally:
        server.terminate()
        server.wait(timeout=30)
    if status != 200:
        print(f"the live update failed ({status}): {update.get('error')}")
        return 1

    failed = _report(requests, update, health, update_start, update_end)
    rows = [[r.kind, r.started, r.ended, r.status] for r in requests]
    (work / "run.json").write_text(json.dumps({
        "update": update, "update_start": update_start, "update_end": update_end, "requests": rows}))
    picture = draw(work / "latency.svg", rows, update["phases"], (update_start, update_end))
    print(f"  picture            {picture} (latency over time, the update's phases marked)\n")
    snapshot = update["snapshot"]["name"]
    if args.db:
        print(f"[5/5] restoring the snapshot in {data} ...", flush=True)
        restored = _restore(dsustore.open_db(data), snapshot, data)
    else:
        print("[5/5] restoring the snapshot into a copy of the database ...", flush=True)
        copy = work / "Restored.fs"
        shutil.copyfile(data, copy)
        restored = _restore(DB(FileStorage(str(copy))), snapshot, copy.name)
    return 0 if failed == 0 and restored else 1


def _report(requests: list[Request], update: dict[str, Any], health: dict[str, Any],
            start: float, end: float) -> int:
    before = [r for r in requests if r.ended <= start]
    after = [r for r in requests if r.started >= end]
    during = [r for r in requests if r.ended > start and r.started < end]
    failed = [r for r in requests if not r.ok]
    slowest = max(requests, key=lambda r: r.duration)
    slowest_during = max(during, key=lambda r: r.duration, default=None)
    print(f"[4/5] results (release {health.get('release')} serving now)\n")
    print(f"  requests served    before {len(before):>6,}   during {len(during):>6,}"
          f"   after {len(after):>6,}")
    print(f"  failed requests    {len(failed)}" + "".join(
        f"\n    {r.kind} {r.status} {r.error}" for r in failed[:5]))
    print(f"  live update        {end - start:.1f}s for {len(update['revisions'])} migrations "
          f"({', '.join(update['revisions'])}), one transaction")
    print(f"  longest request    {slowest.duration * 1000:.0f} ms ({slowest.kind})"
          + (f"; longest during the update {slowest_during.duration * 1000:.0f} ms"
             f" ({slowest_during.kind})" if slowest_during else ""))
    print("  latency p50 / p99  " + "   ".join(
        f"{label} {_percentile(group, 50):.0f} / {_percentile(group, 99):.0f} ms"
        for label, group in (("before", before), ("during", during), ("after", after))))
    reads = [r for r in during if r.kind == "read"]
    print(f"  reads during       {len(reads):,}, longest {max((r.duration for r in reads), default=0) * 1000:.0f} ms"
          " (reads are never held)")
    print(f"  application held   {update['commit_pause'] * 1000:.0f} ms at the commit (writes "
          f"only: {_held(update['phases'])}), {update['load_pause'] * 1000:.0f} ms to load the new code")
    print("  objects migrated   (per migration, all in one transaction)")
    for migration in update["migrations"]:
        counts = ", ".join(f"{n:,} {c.rsplit('.', 1)[-1]}" for c, n in sorted(migration["migrated"].items())
                           if not c.startswith("persistent."))
        rewritten = migration.get("references_rewritten", 0)
        counts += f"{', ' if counts else ''}{rewritten:,} references rewritten" if rewritten else ""
        title = migration["message"].split(": ", 1)[-1].replace("``", "")[:48]
        print(f"    {migration['revision']} {title:<48} {counts or '-'}")
    snap = update["snapshot"]
    print(f"  snapshot taken     {snap['name']} ({snap['kind']}, tid {snap['tid']})\n")
    return len(failed)


def _percentile(requests: list[Request], percent: float) -> float:
    """The request duration (ms) that ``percent`` per cent of ``requests`` do not exceed."""
    if not requests:
        return 0.0
    durations = sorted(r.duration for r in requests)
    return durations[min(len(durations) - 1, int(len(durations) * percent / 100))] * 1000


def _held(phases: list[dict[str, Any]]) -> str:
    """What the held moment was made of, in ms."""
    inside = ("hold writes", "final catch-up", "commit", "swap", "switch")
    return ", ".join(f"{p['name']} {(p['end'] - p['start']) * 1000:.0f}"
                     for p in phases if p["name"] in inside)


def _restore(db: Any, snapshot: str, where: str) -> bool:
    """Restore ``snapshot`` in ``db`` and show that release 1's data is back."""
    shop = releases.activate(1)
    try:
        before = dsustore.current(db)
        try:
            report = dsustore.restore(db, snapshot)
        except dsustore.SnapshotConflictError as refused:
            print(f"  without --force:   refused: {refused.reason}")
            report = dsustore.restore(db, snapshot, force=True)
        current = dsustore.current(db)
        counts = dsustore.mop.class_counts(db.storage)
        with db.transaction() as conn:
            account = conn.root()["accounts"]["user00000"]
            account._p_activate()
            state = {k: v for k, v in vars(account).items() if not k.startswith("_p_")}
        ok = (current == (releases.revision(1),) and type(account) is shop.models.Account
              and "name" in state and "password" in state and "username" not in state)
        print(f"  with force         {report.rewritten:,} objects of {where} written back in one "
              f"transaction; revision {', '.join(before)} -> {', '.join(current) or 'base'}")
        print(f"  sessions back      {counts.get('sampleshop.models.Session', 0):,}")
        print(f"  user00000          {sorted(state)} (release 1 shape: {'yes' if ok else 'NO'})")
        return ok
    finally:
        db.close()


def _python(*args: str, capture: bool = False) -> str:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, check=True, text=True,
                            stdout=subprocess.PIPE if capture else None)
    return result.stdout or ""


def _class_counts(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sample_app.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=str(ROOT / "var" / "demo"))
    parser.add_argument("--db", help="a database URI (zeo://HOST:PORT) instead of a FileStorage "
                                     "in the work folder; it must be empty")
    parser.add_argument("--workers", type=int, default=6, help="concurrent clients")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before")
    parser.add_argument("--after", type=float, default=3.0, help="seconds of load after")
    for name in SIZES:
        parser.add_argument(f"--{name}", type=int, help=f"{name} to create (default: populate's)")
    args = parser.parse_args(argv)
    args.sizes = [f"--{name}={value}" for name in SIZES if (value := getattr(args, name)) is not None]
    return args


if __name__ == "__main__":
    sys.exit(main())
