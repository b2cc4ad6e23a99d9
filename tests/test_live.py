"""Live update inside a running process: the commit gate, code pinning and switching, the stale-code guard."""

from __future__ import annotations

import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import transaction
from BTrees.OOBTree import OOBTree
from ZODB.POSException import ConflictError

import dsustore
from dsustore import CommitGate, GateTimeoutError, LiveUpdater, StaleCodeError, guard_stale_code

V1 = '''
from persistent import Persistent

class Account(Persistent):
    def __init__(self, name, password):
        self.name = name
        self.password = password

def login(account, password):
    return account.password == password

def new_account(name, password):
    return Account(name, password)

VERSION = 1
'''

V2 = '''
from persistent import Persistent

class Account(Persistent):
    username: str
    password: str

    def __init__(self, username, password):
        self.username = username
        self.password = password

def login(account, password):
    return account.password == password and bool(account.username)

def new_account(name, password):
    return Account(name, password)

VERSION = 2
'''

MIGRATION_0002 = '''
"""rename name to username"""
import livehooks

revision = "0002"
down_revision = "0001"


def upgrade(patch):
    def rename(old, new, old_ns, new_ns):
        livehooks.during()
        new.username = old.name
        del new.name
    patch.migrate_instances("liveshop.Account", rename)
    patch.add_validation(livehooks.validation)
'''

HOOKS = '''
def during():
    pass

def validation(old_ns, new_ns):
    return True
'''


@pytest.fixture
def app_code(tmp_path: Path):
    """Two versions of a small application module ``liveshop`` and a migrations folder."""
    for version, source in (("v1", V1), ("v2", V2)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "liveshop.py").write_text(source)
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "livehooks.py").write_text(HOOKS)
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "0001_initial.py").write_text(textwrap.dedent('''
        """initial"""
        revision = "0001"
        down_revision = None


        def upgrade(patch):
            pass
        '''))
    (migrations / "0002_username.py").write_text(MIGRATION_0002)
    saved_path = list(sys.path)
    sys.path.insert(0, str(tmp_path / "hooks"))

    class Code:
        folder = tmp_path
        migrations_dir = migrations

        def activate(self, version: str):
            sys.path[:] = [p for p in sys.path if not p.startswith(str(tmp_path / "v"))]
            sys.path.insert(0, str(tmp_path / version))
            sys.modules.pop("liveshop", None)
            import liveshop
            return liveshop

    code = Code()
    yield code
    sys.path[:] = saved_path
    for name in ("liveshop", "livehooks"):
        sys.modules.pop(name, None)


@pytest.fixture
def live_db(db, app_code):
    """A database created by version 1 with 50 accounts, at migration 0001."""
    v1 = app_code.activate("v1")
    dsustore.upgrade(db, app_code.migrations_dir, "0001", snapshot=False)
    with db.transaction() as conn:
        accounts = conn.root()["accounts"] = OOBTree()
        for i in range(50):
            accounts[f"user{i}"] = v1.Account(f"user{i}", f"pw{i}")
    return db


class App:
    """A minimal application: one connection and one gated transaction per request."""

    def __init__(self, db, module, gate: CommitGate) -> None:
        self.db = db
        self.code = module
        self.gate = gate
        self.errors: list[BaseException] = []
        self.served = 0

    def request(self, write: str | None = None) -> bool:
        for _attempt in range(3):
            tm = transaction.TransactionManager()
            with self.gate.transaction():
                conn = self.db.open(transaction_manager=tm)
                try:
                    tm.begin()
                    accounts = conn.root()["accounts"]
                    ok = self.code.login(accounts["user1"], "pw1")
                    if write:
                        accounts[write] = self.code.new_account(write, "pw")
                    tm.commit()
                    self.served += 1
                    return ok
                except ConflictError:
                    tm.abort()
                    continue
                finally:
                    tm.abort()
                    conn.close()
        raise AssertionError("request kept conflicting")


def _updater(db, app_code, app: App, **kw) -> LiveUpdater:
    def switch():
        app.code = sys.modules["liveshop"]

    return LiveUpdater(db, app_code.migrations_dir, load_code=lambda: app_code.activate("v2"),
                       gate=app.gate, on_switch=switch, **kw)


def test_live_update_switches_code_and_data_while_requests_are_served(live_db, app_code):
    """Requests run the old code on the old state during the migration, the new code after it."""
    import livehooks

    app = App(live_db, sys.modules["liveshop"], CommitGate())
    old_class = app.code.Account
    seen_during: list[tuple[int, type, bool]] = []

    def during():
        if not seen_during:
            # a request, from another thread, in the middle of the migration: old code,
            # old class, old state, and a write
            def request():
                seen_during.append((app.code.VERSION, _account_class(live_db), app.request(write="late")))
            worker = threading.Thread(target=request)
            worker.start()
            worker.join()

    livehooks.during = during
    busy = live_db.open(transaction_manager=transaction.TransactionManager())  # stays open
    cached = busy.root()["accounts"]["user2"]
    assert cached.name == "user2"
    busy.transaction_manager.abort()

    result = _updater(live_db, app_code, app).upgrade()

    assert seen_during == [(1, old_class, True)]
    assert result.switched and result.upgrade.revisions == ["0002"]
    assert app.code.VERSION == 2 and app.request() is True
    new_class = sys.modules["liveshop"].Account
    busy.transaction_manager.begin()
    assert busy.root()["accounts"]["user2"] is cached  # the same object, swapped in place
    assert cached.username == "user2" and "name" not in cached.__dict__  # reloaded on access...
    assert type(cached) is new_class  # ...and swapped to the new class as it reloaded
    late = busy.root()["accounts"]["late"]  # written by the old code during the migration
    assert type(late) is new_class and late.username == "late"
    busy.transaction_manager.abort()
    busy.close()


def _account_class(db) -> type:
    conn = db.open(transaction_manager=transaction.TransactionManager())
    try:
        return type(conn.root()["accounts"]["user3"])
    finally:
        conn.transaction_manager.abort()
        conn.close()


def test_failed_live_update_keeps_the_old_code_and_data(live_db, app_code, unchanged):
    """A failing validation rolls back; the process goes on with the old modules and state."""
    import livehooks

    app = App(live_db, sys.modules["liveshop"], CommitGate())
    old_module = sys.modules["liveshop"]
    livehooks.validation = lambda old_ns, new_ns: False
    accounts_before = _names(live_db)
    with pytest.raises(dsustore.ValidationError) as failed:
        _updater(live_db, app_code, app).upgrade()
    assert failed.value.migration == "0002"
    assert sys.modules["liveshop"] is old_module and app.code is old_module
    assert _names(live_db) == accounts_before
    assert dsustore.current(live_db) == ("0001",)
    assert app.request(write="after") is True
    assert type(_account(live_db, "after")) is old_module.Account


def _names(db) -> dict[str, dict]:
    conn = db.open(transaction_manager=transaction.TransactionManager())
    try:
        out = {}
        for key, account in conn.root()["accounts"].items():
            account._p_activate()
            out[key] = dict(account.__dict__)
        return out
    finally:
        conn.transaction_manager.abort()
        conn.close()


def _account(db, key):
    conn = db.open(transaction_manager=transaction.TransactionManager())
    try:
        return conn.root()["accounts"][key]
    finally:
        conn.transaction_manager.abort()
        conn.close()


def test_code_that_does_not_load_leaves_the_process_as_it_was(live_db, app_code):
    """An import error in the new code is a LiveUpdateError; nothing was migrated."""
    (app_code.folder / "v2" / "liveshop.py").write_text("raise ImportError('broken release')\n")
    app = App(live_db, sys.modules["liveshop"], CommitGate())
    old = sys.modules["liveshop"]
    with pytest.raises(dsustore.LiveUpdateError, match="broken release"):
        _updater(live_db, app_code, app).upgrade()
    assert sys.modules["liveshop"] is old
    assert dsustore.current(live_db) == ("0001",)


def test_stale_code_guard_refuses_writes_but_not_reads(live_db, app_code):
    """A process that knows only 0001 cannot write once 0002 is applied; it still reads."""
    guard = guard_stale_code(live_db, {"0001"})
    app = App(live_db, sys.modules["liveshop"], CommitGate())
    assert app.request(write="before") is True
    app_code.activate("v2")
    dsustore.upgrade(live_db, app_code.migrations_dir, snapshot=False)
    assert app.request() is True  # a read-only request still works on the old code
    with pytest.raises(StaleCodeError) as refused:
        app.request(write="stale")
    assert refused.value.unknown == ("0002",) and "0002" in str(refused.value)
    assert guard.refused == 1
    guard.allow({"0001", "0002"})
    app.code = sys.modules["liveshop"]
    assert app.request(write="fresh") is True


def test_a_write_begun_before_an_upgrade_conflicts_instead_of_landing_after_it(live_db, app_code):
    """The guard reads the bookkeeping as current: a commit that straddles the upgrade conflicts."""
    guard_stale_code(live_db, {"0001", "0002"})
    tm = transaction.TransactionManager()
    conn = live_db.open(transaction_manager=tm)
    tm.begin()
    conn.root()["note"] = "written by a transaction that began before the upgrade"
    app_code.activate("v2")
    dsustore.upgrade(live_db, app_code.migrations_dir, snapshot=False)
    with pytest.raises(ConflictError):
        tm.commit()  # touches nothing the upgrade wrote, but read the bookkeeping as current
    tm.abort()
    conn.close()
    with live_db.transaction() as check:
        assert "note" not in check.root()


def test_gate_holds_new_transactions_and_waits_for_those_in_flight():
    """Closing waits for the running transaction; a transaction arriving meanwhile waits for the reopen."""
    gate = CommitGate()
    events: list[str] = []
    inside = threading.Event()

    def running():
        with gate.transaction():
            inside.set()
            time.sleep(0.2)
            events.append("in-flight done")

    def arriving():
        with gate.transaction():
            events.append("late transaction")

    first = threading.Thread(target=running)
    first.start()
    inside.wait()
    with gate.closed():
        events.append("gate closed")
        late = threading.Thread(target=arriving)
        late.start()
        time.sleep(0.1)
        events.append("commit")
    late.join()
    first.join()
    assert events == ["in-flight done", "gate closed", "commit", "late transaction"]
    assert gate.longest_wait >= 0.05


def test_gate_times_out_when_a_transaction_does_not_end():
    """An update does not wait forever: GateTimeoutError, and the gate opens again."""
    gate = CommitGate(drain_timeout=0.2)
    release = threading.Event()

    def stuck():
        with gate.transaction():
            release.wait()

    worker = threading.Thread(target=stuck)
    worker.start()
    time.sleep(0.05)
    with pytest.raises(GateTimeoutError):
        with gate.closed():
            pass
    assert not gate.is_closed
    release.set()
    worker.join()


def test_the_closer_own_transaction_does_not_block_it():
    """An update started from inside a gated transaction (an admin request) can still close the gate."""
    gate = CommitGate(drain_timeout=1)
    with gate.transaction():
        with gate.closed():
            with gate.transaction():  # the updater's own nested work is let through
                pass


def test_reads_are_never_held_and_finish_on_the_snapshot_and_code_they_began_with(live_db, app_code):
    """While the update holds writes at its commit, a read begun before it goes on, loading
    from its own snapshot with the old code, and a read begun during it is not held either."""
    import livehooks

    app = App(live_db, sys.modules["liveshop"], CommitGate())
    old_class = app.code.Account
    began, switched, finished = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def straddling_read():
        with app.gate.transaction():
            tm = transaction.TransactionManager(explicit=True)
            tm.begin()
            conn = live_db.open(transaction_manager=tm)
            accounts = conn.root()["accounts"]
            assert accounts["user1"].name == "user1"
            began.set()
            switched.wait(30)
            later = accounts["user7"]  # a ghost loaded after the commit, from its snapshot
            seen["straddling"] = (type(later), later.name, sys.modules["liveshop"].VERSION)
            tm.abort()
            conn.close()
        finished.set()

    def fresh_read():
        with app.gate.transaction():
            tm = transaction.TransactionManager(explicit=True)
            tm.begin()
            conn = live_db.open(transaction_manager=tm)
            seen["fresh"] = (conn.root()["accounts"]["user7"].username, sys.modules["liveshop"].VERSION)
            tm.abort()
            conn.close()

    def during():
        if not began.is_set():
            threading.Thread(target=straddling_read).start()
            began.wait(10)

    def switch():  # inside the held window: writes wait, reads must not
        app.code = sys.modules["liveshop"]
        switched.set()
        assert finished.wait(10), "the read begun before the update was held"
        reader = threading.Thread(target=fresh_read)
        reader.start()
        reader.join(10)
        assert "fresh" in seen, "a read begun during the commit was held"

    livehooks.during = during
    LiveUpdater(live_db, app_code.migrations_dir, load_code=lambda: app_code.activate("v2"),
                gate=app.gate, on_switch=switch).upgrade()
    assert seen["straddling"] == (old_class, "user7", 1)
    assert seen["fresh"] == ("user7", 2)
    assert sys.modules["liveshop"].Account is not old_class
    assert type(sys.modules["liveshop"]) is type(sys)  # the new module itself, once no old read runs


def test_a_write_during_the_commit_waits_and_lands_on_the_new_code(live_db, app_code):
    """A write arriving while the update commits waits for it, then runs on the new code."""
    app = App(live_db, sys.modules["liveshop"], CommitGate())
    done = threading.Event()

    def write():
        app.request(write="arrived")
        done.set()

    def switch():
        app.code = sys.modules["liveshop"]
        threading.Thread(target=write).start()
        assert not done.wait(0.3), "a write landed while the update held writes"

    LiveUpdater(live_db, app_code.migrations_dir, load_code=lambda: app_code.activate("v2"),
                gate=app.gate, on_switch=switch).upgrade()
    assert done.wait(10)
    account = _account(live_db, "arrived")
    assert type(account) is sys.modules["liveshop"].Account and account.username == "arrived"


def test_the_pass_sleeps_between_batches_to_keep_to_its_share(monkeypatch):
    """With pass_share 0.25, a batch that worked 1 s is followed by 3 s given to the
    application's threads; with 1, by none."""
    from dsustore.live import updater

    clock = iter([10.0, 10.0, 11.0, 14.0, 20.0, 20.0, 21.0, 21.0])
    slept: list[float] = []
    monkeypatch.setattr(updater.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(updater.time, "sleep", slept.append)
    seen = []
    pacer = updater._Pacer(0.25, seen.append)
    pacer("first batch")
    pacer("second batch")
    assert slept == [pytest.approx(3.0)] and seen == ["first batch", "second batch"]
    unpaced = updater._Pacer(1.0, None)
    unpaced("a")
    unpaced("b")
    assert len(slept) == 1


@pytest.mark.parametrize("share", [0, -1, 1.5])
def test_a_pass_share_outside_zero_to_one_is_refused(live_db, app_code, share):
    with pytest.raises(ValueError, match="pass_share"):
        LiveUpdater(live_db, app_code.migrations_dir, load_code=lambda: None, pass_share=share)


def test_a_transaction_that_takes_its_snapshot_after_the_commit_runs_the_new_code(live_db, app_code):
    """Entering the gate before the switch but beginning after the commit, a request sees
    migrated data: it runs the new code, not the code of the moment it entered."""
    import livehooks

    app = App(live_db, sys.modules["liveshop"], CommitGate())
    entered, committed = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def late_beginner():
        with app.gate.transaction():
            entered.set()
            committed.wait(30)
            tm = transaction.TransactionManager(explicit=True)
            tm.begin()
            conn = live_db.open(transaction_manager=tm)
            account = conn.root()["accounts"]["user3"]
            code = sys.modules["liveshop"]
            seen["late"] = (code.VERSION, type(account) is code.Account, account.username)
            tm.abort()
            conn.close()

    worker = threading.Thread(target=late_beginner)

    def during():
        if not entered.is_set():
            worker.start()
            entered.wait(10)

    livehooks.during = during
    LiveUpdater(live_db, app_code.migrations_dir, load_code=lambda: app_code.activate("v2"),
                gate=app.gate, on_switch=committed.set).upgrade()
    worker.join(30)
    assert seen["late"] == (2, True, "user3")
