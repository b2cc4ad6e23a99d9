"""Real client processes sharing one database: behind a ZEO server, and on RelStorage.

Two migrators at once apply a migration exactly once; an application process
writing during a migration loses no update, and sees the new state afterwards; a
client whose code is older than the database refuses to write until it has the
new code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import shopmodels
from backends import SHARED_KINDS
from dsustore import mop
from dsustore.engine.bookkeeping import bookkeeping
from dsustore.errors import LockHeldError
from dsustore.runtime.history import applied_revisions
from dsustore.runtime.lock import lock_status
from dsustore.runtime.runner import upgrade

TESTS = Path(__file__).parent

pytestmark = pytest.mark.parametrize("storage_kind", SHARED_KINDS)

MIGRATION = '''\
"""slow migration that counts how often it was applied"""

import time

revision = "0001"
down_revision = None


def upgrade(patch):
    def slow(old, new, old_ns, new_ns):
        time.sleep(0.3)
        new.active = True

    def count(patch, report):
        root = patch.new_ns.root
        root["applied_count"] = root.get("applied_count", 0) + 1

    patch.migrate_instances("shopmodels.Product", slow)
    patch.before_commit(count)
'''

UPGRADER = '''
import json, sys, time
from pathlib import Path
from dsustore import open_db
from dsustore.runtime.runner import upgrade

uri, folder, go, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
db = open_db(uri)
try:
    Path(str(out) + ".ready").write_text("ready")
    while not go.exists():
        time.sleep(0.01)
    result = upgrade(db, folder, lock_wait=60)
    out.write_text(json.dumps({"revisions": result.revisions}))
finally:
    db.close()
'''

LOCK_HOLDER = '''
import sys, time
from pathlib import Path
from dsustore import open_db
from dsustore.runtime.lock import MigrationLock

uri, ready = sys.argv[1], Path(sys.argv[2])
db = open_db(uri)
MigrationLock(db, ttl=600).acquire()
ready.write_text("locked")
time.sleep(600)
'''


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    return env


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def shop(backend):
    """The shared database, holding a small shop; its URI is what child processes open."""
    db = backend.open()
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    return backend


def test_two_processes_upgrading_at_once_apply_the_migration_once(shop, tmp_path):
    """Exactly one process applies the migration; the other waits for the lock, then finds it done."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_slow.py").write_text(MIGRATION)
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", UPGRADER, shop.uri, str(folder), str(go), str(out)],
                         env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for out in outs
    ]
    try:
        wait_for(lambda: all(Path(str(o) + ".ready").exists() for o in outs), 60, "both upgraders")
        go.write_text("go")
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    results = sorted(json.loads(o.read_text())["revisions"] for o in outs)
    assert results == [[], ["0001"]]
    db = shop.open()
    with db.transaction() as conn:
        root = conn.root()
        assert root["applied_count"] == 1
        assert all(p.active for p in root["products"].values())
    assert lock_status(db) is None
    assert applied_revisions(db) == {"0001"}


def test_a_lock_left_by_a_killed_process_of_this_machine_is_taken_over_at_once(shop, tmp_path):
    """A process of this machine killed while holding the lock does not block the next run:
    its pid is gone, so the lease is taken over without waiting for it to expire."""
    ready = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, shop.uri, str(ready)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: ready.exists() or holder.poll() is not None, 60, "the lock holder")
        assert holder.poll() is None, holder.communicate()[1].decode()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_add.py").write_text(textwrap.dedent('''\
        """add email"""
        revision = "0001"
        down_revision = None


        def upgrade(patch):
            patch.add_field("shopmodels.User", "email", "e")
        '''))
    db = shop.open()
    stale = lock_status(db)
    assert stale["pid"] == holder.pid and stale["alive"] is False
    assert stale["expires_in"] > 100  # the lease itself would still run for minutes
    result = upgrade(db, folder)
    assert result.revisions == ["0001"]
    assert lock_status(db) is None


WAITING_MIGRATION = '''\
"""activate products while the application writes to them"""

import os
import time
from pathlib import Path

revision = "0001"
down_revision = None
SIGNALS = Path(os.environ["DSUSTORE_TEST_SIGNALS"])


def upgrade(patch):
    def activate(old, new, old_ns, new_ns):
        (SIGNALS / "in-pass").write_text("in the pass")
        deadline = time.monotonic() + 60
        while not (SIGNALS / "app-done").exists():  # the first attempt waits for the writes
            if time.monotonic() > deadline:
                raise RuntimeError("the application never wrote")
            time.sleep(0.01)
        new.active = True

    patch.migrate_instances("shopmodels.Product", activate)
'''

MIGRATOR = '''
import json, sys
from pathlib import Path
from dsustore import open_db
from dsustore.runtime.runner import upgrade

uri, folder, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
db = open_db(uri)
try:
    result = upgrade(db, folder, on_conflict="retry")
    out.write_text(json.dumps({"revisions": result.revisions,
                               "attempts": result.migrations[0].report.attempts,
                               "caught_up": result.migrations[0].report.caught_up}))
finally:
    db.close()
'''

#: for the child scripts: wait until the test writes a signal file into ``signals``
WAIT_FOR_SIGNAL = '''
def wait_for(name):
    deadline = time.monotonic() + 60
    while not (signals / name).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no {name} signal")
        time.sleep(0.01)
'''

APPLICATION = '''
import json, sys, time
from pathlib import Path
import transaction
from dsustore import open_db

uri, signals, writes = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

''' + WAIT_FOR_SIGNAL + '''
db = open_db(uri)
tm = transaction.TransactionManager()
conn = db.open(transaction_manager=tm)
try:
    for product in conn.root()["products"].values():
        product._p_activate()  # held in this client's cache, in the old state
    tm.abort()
    wait_for("in-pass")
    for _ in range(writes):
        for attempt in tm.attempts(5):
            with attempt:
                for product in conn.root()["products"].values():
                    product.views = getattr(product, "views", 0) + 1
    (signals / "app-done").write_text("done")
    wait_for("check")
    tm.begin()
    seen = {key: [getattr(p, "active", None), getattr(p, "views", 0)]
            for key, p in conn.root()["products"].items()}
    tm.abort()
    (signals / "app.json").write_text(json.dumps(seen))
finally:
    conn.close()
    db.close()
'''


def test_an_application_writing_during_a_migration_loses_nothing_and_sees_the_result(shop, tmp_path):
    """The application's writes after the migration began are migrated from their latest state
    before the commit (no conflict, no rerun); afterwards the application, holding the old
    objects in its cache, sees the new state."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_activate.py").write_text(WAITING_MIGRATION)
    signals = tmp_path / "signals"
    signals.mkdir()
    env = dict(child_env(), DSUSTORE_TEST_SIGNALS=str(signals))
    out = tmp_path / "migrator.json"
    writes = 3
    app = subprocess.Popen([sys.executable, "-c", APPLICATION, shop.uri, str(signals), str(writes)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    migrator = subprocess.Popen([sys.executable, "-c", MIGRATOR, shop.uri, str(folder), str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _, err = migrator.communicate(timeout=120)
        assert migrator.returncode == 0, err.decode()
        (signals / "check").write_text("check")
        _, err = app.communicate(timeout=120)
        assert app.returncode == 0, err.decode()
    finally:
        for proc in (app, migrator):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = json.loads(out.read_text())
    assert result == {"revisions": ["0001"], "attempts": 1, "caught_up": 3}  # the three products
    seen_by_app = json.loads((signals / "app.json").read_text())
    assert seen_by_app == {key: [True, writes] for key in ("p0", "p1", "p2")}
    db = shop.open()
    with db.transaction() as conn:
        assert {key: (p.active, p.views) for key, p in conn.root()["products"].items()} == \
            {key: (True, writes) for key in ("p0", "p1", "p2")}


EMAIL_MIGRATION = '''\
"""users get an email address"""
revision = "0001"
down_revision = None


def upgrade(patch):
    patch.add_field("shopmodels.User", "email", "")
'''

STOCK_MIGRATION = '''\
"""products count their stock"""
revision = "0002"
down_revision = "0001"


def upgrade(patch):
    patch.add_field("shopmodels.Product", "stock", 0)
'''

STALE_CLIENT = '''
import json, sys, time
from pathlib import Path
import transaction
from ZODB.POSException import ConflictError
from shopmodels import Product
from dsustore import StaleCodeError, guard_stale_code, open_db

uri, signals = sys.argv[1], Path(sys.argv[2])

''' + WAIT_FOR_SIGNAL + '''
def outcome(tm):
    try:
        tm.commit()
        return {"result": "committed"}
    except StaleCodeError as err:
        tm.abort()
        return {"result": "StaleCodeError", "unknown": list(err.unknown)}
    except ConflictError as err:
        tm.abort()
        return {"result": "ConflictError", "oid": err.oid.hex() if err.oid else None}

def add(tm, conn, key, **fields):
    tm.begin()
    product = Product(key, 1.0)
    product.__dict__.update(fields)
    conn.root()["products"][key] = product

db = open_db(uri)
guard = guard_stale_code(db, {"0001"})  # the code of this process knows only 0001
tm = transaction.TransactionManager(explicit=True)
conn = db.open(transaction_manager=tm)
seen = {}
try:
    add(tm, conn, "before")
    seen["before"] = outcome(tm)
    add(tm, conn, "straddling")  # begun before the upgrade, committed after it
    (signals / "began").write_text("began")
    wait_for("upgraded")
    seen["straddling"] = outcome(tm)
    add(tm, conn, "straddling")  # the retry, on the upgraded database
    seen["retried"] = outcome(tm)
    tm.begin()
    conn.root()["products"]["p0"].title = "written by the old code"
    seen["changed"] = outcome(tm)
    tm.begin()
    seen["read"] = {key: [p.title, getattr(p, "stock", None)]
                    for key, p in conn.root()["products"].items()}
    tm.abort()
    guard.allow({"0001", "0002"})  # the process has loaded the new code
    add(tm, conn, "after", stock=5)
    seen["after"] = outcome(tm)
    seen["refused"] = guard.refused
    (signals / "client.json").write_text(json.dumps(seen))
finally:
    conn.close()
    db.close()
'''


def _upgrade_in_a_process(uri: str, folder: Path, out: Path) -> dict:
    """Run MIGRATOR in a process of its own; what it reports."""
    done = subprocess.run([sys.executable, "-c", MIGRATOR, uri, str(folder), str(out)],
                          env=child_env(), capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(out.read_text())


def test_a_client_on_older_code_refuses_to_write_until_it_has_the_new_code(shop, tmp_path):
    """A running client that knows only 0001 wrote before another process applied 0002;
    afterwards its writes are refused (StaleCodeError naming 0002, or a conflict on the
    bookkeeping for a write begun before the upgrade) while its reads work, nothing
    old-shaped is stored, no committed write is lost, and once it has the new code it
    writes again."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_email.py").write_text(EMAIL_MIGRATION)
    db = shop.open()
    assert upgrade(db, folder, snapshot=False).revisions == ["0001"]
    signals = tmp_path / "signals"
    signals.mkdir()
    client = subprocess.Popen([sys.executable, "-c", STALE_CLIENT, shop.uri, str(signals)],
                              env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: (signals / "began").exists() or client.poll() is not None, 60,
                 "the stale client")
        assert client.poll() is None, client.communicate()[1].decode()
        (folder / "0002_stock.py").write_text(STOCK_MIGRATION)
        upgraded = _upgrade_in_a_process(shop.uri, folder, tmp_path / "migrator.json")
        assert upgraded["revisions"] == ["0002"]
        (signals / "upgraded").write_text("upgraded")
        _, err = client.communicate(timeout=120)
        assert client.returncode == 0, err.decode()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    seen = json.loads((signals / "client.json").read_text())
    with db.transaction() as conn:
        bookkeeping_oid = bookkeeping(conn.root())._p_oid.hex()
    refused = {"result": "StaleCodeError", "unknown": ["0002"]}
    assert seen["before"] == {"result": "committed"}
    assert seen["straddling"] == {"result": "ConflictError", "oid": bookkeeping_oid}
    assert seen["retried"] == refused and seen["changed"] == refused
    assert seen["read"] == {"p0": ["product 0", 0], "p1": ["product 1", 0],
                            "p2": ["product 2", 0], "before": ["before", 0]}
    assert seen["after"] == {"result": "committed"} and seen["refused"] == 2
    with db.transaction() as conn:
        products = conn.root()["products"]
        assert {key: (p.title, p.stock) for key, p in products.items()} == {
            "p0": ("product 0", 0), "p1": ("product 1", 0), "p2": ("product 2", 0),
            "before": ("before", 0), "after": ("after", 5)}
        stored = list(mop.all_instances(conn, shopmodels.Product))
        assert len(stored) == 5 and all("stock" in p.__dict__ for p in stored)
    assert applied_revisions(db) == {"0001", "0002"}
