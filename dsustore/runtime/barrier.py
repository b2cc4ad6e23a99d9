"""The write barrier: other processes' writes wait while a migration commits.

A migration catches up, in rounds while the application runs, with what other
processes commit during its pass. Whatever they commit after the last round and
before the migration's commit would stay in the old shape. So for that moment --
the final catch-up and the commit, typically well under a second -- the runner
sets the database's barrier, in a small transaction of its own:

* every guarded writer (:func:`dsustore.guard_stale_code`) reads the barrier as
  current in each transaction it commits, so one that began before the barrier was
  set conflicts, and is retried;
* a guarded writer that sees the barrier set waits for it to open, then retries on
  the new state, where the guard refuses old code and the new code writes the new
  shape.

The migration's final catch-up then sees every write committed before the barrier,
and nothing lands between it and the commit. Readers never wait. A barrier whose
migrator is gone (its lock lease expired or was broken, or its process died on this
machine) holds nobody.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ZODB.POSException import ConflictError

from ..engine.bookkeeping import Barrier, bookkeeping
from ..storage.connections import private_connection, reading
from ..storage.transactions import mark
from .lock import MigrationLock, holder_is_dead

log = logging.getLogger(__name__)


@contextmanager
def writes_held(db: Any, lock: MigrationLock) -> Iterator[None]:
    """Hold the guarded writes of every process for the block (see the module)."""
    _write(db, lock.owner, {"owner": lock.owner, "host": socket.gethostname(),
                            "pid": os.getpid(), "since": time.time()})
    try:
        yield
    finally:
        try:
            _write(db, lock.owner, None)
        except Exception as err:  # the writers then go on when the lock's lease ends
            log.warning("could not open the write barrier of %s: %s", lock.owner, err)


def _write(db: Any, owner: str, holder: dict[str, Any] | None) -> None:
    for attempt in range(5):
        with private_connection(db) as (conn, tm):
            bk = bookkeeping(conn.root(), create=True)
            if bk.barrier is None:
                bk.barrier = Barrier()
            current = bk.barrier.holder
            if holder is None and (current is None or current.get("owner") != owner):
                return  # not ours to open
            bk.barrier.holder = holder
            mark(tm.get(), "dsustore writes held" if holder else "dsustore writes resumed",
                 barrier=owner)
            try:
                tm.commit()
                return
            except ConflictError:
                if attempt == 4:
                    raise


def barrier_state(db: Any) -> tuple[str, dict[str, Any] | None]:
    """The barrier as the database has it now: ``("open", None)``, ``("held", holder)``, or
    ``("abandoned", holder)`` when its migrator is gone -- its lock lease names someone
    else, has expired, or belongs to a process of this machine that no longer runs."""
    with reading(db) as root:
        bk = bookkeeping(root)
        holder = dict(bk.barrier.holder) if bk is not None and bk.barrier is not None \
            and bk.barrier.holder else None
        lease = dict(bk.lease.holder) if holder and bk is not None and bk.lease is not None \
            and bk.lease.holder else None
    if holder is None:
        return "open", None
    if lease is None or lease.get("owner") != holder.get("owner") \
            or float(lease.get("expires", 0)) < time.time() or holder_is_dead(lease):
        return "abandoned", holder
    return "held", holder


__all__ = ["barrier_state", "writes_held"]
