"""Moving a class to another module: dsustore against zodbupdate and a bytes-level rewrite.

    python benchmarks/bench_rename.py 100000 [1000000 ...]

For each N it builds a FileStorage of a lending library -- 60% ``benchcatalog.Reader``
objects (every fifth sponsored by another reader), 40% ``benchcatalog.Loan`` objects
each referencing a reader, all in an IOBTree -- and moves ``Reader`` to
``benchpeople.Reader``: its records and every reference to a reader (loans, sponsored
readers, the tree's buckets) must name the new module. Each measurement runs on a
fresh copy, in its own process (so peak RSS is its own):

  bytes-rewrite  the limit: FileStorage iterator, keep the records the index points
                 at, replace the class's GLOBAL opcode in the bytes of those naming it,
                 store; one commit (correct only because no string in this data
                 holds those bytes)
  zodbupdate     zodbupdate's Updater with the rename (commits every 100,000
                 records: not atomic)
  dsustore       Patch.rename_class (one atomic commit, validations, catch-up)

Afterwards each copy is checked: no current record names the old module. It prints
seconds (and the process's CPU seconds over the same span: on a busy machine their
ratio is the steadier one), records rewritten, peak RSS, and the ratios dsustore/zodbupdate (speed-up)
and dsustore/bytes-rewrite (time and RSS). Absolute numbers vary; the ratios, measured
in one run, are the targets. zodbupdate is installed with ``pip install zodbupdate``
(it is in the ``dev`` extra).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchrun import measure_in_child

HERE = Path(__file__).resolve().parent
BATCH = 50_000
OLD, NEW = "benchcatalog.Reader", "benchpeople.Reader"

CHILD = r"""
import json, sys, time
sys.path.insert(0, {here!r})
import ZODB
from ZODB.FileStorage import FileStorage
path, what = sys.argv[1], sys.argv[2]
OLD, NEW = {old!r}, {new!r}

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def needle(dotted):
    module, name = dotted.rsplit(".", 1)
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

def bytes_rewrite():
    from ZODB.Connection import TransactionMetaData
    old, new = needle(OLD), needle(NEW)
    fs = FileStorage(path)
    index = fs._index
    txn = TransactionMetaData()
    start, cpu = time.perf_counter(), time.process_time()
    fs.tpc_begin(txn)
    count = 0
    it = fs.iterator()
    for t in it:
        for r in t:
            if index.get(r.oid) != r.pos or r.data is None or old not in r.data:
                continue
            fs.store(r.oid, r.tid, r.data.replace(old, new), "", txn)
            count += 1
    it.close()
    fs.tpc_vote(txn); fs.tpc_finish(txn)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    fs.close()
    return count, elapsed, cpu

def zodbupdate():
    import logging
    from zodbupdate.update import Updater
    logging.getLogger("zodbupdate").setLevel(logging.ERROR)
    fs = FileStorage(path)
    renames = {{tuple(OLD.rsplit(".", 1)): tuple(NEW.rsplit(".", 1))}}
    start, cpu = time.perf_counter(), time.process_time()
    Updater(fs, renames=renames)()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    fs.close()
    return None, elapsed, cpu

def dsustore():
    from dsustore import Patch
    db = ZODB.DB(FileStorage(path))
    start, cpu = time.perf_counter(), time.process_time()
    with Patch(db) as patch:
        patch.rename_class(OLD, NEW)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    db.close()
    return patch.report.records_rewritten, elapsed, cpu

def left_behind():
    # current records still naming the old class, and the records the copy holds
    fs = FileStorage(path, read_only=True)
    old, index = needle(OLD), fs._index
    found = total = 0
    it = fs.iterator()
    for t in it:
        for r in t:
            if index.get(r.oid) == r.pos and r.data is not None:
                total += 1
                found += old in r.data
    it.close(); fs.close()
    return found, total

count, elapsed, cpu = globals()[what]()
rss = rss_mib()
print(json.dumps({{"count": count, "seconds": elapsed, "cpu": cpu, "rss_mib": rss,
                  "left": left_behind()}}))
"""


def build(path: Path, n: int) -> None:
    sys.path.insert(0, str(HERE))
    import transaction
    import ZODB
    from benchcatalog import Loan, Reader
    from BTrees.IOBTree import IOBTree
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(str(path)), cache_size=1000)
    conn = db.open()
    conn.root()["catalog"] = catalog = IOBTree()
    readers: list[Reader] = []
    for start in range(0, n, BATCH):
        for i in range(start, min(n, start + BATCH)):
            if i % 5 < 3:  # 60% readers
                reader = Reader(i)
                if readers and i % 5 == 0:
                    reader.sponsor = readers[-1]
                readers.append(reader)
                catalog[i] = reader
            else:
                catalog[i] = Loan(i, readers[-1])
        transaction.commit()
        readers = readers[-1:]
        conn.cacheMinimize()
    conn.close()
    db.pack()
    db.close()


def measure(path: Path, what: str) -> dict:
    return measure_in_child(path, what, CHILD.format(here=str(HERE), old=OLD, new=NEW))


def run(n: int, kinds: tuple[str, ...]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "Data.fs"
        started = time.perf_counter()
        build(path, n)
        print(f"\nN = {n:,} objects, move {OLD} -> {NEW} "
              f"(built in {time.perf_counter() - started:.1f}s)")
        results = {what: measure(path, what) for what in kinds}
    for what, r in results.items():
        count = f"{r['count']:>10,}" if r["count"] is not None else f"{'':>10s}"
        left, total = r["left"]
        print(f"  {what:14s} {r['seconds']:8.2f}s (cpu {r['cpu']:6.2f}s) {count} records rewritten  "
              f"peak RSS {r['rss_mib']:7.1f} MiB   old name left in {left} of {total:,}")
        if left:
            raise SystemExit(f"{what} left {left} records naming {OLD}")
    dsu = results["dsustore"]
    if "zodbupdate" in results:
        zu = results["zodbupdate"]
        print(f"  speed-up  zodbupdate / dsustore time      = {zu['seconds'] / dsu['seconds']:.2f}x "
              f"(cpu {zu['cpu'] / dsu['cpu']:.2f}x)  (target >= 2, goal 3)")
    if "bytes_rewrite" in results:
        limit = results["bytes_rewrite"]
        print(f"  limit     bytes-rewrite / dsustore time   = {limit['seconds'] / dsu['seconds']:.2f} "
              f"(cpu {limit['cpu'] / dsu['cpu']:.2f})")
        print(f"  memory    dsustore / bytes-rewrite RSS    = "
              f"{dsu['rss_mib'] / limit['rss_mib']:.2f}  (target <= 1.2 at 1M)")


if __name__ == "__main__":
    args = sys.argv[1:]
    kinds = tuple(a for a in args if not a.replace("_", "").isdigit()) or (
        "bytes_rewrite", "zodbupdate", "dsustore")
    sizes = [int(a.replace("_", "")) for a in args if a.replace("_", "").isdigit()] or [100_000]
    for size in sizes:
        run(size, kinds)
