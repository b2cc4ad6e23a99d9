"""No write escapes a migration: a writer at full speed, in another process (ZEO,
RelStorage) or another thread (FileStorage), through ten upgrades that each add a
field to the class it creates -- every object it committed is there, with every field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import ZODB
from BTrees.IOBTree import IOBTree
from ZODB.FileStorage import FileStorage

from dsustore import upgrade

TESTS = Path(__file__).parent
UPGRADES = 10

WRITER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from dsustore import open_db
    from barrier_writer import write_until

    uri, folder, stop, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    db = open_db(uri)
    try:
        out.write_text(json.dumps(write_until(db, folder, stop.exists)))
    finally:
        db.close()
""")


def _migrations(folder: Path) -> None:
    folder.mkdir()
    for number in range(1, UPGRADES + 1):
        revision = f"{number:04d}"
        down = f"{number - 1:04d}" if number > 1 else None
        (folder / f"{revision}_f{number}.py").write_text(
            f'"""every item has f{number}"""\n\nrevision = {revision!r}\ndown_revision = {down!r}\n\n\n'
            f'def upgrade(patch):\n    patch.add_field("barrieritems.Item", "f{number}", {number})\n')


def _upgrade_while_writing(db: Any, folder: Path, written: threading.Event) -> None:
    """The ten upgrades, each after the writer has written some objects on the code before it."""
    for number in range(1, UPGRADES + 1):
        written.clear()
        written.wait(30)
        upgrade(db, folder, f"{number:04d}", snapshot=False)


def _check(db: Any, report: dict[str, Any]) -> None:
    committed = set(report["committed"])
    assert len(committed) > 100, report  # it did write through the upgrades
    with db.transaction() as conn:
        items = conn.root()["items"]
        stored = set(items.keys())
        unmigrated = [number for number, item in items.items()
                      if any(getattr(item, f"f{i}", None) != i for i in range(1, UPGRADES + 1))]
    assert committed - stored == set()  # nothing lost
    assert unmigrated == []  # nothing old-shaped left under the new code
    assert report["stale"] >= 1  # the writer did meet newer migrations and moved on


def _populated(db: Any) -> None:
    with db.transaction() as conn:
        conn.root()["items"] = IOBTree()


@pytest.mark.parametrize("storage_kind", ["zeo", "relstorage-hp", "relstorage-hf"])
def test_no_write_of_another_process_escapes_ten_upgrades(backend, tmp_path):
    """A guarded writer process at full speed: 0 objects lost, 0 left unmigrated."""
    db = backend.open()
    _populated(db)
    folder = tmp_path / "migrations"
    _migrations(folder)
    stop, out = tmp_path / "stop", tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS),
                                                                    os.environ.get("PYTHONPATH")])))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, backend.uri, str(folder), str(stop),
                               str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    written = threading.Event()
    try:
        watcher = threading.Thread(target=_signal_progress, args=(db, written, writer), daemon=True)
        watcher.start()
        _upgrade_while_writing(db, folder, written)
    finally:
        stop.write_text("stop")
        _out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err.decode()
    _check(db, json.loads(out.read_text()))


def _signal_progress(db: Any, written: threading.Event, writer: subprocess.Popen) -> None:
    """Set ``written`` each time the writer's objects have grown by a hundred."""
    seen = 0
    while writer.poll() is None:
        with db.transaction() as conn:
            count = len(conn.root()["items"])
        if count >= seen + 100:
            seen = count
            written.set()
        time.sleep(0.02)


def test_no_write_of_another_thread_escapes_ten_upgrades_on_a_file_storage(tmp_path):
    """A guarded writer thread of the same process sharing the FileStorage: nothing escapes."""
    import barrier_writer

    db = ZODB.DB(FileStorage(str(tmp_path / "Data.fs")))
    try:
        _populated(db)
        folder = tmp_path / "migrations"
        _migrations(folder)
        stop = threading.Event()
        report: dict[str, Any] = {}
        writer = threading.Thread(
            target=lambda: report.update(barrier_writer.write_until(db, folder, stop.is_set)))
        writer.start()
        written = threading.Event()
        watcher = threading.Thread(target=_signal_progress_thread,
                                   args=(db, written, writer), daemon=True)
        watcher.start()
        try:
            _upgrade_while_writing(db, folder, written)
        finally:
            stop.set()
            writer.join(120)
        _check(db, report)
    finally:
        db.close()


def _signal_progress_thread(db: Any, written: threading.Event, writer: threading.Thread) -> None:
    seen = 0
    while writer.is_alive():
        with db.transaction() as conn:
            count = len(conn.root()["items"])
        if count >= seen + 100:
            seen = count
            written.set()
        time.sleep(0.02)


def _guarded_write(db: Any, number: int) -> float:
    """Commit one new item through a guarded connection, retrying conflicts; when it committed."""
    import transaction
    from ZODB.POSException import ConflictError

    import barrieritems

    tm = transaction.TransactionManager(explicit=True)
    conn = db.open(transaction_manager=tm)
    try:
        for _attempt in range(5):
            tm.begin()
            conn.root()["items"][number] = barrieritems.Item(number)
            try:
                tm.commit()
                return time.monotonic()
            except ConflictError:
                tm.abort()
        raise AssertionError("the write never committed")
    finally:
        conn.close()


def test_a_write_at_a_held_barrier_waits_for_the_commit_then_goes_on(db):
    """A guarded write that finds the barrier held waits until it opens, then commits."""
    from dsustore import guard_stale_code
    from dsustore.runtime.barrier import writes_held
    from dsustore.runtime.lock import migration_lock

    _populated(db)
    guard = guard_stale_code(db, set())
    try:
        with migration_lock(db) as lock:
            with writes_held(db, lock):
                opened_at: list[float] = []
                writer = threading.Thread(target=lambda: opened_at.append(_guarded_write(db, 1)))
                writer.start()
                time.sleep(0.5)
                assert writer.is_alive()  # held at the barrier
                released = time.monotonic()
            writer.join(30)
        assert opened_at and opened_at[0] >= released
        assert guard.held >= 1
    finally:
        guard.uninstall()


def test_a_barrier_whose_migrator_is_gone_holds_nobody(db):
    """A barrier left set by a migrator whose lock lease is gone does not stop writes."""
    from dsustore import guard_stale_code
    from dsustore.engine.bookkeeping import bookkeeping
    from dsustore.storage.transactions import mark

    _populated(db)
    with db.transaction() as conn:
        bookkeeping(conn.root(), create=True).barrier.holder = {
            "owner": "gone:1:x", "host": "gone", "pid": 1, "since": 0.0}
        mark(conn.transaction_manager.get(), "dsustore writes held", barrier="gone:1:x")
    guard = guard_stale_code(db, set())
    try:
        started = time.monotonic()
        _guarded_write(db, 1)
        assert time.monotonic() - started < guard.barrier_wait
    finally:
        guard.uninstall()
    with db.transaction() as conn:
        assert 1 in conn.root()["items"]
