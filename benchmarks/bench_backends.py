"""The add-field migration on ZEO and RelStorage, against FileStorage and each storage's raw
rewrite, in one run.

    python benchmarks/bench_backends.py 100000 [kinds ...]

kinds: zeo, relstorage-hp, relstorage-hf (all three by default). It builds N
``benchitems.Item`` objects once in a FileStorage; for each kind it starts the
servers the test suite uses (tests/servers.py: a ZEO server over a copy of that
FileStorage, a PostgreSQL cluster on 127.0.0.1 with a database built the same way),
and measures on fresh copies (a copied Data.fs behind a new ZEO server; a database
created from the built one as template), each in its own process:

  raw-rewrite   the limit: the storage API alone -- record_iternext over the current
                records, unpickle the state, add a key, re-pickle, store; one commit
  filestorage   Patch.add_field on a local copy of the built FileStorage, measured
                right before the next line: the reference
  dsustore      Patch.add_field over the same records on the storage (one atomic commit)

and prints objects per second, the ratios dsustore/raw-rewrite and dsustore on the
storage / dsustore on FileStorage (throughput), peak RSS and its ratio to the raw
rewrite's, and where the time goes: for the raw rewrite the seconds spent waiting
for records (scan), re-pickling (transform), handing records to the storage (store)
and committing (vote + finish); for dsustore the pass (scan, migrate, savepoint)
and the commit; on ZEO the number of server calls each waited for (the requests of
a bulk read are in flight together and not counted). A summary at the end repeats
the ratios. Absolute numbers vary between machines and runs (other processes on
the machine weigh on both sides of a ratio, not always equally): compare ratios,
measured in one run, and run it twice when in doubt.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent / "tests"
sys.path[:0] = [str(HERE), str(TESTS)]

from bench_add_field import build, fill  # noqa: E402
from servers import PostgresServer, ZEOServer  # noqa: E402

KINDS = ("zeo", "relstorage-hp", "relstorage-hf")

CHILD = r"""
import io, json, sys, time
sys.path.insert(0, {here!r})
uri, what = sys.argv[1], sys.argv[2]

def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

class RoundTrips:
    # counts the ZEO client's calls that wait for the server's answer
    def __init__(self, storage):
        self.count = 0
        call = getattr(storage, "_call", None)
        if call is not None:
            def counted(*args, **kw):
                self.count += 1
                return call(*args, **kw)
            storage._call = counted

def raw_rewrite():
    import zodbpickle.pickle as zp
    from ZODB.Connection import TransactionMetaData
    from dsustore.storage.uri import open_storage
    class Ref:
        __slots__ = ("pid",)
        def __init__(self, pid): self.pid = pid
    storage, _ = open_storage(uri)
    trips = RoundTrips(storage)
    clock = time.perf_counter
    scan = transform = store = 0.0
    count = 0
    txn = TransactionMetaData()
    start = clock()
    storage.tpc_begin(txn)
    cursor = None
    while True:
        t0 = clock()
        oid, tid, data, cursor = storage.record_iternext(cursor)
        t1 = clock()
        u = zp.Unpickler(io.BytesIO(data))
        u.persistent_load = Ref
        meta = u.load(); state = u.load()
        if isinstance(state, dict) and "number" in state:
            state["flag"] = True
            f = io.BytesIO()
            p = zp.Pickler(f, 3)
            p.persistent_id = lambda o: o.pid if type(o) is Ref else None
            p.dump(meta); p.dump(state)
            t2 = clock()
            storage.store(oid, tid, f.getvalue(), "", txn)
            store += clock() - t2
            transform += t2 - t1
            count += 1
        else:
            transform += clock() - t1
        scan += t1 - t0
        if cursor is None:
            break
    t0 = clock()
    storage.tpc_vote(txn)
    storage.tpc_finish(txn)
    commit = clock() - t0
    elapsed = clock() - start
    storage.close()
    return count, elapsed, {{"scan": scan, "transform": transform, "store": store,
                            "commit": commit, "round_trips": trips.count}}

def dsustore_add_field():
    from dsustore import Patch, open_db
    db = open_db(uri)
    trips = RoundTrips(db.storage)
    marks = {{}}
    start = time.perf_counter()
    with Patch(db) as patch:
        patch.add_field("benchitems.Item", "flag", True)
        patch.before_commit(lambda p, r: marks.setdefault("pass", time.perf_counter()))
    elapsed = time.perf_counter() - start
    db.close()
    return patch.report.objects_migrated, elapsed, {{
        "pass": marks["pass"] - start, "commit": start + elapsed - marks["pass"],
        "round_trips": trips.count}}

count, elapsed, parts = globals()[what]()
print(json.dumps({{"count": count, "seconds": elapsed, "rss_mib": rss_mib(), "parts": parts}}))
"""


class CopiedZEOServer(ZEOServer):
    """A ZEO server whose FileStorage starts as a copy of a built one."""

    def __init__(self, source: Path, **kw) -> None:
        super().__init__(**kw)
        self.source = source

    def _write_conf(self) -> None:
        if not self.data_path.exists():
            shutil.copy(self.source, self.data_path)
        super()._write_conf()


def child(uri: str, what: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(here=str(HERE)), uri, what],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_filestorage(built: Path) -> dict:
    """dsustore on a copy of the built FileStorage: the reference for the ratios."""
    copy = built.with_name("filestorage.fs")
    shutil.copy(built, copy)
    try:
        return child(str(copy), "dsustore_add_field")
    finally:
        for suffix in ("", ".index", ".lock", ".tmp"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


def bench_zeo(built: Path, folder: Path) -> dict[str, dict]:
    results = {}
    for what in ("raw_rewrite", "dsustore_add_field"):
        if what == "dsustore_add_field":  # the reference, measured right before
            results["filestorage"] = bench_filestorage(built)
        server = CopiedZEOServer(built, base_dir=folder)
        try:
            server.start()
            results[what] = child(server.uri, what)
        finally:
            server.stop()
    return results


def bench_relstorage(n: int, pg: PostgresServer, keep_history: bool,
                     built_fs: Path) -> dict[str, dict]:
    import ZODB

    from dsustore import open_db

    mode = "hp" if keep_history else "hf"
    built = f"built_{mode}"
    pg.create_database(built)

    def uri(name: str) -> str:
        return (f"postgresql://{pg.superuser}@{pg.host}:{pg.port}/{name}"
                f"?keep_history={'true' if keep_history else 'false'}")

    db = open_db(uri(built))
    fill(db, n)
    db.close()
    assert isinstance(db, ZODB.DB)
    results = {}
    for what in ("raw_rewrite", "dsustore_add_field"):
        if what == "dsustore_add_field":  # the reference, measured right before
            results["filestorage"] = bench_filestorage(built_fs)
        copy = f"{what}_{mode}"
        pg.query(f'CREATE DATABASE "{copy}" TEMPLATE "{built}"')
        results[what] = child(uri(copy), what)
    return results


def rate(result: dict) -> float:
    return result["count"] / result["seconds"]


def report(kind: str, results: dict[str, dict]) -> None:
    print(f"  {kind}")
    for what, r in results.items():
        parts = ", ".join(f"{k} {v:.2f}s" if isinstance(v, float) else f"{k} {v:,}"
                          for k, v in r.get("parts", {}).items()
                          if not (k == "round_trips" and not v))
        print(f"    {what:20s} {r['count']:>9,} objects {r['seconds']:7.2f}s {rate(r):>9,.0f} obj/s "
              f"peak RSS {r['rss_mib']:6.1f} MiB" + (f"  [{parts}]" if parts else ""))
    raw, dsu, fs = results["raw_rewrite"], results["dsustore_add_field"], results["filestorage"]
    print(f"    migrate ratio dsustore / raw-rewrite = {rate(dsu) / rate(raw):.2f}   "
          f"memory ratio = {dsu['rss_mib'] / raw['rss_mib']:.2f}   "
          f"throughput ratio {kind.split()[0]} / filestorage = {rate(dsu) / rate(fs):.2f}")


def run(n: int, kinds: list[str]) -> None:
    print(f"\nN = {n:,} objects (filestorage: dsustore on a local copy of the same data,"
          " measured right before dsustore on the storage)")
    summary: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="dsustore-bench-") as tmp:
        folder = Path(tmp)
        built = folder / "built.fs"
        build(built, n)
        if "zeo" in kinds:
            summary["zeo"] = bench_zeo(built, folder)
            report("zeo (ZEO server over FileStorage, loopback)", summary["zeo"])
        rel = [k for k in kinds if k.startswith("relstorage")]
        if rel:
            with PostgresServer() as pg:
                for kind in rel:
                    keep = kind == "relstorage-hp"
                    label = "history-preserving" if keep else "history-free"
                    summary[kind] = bench_relstorage(n, pg, keep, built)
                    report(f"{kind} (RelStorage {label}, PostgreSQL on loopback)", summary[kind])
    print("\n  dsustore's Patch.add_field on each storage, against FileStorage's:")
    for kind, results in summary.items():
        dsu, raw, fs = results["dsustore_add_field"], results["raw_rewrite"], results["filestorage"]
        print(f"    {kind:15s} throughput {rate(dsu) / rate(fs):.2f} x filestorage   "
              f"peak RSS {dsu['rss_mib'] / raw['rss_mib']:.2f} x its raw rewrite, "
              f"{dsu['rss_mib'] / fs['rss_mib']:.2f} x filestorage's")


if __name__ == "__main__":
    args = sys.argv[1:]
    sizes = [int(a.replace("_", "")) for a in args if a.replace("_", "").isdigit()] or [100_000]
    chosen = [a for a in args if a in KINDS] or list(KINDS)
    started = time.perf_counter()
    for size in sizes:
        run(size, chosen)
    print(f"\n(total {time.perf_counter() - started:.0f}s)")
