"""Atomicity: a patch commits every change or none, whatever fails and whenever the process dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import ZODB
from shopmodels import Product, User
from ZODB.FileStorage import FileStorage

import dsustore
from dsustore import Patch

from conftest import storage_image


def test_failing_policy_leaves_the_database_unchanged(shop_db, unchanged):
    """A policy raising on one object rolls back everything, and the error names op, class, oid, cause."""
    before = unchanged(shop_db)

    def explode(old, new, old_ns, new_ns):
        if old.name == "user3":
            raise KeyError("no such thing")
        new.name = old.name.upper()

    with pytest.raises(dsustore.PolicyError) as failed:
        with Patch(shop_db) as patch:
            patch.add_field(User, "email", "x@example.org")
            patch.migrate_instances(User, explode)
    error = failed.value
    assert error.operation.startswith("migrate_instances(shopmodels.User")
    assert error.class_name == "shopmodels.User"
    assert error.oid is not None and error.oid.startswith("0x")
    assert isinstance(error.__cause__, KeyError)
    assert "no such thing" in str(error)
    before.check()


def test_failing_validation_leaves_the_database_unchanged(shop_db, unchanged):
    """A failing application validation aborts the update and reports the objects it flagged."""
    before = unchanged(shop_db)

    class EveryUserHasEmail(dsustore.Validation):
        """every user has an email"""

        def execute(self, old_ns, new_ns):
            for user in new_ns.root["users"].values():
                if not getattr(user, "email", None):
                    self.flag(user)
            return not self.flagged

    with pytest.raises(dsustore.ValidationError) as failed:
        with Patch(shop_db) as patch:
            patch.add_field(User, "email", None)
            patch.add_validation(EveryUserHasEmail())
    failure = failed.value.failures[0]
    assert failure.name == "EveryUserHasEmail"
    assert len(failure.oids) == 5
    assert "every user has an email" in str(failed.value)
    before.check()


def test_exception_in_the_with_block_rolls_back(shop_db, unchanged):
    """User code raising inside the patch block discards the recorded operations."""
    before = unchanged(shop_db)
    with pytest.raises(RuntimeError):
        with Patch(shop_db) as patch:
            patch.add_field(User, "email", "x")
            raise RuntimeError("changed my mind")
    before.check()


def test_dry_run_runs_everything_and_writes_nothing(shop_db, unchanged):
    """A dry run migrates and validates, reports per class, then aborts."""
    before = unchanged(shop_db)
    with Patch(shop_db, dry_run=True) as patch:
        patch.add_field(User, "email", "x")
    assert patch.report.committed is False
    assert patch.report.migrated == {"shopmodels.Admin": 1, "shopmodels.User": 4}
    before.check()


def test_rollback_discards_the_patch(shop_db, unchanged):
    """rollback() after recording operations changes nothing and ends the patch."""
    before = unchanged(shop_db)
    patch = Patch(shop_db).begin()
    patch.add_field(Product, "currency", "EUR")
    patch.rollback()
    before.check()
    with pytest.raises(dsustore.PatchStateError):
        patch.commit()


CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    import ZODB
    from ZODB.FileStorage import FileStorage
    from dsustore import Patch, policies

    point = sys.argv[1]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if point.startswith("staged-"):  # a commit staged before writes are held
        import dsustore.engine.patch, dsustore.storage.filestorage, dsustore.storage.savepoints
        point = point[len("staged-"):]
        dsustore.storage.savepoints.FULL_INVALIDATION_AT = 1
        stage_commit = dsustore.engine.patch.stage_commit

        def staging(conn, upto):
            assert stage_commit(conn, upto)
            if point == "after-staging":
                die()
            return True

        dsustore.engine.patch.stage_commit = staging
        pwrite_all = dsustore.storage.filestorage._pwrite_all

        def writing_in_place(*args):
            pwrite_all(*args)
            if point == "mid-copy":
                die()

        dsustore.storage.filestorage._pwrite_all = writing_in_place

    class DyingStorage(FileStorage):
        def tpc_vote(self, transaction):
            result = super().tpc_vote(transaction)
            if point == "after-vote":
                die()
            return result

        def tpc_finish(self, transaction, f=None):
            if point == "before-finish":
                die()
            return super().tpc_finish(transaction, f)

    db = ZODB.DB(DyingStorage({path!r}))
    seen = []

    def policy(old, new, old_ns, new_ns):
        seen.append(1)
        if point == "mid-pass" and len(seen) == 150:
            die()
        if point == "external":
            if len(seen) == 1:
                open({ready!r}, "w").close()
            time.sleep(0.002)
        new.score = len(old.name)

    def validation(old_ns, new_ns):
        if point == "validation":
            die()
        return True

    with Patch(db, batch_size=50) as patch:
        patch.add_field("shopmodels.User", "email", policies.compute(lambda old: old.name + "@x"))
        patch.migrate_instances("shopmodels.User", policy)
        patch.add_validation(validation)
    db.close()
    """
)


def _populated_file(tmp_path: Path, users: int = 300) -> Path:
    from BTrees.OOBTree import OOBTree

    path = tmp_path / "Data.fs"
    db = ZODB.DB(FileStorage(str(path)))
    with db.transaction() as conn:
        conn.root()["users"] = OOBTree({f"user{i}": User(f"user{i}") for i in range(users)})
    db.close()
    return path


def _image(path: Path):
    """Last transaction, every record and the file's bytes, after the recovery any open does.

    A process killed between FileStorage's vote and finish leaves a transaction
    flagged as unfinished at the end of the file; the next writable open truncates
    it away (FileStorage reports the dead transaction id as the last one during
    that first open only, so the image is taken from a second open).
    """
    FileStorage(str(path)).close()
    db = ZODB.DB(FileStorage(str(path), read_only=True))
    try:
        return db.lastTransaction(), storage_image(db), path.read_bytes()
    finally:
        db.close()


def _run_child(tmp_path: Path, path: Path, point: str) -> subprocess.Popen:
    script = CHILD.format(tests=str(Path(__file__).parent), path=str(path),
                          ready=str(tmp_path / "ready"))
    return subprocess.Popen([sys.executable, "-c", script, point],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("point", ["mid-pass", "validation", "after-vote", "before-finish",
                                   "staged-after-staging", "staged-mid-copy", "staged-after-vote",
                                   "staged-before-finish"])
def test_sigkill_at_any_point_leaves_the_file_storage_unchanged(tmp_path, point):
    """A process killed with SIGKILL during the update leaves the FileStorage exactly as before."""
    path = _populated_file(tmp_path)
    before = _image(path)
    child = _run_child(tmp_path, path, point)
    _out, err = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert _image(path) == before


def test_sigkill_from_outside_never_leaves_a_partial_update(tmp_path):
    """Killed from outside at several moments, the database is always all old or all new."""
    path = _populated_file(tmp_path)
    before = _image(path)
    for delay in (0.0, 0.05, 0.15):
        (tmp_path / "ready").unlink(missing_ok=True)
        child = _run_child(tmp_path, path, "external")
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists() and child.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        assert child.returncode == -signal.SIGKILL
        assert _image(path) == before
    child = _run_child(tmp_path, path, "none")
    _out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err.decode()
    db = ZODB.DB(FileStorage(str(path), read_only=True))
    conn = db.open()
    assert all(u.email == u.name + "@x" and u.score == len(u.name)
               for u in conn.root()["users"].values())
    db.close()
