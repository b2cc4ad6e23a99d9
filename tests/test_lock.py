"""The migration lock: who holds it, taking over from the dead, heartbeats, breaking it,
and restores that never bring a lease back -- on every storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ZODB
from ZODB.FileStorage import FileStorage

from dsustore import LockHeldError, LockLostError, migration_lock, restore, upgrade
from dsustore.engine.bookkeeping import bookkeeping
from dsustore.runtime.history import applied_revisions
from dsustore.runtime.lock import MigrationLock, break_lock, lock_status
from dsustore.storage.transactions import mark

TESTS = Path(__file__).parent


def _migration(folder: Path, revision: str = "0001", down: str | None = None,
               body: str = 'patch.add_field("shopmodels.User", "email", "e")') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{revision}_step.py"
    path.write_text(f'"""step {revision}"""\n\nrevision = {revision!r}\ndown_revision = {down!r}\n\n\n'
                    f"def upgrade(patch):\n    {body}\n")
    return path


def _hold_elsewhere(db, *, expires_in: float) -> dict:
    """Write a lease as a process on another machine would (nothing here can check its pid)."""
    holder = {"owner": "elsewhere:4242:abc", "host": "elsewhere", "pid": 4242,
              "process_space": "another-machine", "pid_start": 1, "command": "dsustore upgrade",
              "acquired": time.time(), "expires": time.time() + expires_in}
    with db.transaction() as conn:
        bookkeeping(conn.root(), create=True).lease.holder = holder
        mark(conn.transaction_manager.get(), "dsustore lock taken", lock=holder["owner"])
    return holder


def test_status_names_the_holder_its_machine_pid_and_lease(shop_db):
    """lock_status shows who holds the lock, where, and how long the lease still runs."""
    assert lock_status(shop_db) is None
    with migration_lock(shop_db, ttl=60) as lock:
        status = lock_status(shop_db)
        assert status["owner"] == lock.owner
        assert status["pid"] == os.getpid() and status["host"]
        assert 50 < status["expires_in"] <= 60
        assert status["alive"] is True  # this very process
    assert lock_status(shop_db) is None


def test_a_holder_on_another_machine_blocks_until_its_lease_expires(shop_db, tmp_path):
    """A lease nobody here can check holds until it expires; a run waiting for it then goes on."""
    folder = tmp_path / "migrations"
    _migration(folder)
    holder = _hold_elsewhere(shop_db, expires_in=1.5)
    with pytest.raises(LockHeldError) as refused:
        upgrade(shop_db, folder)
    assert refused.value.holder["host"] == "elsewhere"
    assert "pid 4242 on host elsewhere" in str(refused.value)
    assert "--lock-wait" in str(refused.value) and "dsustore unlock" in str(refused.value)
    assert lock_status(shop_db)["alive"] is None  # cannot be told from here
    assert applied_revisions(shop_db) == set()
    result = upgrade(shop_db, folder, lock_wait=30)
    assert result.revisions == ["0001"]
    assert time.time() >= holder["expires"]
    assert lock_status(shop_db) is None


def test_the_heartbeat_keeps_a_long_holder_s_lease_alive(shop_db):
    """While held, the lease is renewed every third of its time to live, so nobody takes it."""
    with migration_lock(shop_db, ttl=0.9) as lock:
        first = lock_status(shop_db)["expires"]
        time.sleep(2.0)  # more than twice the time to live
        now = lock_status(shop_db)
        assert now["owner"] == lock.owner and now["expires"] > first
        with pytest.raises(LockHeldError):
            MigrationLock(shop_db, ttl=0.9).acquire()
        lock.keep_alive()  # nothing was lost


def test_a_holder_whose_lock_was_broken_learns_it_at_its_next_step(shop_db):
    """Broken by hand and taken by another, the lock is lost: the holder's next step fails."""
    first = MigrationLock(shop_db, ttl=0.6).acquire()
    try:
        assert break_lock(shop_db)["owner"] == first.owner
        second = MigrationLock(shop_db, ttl=60, heartbeat=False).acquire()
        deadline = time.monotonic() + 10
        while first.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(LockLostError) as lost:
            first.keep_alive()
        assert f"pid {os.getpid()}" in str(lost.value)
        assert lock_status(shop_db)["owner"] == second.owner
        second.release()
    finally:
        first.release()
    assert lock_status(shop_db) is None


def test_breaking_a_free_lock_changes_nothing(shop_db, unchanged):
    """unlock on a database nobody holds says so and writes nothing."""
    before = unchanged(shop_db)
    assert break_lock(shop_db) is None
    before.check()


def test_restoring_the_snapshot_an_upgrade_took_brings_back_no_lock(shop_db, tmp_path):
    """The snapshot is taken while the lock is held; restoring it leaves the lock free, and
    the next upgrade runs at once."""
    folder = tmp_path / "migrations"
    _migration(folder)
    result = upgrade(shop_db, folder)
    assert result.snapshot is not None
    restore(shop_db, result.snapshot.name)
    assert lock_status(shop_db) is None
    assert applied_revisions(shop_db) == set()
    assert upgrade(shop_db, folder).revisions == ["0001"]


def test_restoring_while_another_process_holds_the_lock_keeps_its_lease(shop_db, tmp_path):
    """A restore rolls data back, never the lease: the holder keeps the lock it has now."""
    folder = tmp_path / "migrations"
    _migration(folder)
    result = upgrade(shop_db, folder)
    holder = _hold_elsewhere(shop_db, expires_in=600)
    restore(shop_db, result.snapshot.name)
    assert lock_status(shop_db)["owner"] == holder["owner"]


HOLD_AND_WAIT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import ZODB
    from ZODB.FileStorage import FileStorage
    from dsustore.runtime.lock import MigrationLock

    path, ready = sys.argv[1], Path(sys.argv[2])
    db = ZODB.DB(FileStorage(path))
    MigrationLock(db, ttl=600).acquire()
    ready.write_text("locked")
    time.sleep(600)
""")


def test_a_killed_holder_of_a_file_storage_is_taken_over_at_once(tmp_path):
    """On one machine, the lease of a migrator killed with SIGKILL does not block the next one
    for its lease: its process is gone, so the lock is taken over at once."""
    import shopmodels

    path = tmp_path / "Data.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        shopmodels.populate(conn.root())
    db.close()
    ready = tmp_path / "locked"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS),
                                                                    os.environ.get("PYTHONPATH")])))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(path), str(ready)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ready.exists(), holder.communicate()[1].decode()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    db = ZODB.DB(FileStorage(str(path)))
    try:
        stale = lock_status(db)
        assert stale["pid"] == holder.pid and stale["alive"] is False and stale["expires_in"] > 500
        folder = tmp_path / "migrations"
        _migration(folder)
        assert upgrade(db, folder).revisions == ["0001"]
        assert lock_status(db) is None
    finally:
        db.close()
