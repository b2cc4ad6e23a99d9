"""The no-op start-up check, right after the migrations and after many later transactions.

    python benchmarks/bench_startup.py [100000]

An application calls ``dsustore.ensure_current`` when it starts; when nothing is
pending that check must cost the same whatever the database's history. This builds
a FileStorage, applies three migrations, then measures the check in a fresh process
(as at start-up) -- once right after the migrations, once after N more application
transactions -- for each way of calling it:

  verify     ensure_current(mode="verify")
  upgrade    ensure_current(mode="upgrade")
  minimum    ensure_current(mode="minimum", minimum=<the first revision>)
  run        dsustore.upgrade(db, migrations)
  records    the applied records with each migration's tid (``applied_records``:
             what ``status``-like tools show; not a start-up step, but it must not
             walk the log either)

and prints the milliseconds of the first call and the median of the next ones, and
the bytes the process read from files meanwhile. The ratios later/first are the
target: about 1 (no walk over the transaction log).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPEAT = 20

SCRIPTS = {
    "0001_numbers.py": '''
        """Items get a flag."""
        revision = "0001"
        down_revision = None

        def upgrade(patch):
            patch.add_field("benchitems.Item", "flag", True)
        ''',
    "0002_labels.py": '''
        """Items get a label."""
        revision = "0002"
        down_revision = "0001"

        def upgrade(patch):
            patch.add_field("benchitems.Item", "label", "")
        ''',
    "0003_drop_tags.py": '''
        """Items lose their tags."""
        revision = "0003"
        down_revision = "0002"

        def upgrade(patch):
            patch.remove_field("benchitems.Item", "tags")
        ''',
}

CHILD = r"""
import json, statistics, sys, time
sys.path.insert(0, {here!r})
import ZODB
from ZODB.FileStorage import FileStorage
import dsustore
from dsustore.runtime.history import applied_records
path, migrations = sys.argv[1], sys.argv[2]

def read_bytes():
    for line in open("/proc/self/io"):
        if line.startswith("rchar:"):
            return int(line.split()[1])

db = ZODB.DB(FileStorage(path))
checks = {{
    "verify": lambda: dsustore.ensure_current(db, migrations, mode="verify"),
    "upgrade": lambda: dsustore.ensure_current(db, migrations, mode="upgrade"),
    "minimum": lambda: dsustore.ensure_current(db, migrations, mode="minimum", minimum="0001"),
    "run": lambda: dsustore.upgrade(db, migrations),
    "records": lambda: applied_records(db),
}}
out = {{}}
for name, check in checks.items():
    before = read_bytes()
    start = time.perf_counter()
    result = check()
    first = time.perf_counter() - start
    read = read_bytes() - before
    assert not getattr(result, "migrations", None), result
    if name == "records":
        assert all(r["tid_after"] for r in result.values()), result
    times = []
    for _ in range({repeat}):
        start = time.perf_counter()
        check()
        times.append(time.perf_counter() - start)
    out[name] = {{"first_ms": first * 1000, "median_ms": statistics.median(times) * 1000,
                 "read_mib": read / 2**20}}
db.close()
print(json.dumps(out))
"""


def build(folder: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(HERE))
    import ZODB
    from benchitems import Item
    from ZODB.FileStorage import FileStorage

    import dsustore

    migrations = folder / "migrations"
    migrations.mkdir()
    for name, text in SCRIPTS.items():
        (migrations / name).write_text(textwrap.dedent(text).lstrip())
    path = folder / "Data.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        conn.root()["items"] = [Item(i) for i in range(100)]
    dsustore.upgrade(db, migrations, snapshot=False)
    db.close()
    return path, migrations


def add_transactions(path: Path, count: int) -> None:
    """``count`` small application transactions, each changing one counter."""
    import transaction
    import ZODB
    from BTrees.Length import Length
    from ZODB.FileStorage import FileStorage

    db = ZODB.DB(FileStorage(str(path)))
    conn = db.open()
    root = conn.root()
    root["hits"] = hits = Length()
    transaction.commit()
    for _ in range(count):
        hits.change(1)
        transaction.commit()
    conn.close()
    db.close()


def measure(path: Path, migrations: Path) -> dict:
    child = CHILD.format(here=str(HERE), repeat=REPEAT)
    out = subprocess.run([sys.executable, "-c", child, str(path), str(migrations)],
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the check failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(later: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, migrations = build(Path(tmp))
        fresh = measure(path, migrations)
        add_transactions(path, later)
        size = path.stat().st_size / 2**20
        aged = measure(path, migrations)
    print(f"\nno-op start-up check, FileStorage: 3 migrations applied, then {later:,} "
          f"transactions ({size:.0f} MiB)")
    print(f"  {'check':10s} {'first ms':>10s} {'median ms':>10s} {'read MiB':>9s}"
          f" | {'first ms':>10s} {'median ms':>10s} {'read MiB':>9s} | ratio (median)")
    for name, a in fresh.items():
        b = aged[name]
        print(f"  {name:10s} {a['first_ms']:10.2f} {a['median_ms']:10.2f} {a['read_mib']:9.2f}"
              f" | {b['first_ms']:10.2f} {b['median_ms']:10.2f} {b['read_mib']:9.2f}"
              f" | {b['median_ms'] / a['median_ms']:.2f}")
    print("  (left: right after the migrations; right: after the later transactions;"
          " target: ratio about 1)")


if __name__ == "__main__":
    main(int(sys.argv[1].replace("_", "")) if len(sys.argv) > 1 else 100_000)
