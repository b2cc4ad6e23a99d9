"""How long another process's writes wait while an upgrade migrates N objects, in one run.

    python benchmarks/bench_write_latency.py 100000 [kinds ...]

kinds: zeo, relstorage-hp, file (all three by default). For each it builds N
``benchitems.Item`` objects, starts a writer -- another process on ZEO and
RelStorage, a thread of the upgrading process on FileStorage -- guarded with
``guard_stale_code`` and committing one new ``Item`` after another as fast as it can,
then runs ``dsustore.upgrade`` with a migration that adds a field to every Item. It
prints the writer's commit latency (from its first attempt to its commit, retries
and waits at the write barrier included) before the upgrade, as the baseline, and
during it: p50, p99 and the longest, and the ratio of the longest during the upgrade
to the longest before. Target: the longest write during the upgrade of 100,000
objects is at most 250 ms. Absolute times vary between machines and runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path[:0] = [str(HERE), str(TESTS)]

from bench_add_field import build, fill  # noqa: E402
from bench_backends import CopiedZEOServer  # noqa: E402
from servers import PostgresServer  # noqa: E402

KINDS = ("zeo", "relstorage-hp", "file")
BASELINE_SECONDS = 3.0

MIGRATION = '''"""every item is flagged"""

revision = "0001"
down_revision = None


def upgrade(patch):
    patch.add_field("benchitems.Item", "flag", True)
'''

WRITER = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from bench_write_latency import write
from dsustore import open_db

uri, stop, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
db = open_db(uri)
try:
    Path(str(out) + ".ready").write_text("ready")
    out.write_text(json.dumps(write(db, stop.exists)))
finally:
    db.close()
"""


def write(db: Any, stop: Any) -> list[tuple[float, float]]:
    """Commit new Items until ``stop()`` or until the code is stale; (start, latency) of each."""
    import transaction
    from benchitems import Item
    from ZODB.POSException import ConflictError

    from dsustore import StaleCodeError, guard_stale_code

    guard = guard_stale_code(db, set())  # release 1: knows no migration
    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    samples: list[tuple[float, float]] = []
    number = 10**9
    try:
        while not stop():
            started = time.time()
            while True:
                tm.begin()
                try:
                    conn.root()["items"][number] = Item(number)
                    tm.commit()
                    break
                except ConflictError:
                    tm.abort()
                except StaleCodeError:
                    tm.abort()
                    return samples  # the upgrade committed: this release writes no more
            samples.append((started, time.time() - started))
            number += 1
    finally:
        guard.uninstall()
        conn.close()
    return samples


def _migrations(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "0001_flag.py").write_text(MIGRATION)
    return folder


def _upgrade(uri_or_db: Any, folder: Path) -> tuple[float, float, int]:
    from dsustore import open_db, upgrade

    db = open_db(uri_or_db) if isinstance(uri_or_db, str) else uri_or_db
    try:
        started = time.time()
        result = upgrade(db, folder, snapshot=False)
        return started, time.time(), sum(result.migrated.values())
    finally:
        if isinstance(uri_or_db, str):
            db.close()


def measure_process(uri: str, folder: Path, tmp: Path) -> dict[str, Any]:
    """A writer process beside an upgrade of the database at ``uri``."""
    tmp = Path(tempfile.mkdtemp(prefix="writer-", dir=tmp))
    stop, out = tmp / "stop", tmp / "writes.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), str(TESTS),
                                                                    os.environ.get("PYTHONPATH")])))
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(here=str(HERE)), uri, str(stop),
                               str(out)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        while not Path(str(out) + ".ready").exists():
            if writer.poll() is not None:
                raise SystemExit(f"the writer failed:\n{writer.stderr.read() if writer.stderr else ''}")
            time.sleep(0.05)
        time.sleep(BASELINE_SECONDS)
        started, ended, migrated = _upgrade(uri, folder)
    finally:
        stop.write_text("stop")
        _out, err = writer.communicate(timeout=600)
    if writer.returncode:
        raise SystemExit(f"the writer failed:\n{err}")
    return {"samples": json.loads(out.read_text()), "started": started, "ended": ended,
            "migrated": migrated}


def measure_thread(path: Path, folder: Path) -> dict[str, Any]:
    """A writer thread beside an upgrade of the FileStorage both share."""
    import ZODB
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(str(path)))
    stop = threading.Event()
    samples: list[tuple[float, float]] = []
    writer = threading.Thread(target=lambda: samples.extend(write(db, stop.is_set)))
    try:
        writer.start()
        time.sleep(BASELINE_SECONDS)
        started, ended, migrated = _upgrade(db, folder)
    finally:
        stop.set()
        writer.join(600)
        db.close()
    return {"samples": samples, "started": started, "ended": ended, "migrated": migrated}


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def report(kind: str, result: dict[str, Any]) -> None:
    before = [lat for start, lat in result["samples"] if start + lat < result["started"]]
    during = [lat for start, lat in result["samples"] if start + lat >= result["started"]]
    print(f"  {kind}: {result['migrated']:,} objects migrated in "
          f"{result['ended'] - result['started']:.1f}s; {len(before):,} writes before, "
          f"{len(during):,} during")
    for label, values in (("before (baseline)", before), ("during the upgrade", during)):
        print(f"    {label:20s} p50 {1000 * _percentile(values, 0.5):7.1f} ms   "
              f"p99 {1000 * _percentile(values, 0.99):7.1f} ms   "
              f"longest {1000 * max(values, default=0):7.1f} ms")
    longest = max(during, default=0)
    ratio = longest / max(before, default=1e-9) if before else float("nan")
    print(f"    longest write during the upgrade = {1000 * longest:.0f} ms (target <= 250 ms); "
          f"{ratio:.1f}x the longest before it")


def run(n: int, kinds: list[str]) -> None:
    print(f"\nN = {n:,} objects")
    with tempfile.TemporaryDirectory(prefix="dsustore-bench-") as tmp:
        folder = _migrations(Path(tmp) / "migrations")
        built = Path(tmp) / "built.fs"
        build(built, n)
        if "zeo" in kinds:
            server = CopiedZEOServer(built, base_dir=Path(tmp))
            try:
                server.start()
                report("zeo (a writer process, ZEO server over FileStorage)",
                       measure_process(server.uri, folder, Path(tmp)))
            finally:
                server.stop()
        if "relstorage-hp" in kinds:
            with PostgresServer() as pg:
                report("relstorage-hp (a writer process, PostgreSQL)",
                       measure_process(_relstorage(pg, n), folder, Path(tmp)))
        if "file" in kinds:
            copy = Path(tmp) / "threads.fs"
            copy.write_bytes(built.read_bytes())
            report("file (a writer thread sharing the FileStorage)", measure_thread(copy, folder))


def _relstorage(pg: PostgresServer, n: int) -> str:

    from dsustore import open_db

    pg.create_database("latency")
    uri = f"postgresql://{pg.superuser}@{pg.host}:{pg.port}/latency?keep_history=true"
    db = open_db(uri, create=True)
    fill(db, n)
    db.close()
    return uri


if __name__ == "__main__":
    args = sys.argv[1:]
    sizes = [int(a.replace("_", "")) for a in args if a.replace("_", "").isdigit()] or [100_000]
    chosen = [a for a in args if a in KINDS] or list(KINDS)
    began = time.perf_counter()
    for size in sizes:
        run(size, chosen)
    print(f"\n(total {time.perf_counter() - began:.0f}s)")
