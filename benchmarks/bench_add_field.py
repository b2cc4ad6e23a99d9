"""Throughput and memory of dsustore against the storage's raw limit, measured in one run.

    python benchmarks/bench_add_field.py 100000 [1000000 ...]

For each N it builds a FileStorage of N objects, then measures on fresh copies, each
in its own process (so peak RSS is that measurement's own):

  raw-rewrite   the limit: FileStorage iterator, keep records the index points at,
                unpickle the state, add a key, re-pickle, store; one commit
  dsustore      Patch.add_field over the same records (one atomic commit)
  raw-compute   the raw rewrite, the key's value computed from the state
                (``number * 2``)
  dsustore-compute  Patch.add_field with ``policies.compute(lambda old: old.number * 2)``
  raw-scan      iterator + index check only
  all_instances dsustore.mop.all_instances over the same records (ghosts yielded)

and prints objects per second, the ratios dsustore/raw-rewrite (constant and computed
values) and all_instances/raw-scan, and peak RSS. Absolute numbers vary between machines and
runs; the ratios are the targets.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from benchrun import measure_in_child

HERE = Path(__file__).resolve().parent
BATCH = 50_000

CHILD = r"""
import io, json, resource, sys, time
sys.path.insert(0, {here!r})
import ZODB, transaction
from ZODB.FileStorage import FileStorage
path, what = sys.argv[1], sys.argv[2]

def rss_mib():
    # VmHWM belongs to this process's own address space (ru_maxrss would carry the
    # parent's peak across fork and exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

def raw_rewrite(compute=False):
    import zodbpickle.pickle as zp
    from ZODB.utils import p64
    class Ref:
        __slots__ = ("pid",)
        def __init__(self, pid): self.pid = pid
    fs = FileStorage(path)
    index = fs._index
    from ZODB.Connection import TransactionMetaData
    txn = TransactionMetaData()
    start = time.perf_counter()
    fs.tpc_begin(txn)
    count = 0
    it = fs.iterator()
    for t in it:
        for r in t:
            if index.get(r.oid) != r.pos or r.data is None:
                continue
            u = zp.Unpickler(io.BytesIO(r.data))
            u.persistent_load = Ref
            meta = u.load(); state = u.load()
            if not isinstance(state, dict):
                continue
            if compute:
                if "number" not in state:
                    continue
                state["double"] = state["number"] * 2
            else:
                state["flag"] = True
            f = io.BytesIO()
            p = zp.Pickler(f, 3)
            p.persistent_id = lambda o: o.pid if type(o) is Ref else None
            p.dump(meta); p.dump(state)
            fs.store(r.oid, r.tid, f.getvalue(), "", txn)
            count += 1
    it.close()
    fs.tpc_vote(txn); fs.tpc_finish(txn)
    elapsed = time.perf_counter() - start
    fs.close()
    return count, elapsed

def dsustore_add_field():
    from dsustore import Patch
    db = ZODB.DB(FileStorage(path))
    start = time.perf_counter()
    with Patch(db) as patch:
        patch.add_field("benchitems.Item", "flag", True)
    elapsed = time.perf_counter() - start
    db.close()
    return patch.report.objects_migrated, elapsed

def raw_compute():
    return raw_rewrite(compute=True)

def dsustore_compute():
    from dsustore import Patch, policies
    db = ZODB.DB(FileStorage(path))
    start = time.perf_counter()
    with Patch(db) as patch:
        patch.add_field("benchitems.Item", "double", policies.compute(lambda old: old.number * 2))
    elapsed = time.perf_counter() - start
    db.close()
    return patch.report.objects_migrated, elapsed

def raw_scan():
    fs = FileStorage(path, read_only=True)
    index = fs._index
    start = time.perf_counter()
    count = 0
    it = fs.iterator()
    for t in it:
        for r in t:
            if index.get(r.oid) == r.pos and r.data is not None:
                count += 1
    it.close()
    elapsed = time.perf_counter() - start
    fs.close()
    return count, elapsed

def all_instances():
    from dsustore import mop
    db = ZODB.DB(FileStorage(path, read_only=True))
    conn = db.open()
    start = time.perf_counter()
    count = sum(1 for _ in mop.all_instances(conn, "benchitems.Item"))
    elapsed = time.perf_counter() - start
    conn.close(); db.close()
    return count, elapsed

count, elapsed = globals()[what]()
print(json.dumps({{"count": count, "seconds": elapsed, "rss_mib": rss_mib()}}))
"""


def fill(db: object, n: int) -> None:
    """Store ``n`` Items in an IOBTree under the root of ``db``, a batch per transaction."""
    import transaction
    from benchitems import Item
    from BTrees.IOBTree import IOBTree

    conn = db.open()  # type: ignore[attr-defined]
    conn.root()["items"] = items = IOBTree()
    for start in range(0, n, BATCH):
        for i in range(start, min(n, start + BATCH)):
            items[i] = Item(i)
        transaction.commit()
        conn.cacheMinimize()
    conn.close()


def build(path: Path, n: int) -> None:
    sys.path.insert(0, str(HERE))
    import ZODB
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(str(path)), cache_size=1000)
    fill(db, n)
    db.pack()
    db.close()


def measure(path: Path, what: str) -> dict:
    return measure_in_child(path, what, CHILD.format(here=str(HERE)))


def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "Data.fs"
        started = time.perf_counter()
        build(path, n)
        print(f"\nN = {n:,} objects (built in {time.perf_counter() - started:.1f}s)")
        results = {what: measure(path, what)
                   for what in ("raw_rewrite", "dsustore_add_field", "raw_compute",
                                "dsustore_compute", "raw_scan", "all_instances")}
    for what, r in results.items():
        rate = r["count"] / r["seconds"]
        print(f"  {what:20s} {r['count']:>10,} objects {r['seconds']:8.2f}s "
              f"{rate:>12,.0f} obj/s   peak RSS {r['rss_mib']:7.1f} MiB")
    raw, dsu = results["raw_rewrite"], results["dsustore_add_field"]
    raw_c, dsu_c = results["raw_compute"], results["dsustore_compute"]
    scan, inst = results["raw_scan"], results["all_instances"]

    def ratio(a: dict, b: dict) -> float:
        return (a["count"] / a["seconds"]) / (b["count"] / b["seconds"])

    print(f"  constant ratio dsustore / raw-rewrite      = {ratio(dsu, raw):.2f}  (target >= 0.9)")
    print(f"  compute ratio  dsustore / raw computing    = {ratio(dsu_c, raw_c):.2f}  (target >= 0.85)")
    print(f"  scan ratio     all_instances / raw-scan    = {ratio(inst, scan):.2f}  (target >= 0.9)")
    print(f"  memory ratio   dsustore / raw-rewrite RSS  = "
          f"{dsu['rss_mib'] / raw['rss_mib']:.2f}  (target <= 1.2 at 1M)")


if __name__ == "__main__":
    sizes = [int(a.replace("_", "")) for a in sys.argv[1:]] or [100_000]
    for size in sizes:
        run(size)
