"""Two real processes upgrading one database (a FileStorage behind a ZEO server) at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ZEO

import shopmodels
from dsustore._bookkeeping import applied_revisions, bookkeeping
from dsustore._lock import LockHeldError
from dsustore._runner import upgrade

TESTS = Path(__file__).parent
HOST = "127.0.0.1"

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
import ZEO
from dsustore._runner import upgrade

port, folder, go, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
db = ZEO.DB(("127.0.0.1", port), server_sync=True)
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
import ZEO
from dsustore._lock import MigrationLock

port, ready = int(sys.argv[1]), Path(sys.argv[2])
db = ZEO.DB(("127.0.0.1", port), server_sync=True)
MigrationLock(db, ttl=4).acquire()
ready.write_text("locked")
time.sleep(600)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


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


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def zeo_port(tmp_path: Path) -> Iterator[int]:
    """A ZEO server over a FileStorage in tmp_path, holding a small shop."""
    port = free_port()
    log = open(tmp_path / "zeo.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "ZEO.runzeo", "-a", f"{HOST}:{port}", "-f", str(tmp_path / "Data.fs")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: accepts(port) or server.poll() is not None, 30, "the ZEO server")
        assert server.poll() is None, (tmp_path / "zeo.log").read_text()
        db = ZEO.DB((HOST, port), server_sync=True)
        try:
            with db.transaction() as conn:
                shopmodels.populate(conn.root())
        finally:
            db.close()
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def open_client(port: int):
    return ZEO.DB((HOST, port), server_sync=True)


def test_two_processes_upgrading_at_once_apply_the_migration_once(zeo_port, tmp_path):
    """Exactly one process applies the migration; the other waits for the lock, then finds it done."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_slow.py").write_text(MIGRATION)
    go = tmp_path / "go"
    outs = [tmp_path / f"out{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", UPGRADER, str(zeo_port), str(folder), str(go), str(out)],
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
    db = open_client(zeo_port)
    try:
        with db.transaction() as conn:
            root = conn.root()
            assert root["applied_count"] == 1
            assert all(p.active for p in root["products"].values())
            assert bookkeeping(root).lock is None
        assert applied_revisions(db) == {"0001"}
    finally:
        db.close()


def test_a_lock_left_by_a_killed_process_is_taken_over(zeo_port, tmp_path):
    """A process killed while holding the lock blocks others only until its lease expires."""
    ready = tmp_path / "locked"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(zeo_port), str(ready)],
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
    db = open_client(zeo_port)
    try:
        with db.transaction() as conn:
            stale = dict(bookkeeping(conn.root()).lock)
        assert f":{holder.pid}:" in stale["owner"]
        with pytest.raises(LockHeldError):
            upgrade(db, folder)
        result = upgrade(db, folder, lock_wait=30)
        assert result.revisions == ["0001"]
        with db.transaction() as conn:
            assert bookkeeping(conn.root()).lock is None
    finally:
        db.close()
