"""A lease lock in the database, so that one process at a time runs migrations.

The lease is ``bookkeeping.lock = {"owner": "host:pid:uuid", "expires": epoch}``,
written in a small transaction of its own. ZODB makes taking it race-safe: when two
processes write it at once, one commit raises ConflictError, and that process
re-reads and finds the lease held. A lease past its ``expires`` (its holder was
killed) may be taken over. Migration transactions also write the bookkeeping
object, so a holder whose lease was taken over cannot commit a migration.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ZODB.POSException import ConflictError

from ..engine.bookkeeping import bookkeeping
from ..errors import LockHeldError, LockLostError
from ..storage.connections import private_connection
from ..storage.transactions import mark

log = logging.getLogger(__name__)

#: seconds between two looks at a lease held by another process
POLL_INTERVAL = 0.1


def new_owner() -> str:
    """A lock owner id unique to this call: ``host:pid:uuid``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


class MigrationLock:
    """A lease on the migration lock of ``db``; see :func:`migration_lock`."""

    def __init__(self, db: Any, *, ttl: float = 300, owner: str | None = None) -> None:
        self.db = db
        self.ttl = ttl
        self.owner = owner or new_owner()
        self.held = False
        self.expires = 0.0

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lease if it is free or expired; return the other holder's lease if not."""
        while True:
            try:
                return self._write(take=True)
            except ConflictError:
                log.debug("migration lock: concurrent write, looking again")

    def acquire(self, wait: float = 0) -> MigrationLock:
        """Take the lease, waiting up to ``wait`` seconds for its holder to release it."""
        deadline = time.monotonic() + wait
        while True:
            holder = self.try_acquire()
            if holder is None:
                log.info("migration lock taken by %s", self.owner)
                return self
            if time.monotonic() >= deadline:
                left = max(0.0, holder.get("expires", 0) - time.time())
                raise LockHeldError(
                    f"the migration lock is held by {holder.get('owner')}"
                    f" (lease expires in {left:.0f}s)",
                    holder=holder,
                )
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def renew(self) -> None:
        """Extend the lease by ``ttl``; raises :class:`LockLostError` if it was taken over."""
        try:
            holder = self._write(take=False)
        except ConflictError as err:
            raise LockLostError(f"the migration lock of {self.owner} changed under it") from err
        if holder is not None:
            self.held = False
            raise LockLostError(
                f"the migration lock of {self.owner} expired and was taken by {holder.get('owner')}"
            )

    def keep_alive(self) -> None:
        """Renew the lease if less than half of ``ttl`` is left (saves a write per step)."""
        if time.time() > self.expires - self.ttl / 2:
            self.renew()

    def release(self) -> None:
        """Give the lease back (only if this owner still holds it)."""
        if not self.held:
            return
        for _ in range(5):
            try:
                self._clear()
                break
            except ConflictError:
                continue
        else:
            log.warning("migration lock of %s could not be released; it expires on its own", self.owner)
        self.held = False

    def verify(self, root: Any) -> None:
        """Inside a migration transaction: check this owner still holds the lease."""
        bk = bookkeeping(root)
        lease = bk.lock if bk is not None else None
        if not lease or lease.get("owner") != self.owner:
            raise LockLostError(
                f"the migration lock of {self.owner} is now held by"
                f" {lease.get('owner') if lease else 'nobody'}"
            )

    # -- internals -------------------------------------------------------------

    def _write(self, *, take: bool) -> dict[str, Any] | None:
        """Write our lease unless another live one is there (then return it)."""
        with private_connection(self.db) as (conn, tm):
            bk = bookkeeping(conn.root(), create=True)
            lease = bk.lock
            now = time.time()
            mine = lease is not None and lease.get("owner") == self.owner
            if lease and not mine:
                if not take or lease.get("expires", 0) > now:
                    return dict(lease)
                log.warning("migration lock of %s expired; taking it over", lease.get("owner"))
            elif not mine and not take:
                return {"owner": None}
            bk.lock = {"owner": self.owner, "expires": now + self.ttl}
            self.expires = now + self.ttl
            mark(tm.get(), "dsustore lock taken", lock=self.owner)
            tm.commit()
            self.held = True
            return None

    def _clear(self) -> None:
        with private_connection(self.db) as (conn, tm):
            bk = bookkeeping(conn.root())
            if bk is not None and bk.lock and bk.lock.get("owner") == self.owner:
                bk.lock = None
                mark(tm.get(), "dsustore lock released", unlock=self.owner)
                tm.commit()


@contextmanager
def migration_lock(db: Any, *, ttl: float = 300, wait: float = 0) -> Iterator[MigrationLock]:
    """Hold the database's migration lock for the block; released at the end.

    Raises :class:`LockHeldError` naming the holder when the lock cannot be had
    within ``wait`` seconds. Call ``renew()`` on the yielded lock between steps
    that may outlast ``ttl``.
    """
    lock = MigrationLock(db, ttl=ttl).acquire(wait)
    try:
        yield lock
    finally:
        lock.release()


__all__ = ["MigrationLock", "migration_lock", "new_owner"]
