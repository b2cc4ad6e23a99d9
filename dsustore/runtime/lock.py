"""A lease lock in the database, so that one process at a time runs migrations.

The lease lives in its own object, ``root["dsustore"].lease``, written in small
transactions of its own. ZODB makes taking it race-safe: when two processes write it
at once, one commit raises ConflictError, and that process re-reads and finds the
lease held. While a process holds it, a heartbeat thread renews it every third of
its time to live (30 s by default), so a lease stops being renewed soon after its
holder dies:

* a holder on this machine whose process is gone is taken over at once;
* a holder elsewhere blocks until its lease expires (at most ``ttl`` seconds);
* ``break_lock`` (``dsustore unlock``) frees it by hand.

A migration checks, right before it commits, that its process still holds the
lease; and migration transactions write the bookkeeping object, so two processes
that both believe they hold the lock still cannot both record the same migration:
one commit conflicts. Snapshots never capture the lease and restores never bring one back.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ZODB.POSException import ConflictError

from ..engine.bookkeeping import Lease, bookkeeping
from ..errors import LockHeldError, LockLostError
from ..storage.connections import private_connection, reading
from ..storage.transactions import mark

log = logging.getLogger(__name__)

#: seconds a lease lasts without renewal; the heartbeat renews it three times as often
DEFAULT_TTL = 30.0
#: seconds between two looks at a lease held by another process
POLL_INTERVAL = 0.1


# -- who holds a lease ---------------------------------------------------------------


def _process_space() -> str | None:
    """What tells this machine's processes from another's with the same host name.

    Containers often share a host name, or run their application as pid 1: the
    boot id (per kernel) and the pid namespace (per container) make "same host, so
    the pid can be checked" safe. None where the system does not say (not Linux).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), so a reused pid is not
    taken for the holder; None where the system does not say."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def holder_is_dead(holder: dict[str, Any]) -> bool:
    """Whether a lease's holder is a process of this machine that no longer runs.

    Only a holder on this machine can be checked; any other is presumed alive
    until its lease expires.
    """
    space = _process_space()
    pid = holder.get("pid")
    if space is None or holder.get("process_space") != space or not isinstance(pid, int):
        return False
    if not _alive(pid):
        return True
    started = holder.get("pid_start")
    return started is not None and _process_start(pid) != started


def describe_holder(holder: dict[str, Any], now: float | None = None) -> str:
    """``pid 123 on host vm (lease expires in 12s)``, for messages."""
    now = time.time() if now is None else now
    if holder.get("pid") is not None and holder.get("host"):
        who = f"pid {holder['pid']} on host {holder['host']}"
    else:  # a lease written by an older dsustore names its owner only
        who = str(holder.get("owner"))
    command = holder.get("command")
    if command:
        who += f" ({command})"
    left = float(holder.get("expires", 0)) - now
    lease = f"lease expires in {left:.0f}s" if left > 0 else f"lease expired {-left:.0f}s ago"
    return f"{who}, {lease}"


def _command() -> str:
    """What this process was started as, briefly: ``dsustore upgrade``, ``gunicorn``..."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    program = os.path.basename(sys.argv[0] or "python")
    if spec is not None and spec.name:  # python -m package
        program = f"python -m {spec.name.removesuffix('.__main__')}"
    return " ".join([program, *sys.argv[1:2]])


def new_owner() -> str:
    """A lock owner id unique to this call: ``host:pid:uuid``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


# -- the lock ------------------------------------------------------------------------


class MigrationLock:
    """A lease on the migration lock of ``db``, renewed by a heartbeat while held.

    See :func:`migration_lock`. ``heartbeat=False`` leaves renewing to the caller
    (:meth:`renew`, :meth:`keep_alive`).
    """

    def __init__(self, db: Any, *, ttl: float = DEFAULT_TTL, owner: str | None = None,
                 heartbeat: bool = True) -> None:
        self.db = db
        self.ttl = ttl
        self.owner = owner or new_owner()
        self.held = False
        self.expires = 0.0
        self.heartbeat = heartbeat
        #: why the heartbeat stopped renewing, once it has
        self.lost: LockLostError | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def try_acquire(self) -> dict[str, Any] | None:
        """Take the lease if it is free, expired or its holder here is dead; else return it."""
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
                self._start_heartbeat()
                return self
            if time.monotonic() >= deadline:
                raise LockHeldError(
                    f"the migration lock is held by {describe_holder(holder)}; wait for it "
                    "with --lock-wait SECONDS, or, if that process is gone, run "
                    "`dsustore unlock`",
                    holder=holder,
                )
            time.sleep(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

    def renew(self) -> None:
        """Extend the lease by ``ttl``; raises :class:`LockLostError` if it was taken over.

        A concurrent write of the lease (a takeover, or this lock's own heartbeat) is
        looked at again: only a lease that names another owner is lost.
        """
        for attempt in range(3):
            try:
                holder = self._write(take=False)
                break
            except ConflictError as err:
                if attempt == 2:
                    raise LockLostError(
                        f"the migration lock of {self.owner} kept changing under it") from err
        if holder is not None:
            self.held = False
            taker = describe_holder(holder) if holder.get("owner") else "nobody (it was broken)"
            raise LockLostError(
                f"the migration lock of {self.owner} was taken over; it is now held by {taker}")

    def keep_alive(self) -> None:
        """Between steps: raise if the lease was lost; renew it if half of ``ttl`` is gone
        (unless the heartbeat renews it)."""
        if self.lost is not None:
            raise self.lost
        if self._beat is not None and self._beat.is_alive():
            return
        if time.time() > self.expires - self.ttl / 2:
            self.renew()

    def release(self) -> None:
        """Stop the heartbeat and give the lease back (only if this owner still holds it)."""
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join()
        self._beat = None
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

    def verify(self) -> None:
        """Right before a migration commits: check this owner still holds the lease, as the
        database has it now (not as the migration's snapshot had it)."""
        if self.lost is not None:
            raise self.lost
        with reading(self.db) as root:
            bk = bookkeeping(root)
            holder = dict(bk.lease.holder) if bk is not None and bk.lease is not None \
                and bk.lease.holder else None
        if not holder or holder.get("owner") != self.owner:
            raise LockLostError(
                f"the migration lock of {self.owner} is now held by "
                f"{describe_holder(holder) if holder else 'nobody'}"
            )

    # -- internals -------------------------------------------------------------

    def _holder(self, now: float) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "process_space": _process_space(),
            "pid_start": _process_start(os.getpid()),
            "command": _command(),
            "acquired": now,
            "expires": now + self.ttl,
        }

    def _write(self, *, take: bool) -> dict[str, Any] | None:
        """Write our lease unless another live one is there (then return it)."""
        with private_connection(self.db) as (conn, tm):
            lease = _lease(conn.root())
            holder = lease.holder
            now = time.time()
            mine = holder is not None and holder.get("owner") == self.owner
            if holder and not mine:
                if not take:
                    return dict(holder)
                if holder_is_dead(holder):
                    log.warning("migration lock held by %s, which no longer runs; taking it over",
                                describe_holder(holder, now))
                elif holder.get("expires", 0) > now:
                    return dict(holder)
                else:
                    log.warning("migration lock of %s expired; taking it over",
                                describe_holder(holder, now))
            elif not mine and not take:
                return {"owner": None}
            new = self._holder(now)
            if mine and holder is not None:
                new["acquired"] = holder.get("acquired", now)
            lease.holder = new
            self.expires = new["expires"]
            mark(tm.get(), "dsustore lock taken" if not mine else "dsustore lock renewed",
                 lock=self.owner)
            tm.commit()
            self.held = True
            return None

    def _clear(self) -> None:
        with private_connection(self.db) as (conn, tm):
            bk = bookkeeping(conn.root())
            lease = bk.lease if bk is not None else None
            if lease is not None and lease.holder and lease.holder.get("owner") == self.owner:
                lease.holder = None
                mark(tm.get(), "dsustore lock released", unlock=self.owner)
                tm.commit()

    def _start_heartbeat(self) -> None:
        if not self.heartbeat:
            return
        self._stop.clear()
        self.lost = None
        self._beat = threading.Thread(target=self._beating, name=f"dsustore-lock-{self.owner}",
                                      daemon=True)
        self._beat.start()

    def _beating(self) -> None:
        """Renew every third of ``ttl`` until released; remember a loss for the holder."""
        while not self._stop.wait(self.ttl / 3):
            try:
                self.renew()
            except LockLostError as err:
                self.lost = err
                log.error("%s", err)
                return
            except Exception as err:  # the database went away: the lease runs out on its own
                log.warning("migration lock of %s not renewed: %s", self.owner, err)


def _lease(root: Any) -> Lease:
    """The lease object, made (in the caller's transaction) where there is none yet."""
    bk = bookkeeping(root, create=True)
    if bk.lease is None:
        bk.lease = Lease()
    return bk.lease


@contextmanager
def migration_lock(db: Any, *, ttl: float = DEFAULT_TTL, wait: float = 0) -> Iterator[MigrationLock]:
    """Hold the database's migration lock for the block, renewed by a heartbeat; released at
    the end.

    Raises :class:`LockHeldError` naming the holder when the lock cannot be had
    within ``wait`` seconds.
    """
    lock = MigrationLock(db, ttl=ttl).acquire(wait)
    try:
        yield lock
    finally:
        lock.release()


def lock_status(db: Any) -> dict[str, Any] | None:
    """Who holds the migration lock of ``db`` (None when nobody does), for ``status``.

    Besides the holder's own record: ``expires_in`` (seconds, negative once expired)
    and ``alive`` (False for a holder on this machine whose process is gone, None
    when it cannot be told from here).
    """
    with reading(db) as root:
        bk = bookkeeping(root)
        holder = dict(bk.lease.holder) if bk is not None and bk.lease is not None \
            and bk.lease.holder else None
    if holder is None:
        return None
    here = _process_space()
    checkable = here is not None and holder.get("process_space") == here
    holder["expires_in"] = round(float(holder.get("expires", 0)) - time.time(), 1)
    holder["alive"] = (not holder_is_dead(holder)) if checkable else None
    return holder


def break_lock(db: Any) -> dict[str, Any] | None:
    """Free the migration lock whoever holds it; returns the holder it had (None if free).

    For a lock whose holder is known to be gone: a process still running under it
    would find, at its next renewal or commit, that it lost the lock.
    """
    with private_connection(db) as (conn, tm):
        bk = bookkeeping(conn.root())
        lease = bk.lease if bk is not None else None
        if lease is None or not lease.holder:
            return None
        holder = dict(lease.holder)
        lease.holder = None
        mark(tm.get(), "dsustore lock broken", unlock=holder.get("owner"))
        tm.commit()
    log.warning("broke the migration lock held by %s", describe_holder(holder))
    return holder


__all__ = ["DEFAULT_TTL", "MigrationLock", "break_lock", "describe_holder", "lock_status",
           "migration_lock", "new_owner"]
