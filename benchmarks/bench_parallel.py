"""Would worker processes pay? The class-move pass with its per-record work in a process pool.

    python benchmarks/bench_parallel.py 1000000 [workers ...]

The rename benchmark's library (``bench_rename.build``) is moved from ``benchcatalog`` to
``benchpeople`` by the skeleton of dsustore's pass, built from its own pieces: the
FileStorage scan (``current_records``), the rename in bytes (``GlobalRenamer``), the
savepoint storage and the chunked commit (``TransactionAppender``). With 0 workers the
main process does everything; with N, batches of records go to N forked workers, which
rename them and send them back in order, and the main process scans, stores and
commits. It prints the time (and the pass's share), the main process's CPU seconds and
peak RSS, and each worker's peak RSS, all in one run on fresh copies.

Every stage runs in the main process except the per-record work, so the speed-up is
bounded by what that work weighs against scanning, storing and committing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from multiprocessing import get_context
from pathlib import Path

import ZODB
from ZODB.Connection import TransactionMetaData
from ZODB.FileStorage import FileStorage

from dsustore.storage import adapter_for
from dsustore.storage.filestorage import TransactionAppender
from dsustore.storage.pickles import GlobalRenamer
from dsustore.storage.savepoints import AppendingTmpStore

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_rename import build  # noqa: E402

RENAMES = {("benchcatalog", "Reader"): ("benchpeople", "Reader")}
NEEDLE = b"benchcatalog\nReader\n"
OLD, NEW = b"c" + NEEDLE, b"cbenchpeople\nReader\n"
BATCH = 2000
RENAMER = GlobalRenamer(RENAMES)


def work(batch: list[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bytes, bytes]]:
    """The records of a batch a rename changes, renamed (the per-record work)."""
    out = []
    for oid, tid, data in batch:
        if NEEDLE in data:
            found = RENAMER.rename(data)
            # the few records the renamer declines (a 0x93 byte somewhere) the pass would
            # decode; here a plain replacement stands in (this data holds no such string)
            out.append((oid, tid, found[0] if found is not None else data.replace(OLD, NEW)))
    return out


def batches(records):
    batch = []
    for record in records:
        batch.append(record)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def peak_rss(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run(path: str, workers: int) -> dict:
    fs = FileStorage(path)
    db = ZODB.DB(fs)
    at = fs.lastTransaction()
    tmp = AppendingTmpStore(fs)
    start, cpu = time.perf_counter(), time.process_time()
    records = adapter_for(db).current_records(at=at)
    worker_rss: list[float] = []
    if workers:
        with get_context("fork").Pool(workers) as pool:
            # at most two batches a worker in flight, taken back in order: memory bounded
            pending: deque = deque()
            for batch in batches(records):
                pending.append(pool.apply_async(work, (batch,)))
                if len(pending) >= 2 * workers:
                    for oid, tid, data in pending.popleft().get():
                        tmp.store(oid, tid, data, "", None)
            while pending:
                for oid, tid, data in pending.popleft().get():
                    tmp.store(oid, tid, data, "", None)
            worker_rss = [peak_rss(process.pid) for process in pool._pool]
    else:
        for batch in batches(records):
            for oid, tid, data in work(batch):
                tmp.store(oid, tid, data, "", None)
    pass_seconds = time.perf_counter() - start
    txn = TransactionMetaData()
    fs.tpc_begin(txn)
    appender = TransactionAppender(fs, at)
    for oid, serial, data in tmp.drain():
        appender.store(oid, serial, data, "", txn)
    appender.flush()
    fs.tpc_vote(txn)
    appender.finish()
    fs.tpc_finish(txn)
    result = {"seconds": time.perf_counter() - start, "pass": pass_seconds,
              "cpu": time.process_time() - cpu, "rss": peak_rss(), "workers_rss": worker_rss}
    db.close()
    return result


def main(n: int, counts: list[int]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "Data.fs"
        build(source, n)
        print(f"\nN = {n:,} objects, the class-move pass skeleton, one run")
        base = None
        for workers in counts:
            copy = Path(folder) / f"w{workers}.fs"
            shutil.copy(source, copy)
            # each in a fresh process, so that peak RSS is its own
            out = subprocess.run([sys.executable, __file__, "--one", str(copy), str(workers)],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"workers={workers} failed:\n{out.stderr}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            base = base or r["seconds"]
            print(f"  workers={workers}  {r['seconds']:7.2f}s (pass {r['pass']:6.2f}s)  "
                  f"speed-up {base / r['seconds']:.2f}x  main cpu {r['cpu']:6.2f}s  "
                  f"main RSS {r['rss']:6.1f} MiB  workers RSS "
                  f"{', '.join(f'{w:.0f}' for w in r['workers_rss']) or '-'} MiB")
            for suffix in ("", ".index", ".lock", ".tmp"):
                Path(str(copy) + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(run(sys.argv[2], int(sys.argv[3]))))
        raise SystemExit
    size = int(sys.argv[1].replace("_", "")) if len(sys.argv) > 1 else 1_000_000
    main(size, [int(w) for w in sys.argv[2:]] or [0, 1, 2])
