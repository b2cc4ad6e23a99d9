"""DSU bookkeeping: what a database knows about the updates applied to it.

Everything lives under one root key, ``"dsustore"``, in a :class:`Bookkeeping`
object, so the records travel with the data (a copied Data.fs knows its own
revision) and are written in the same transaction as the update they describe:
the migrations applied (:mod:`dsustore.runtime.history`), the schema each stored
class had then (:mod:`dsustore.runtime.schema`), the snapshots
(:mod:`dsustore.recovery`) and the migration lock (:mod:`dsustore.runtime.lock`).
"""

from __future__ import annotations

from typing import Any, Literal, overload

import persistent
from BTrees.OOBTree import OOBTree

ROOT_KEY = "dsustore"


class Lease(persistent.Persistent):
    """The migration lock: who holds it and until when (``holder`` None: free).

    An object of its own, so that renewing the lease never conflicts with the
    migration it guards, and so that restoring a snapshot (which brings the
    bookkeeping object back) never brings back a lease.
    """

    def __init__(self) -> None:
        self.holder: dict[str, Any] | None = None


class Barrier(persistent.Persistent):
    """Set while a migration makes its final catch-up and commit (``holder`` None: open).

    Guarded writers of every process read it as current in each transaction they
    commit, and wait while it is set: between the catch-up that migrates what they
    wrote and the commit that makes it visible, no old-shaped write can land.
    """

    def __init__(self) -> None:
        self.holder: dict[str, Any] | None = None


class Bookkeeping(persistent.Persistent):
    """The dsustore state of one database (stored at ``root["dsustore"]``).

    ``applied``: revision → record dict; ``schema``: dotted class name → its fields
    as the migrations left them (``shapes``: its bases and field types);
    ``snapshots``: name → dict; ``lease``: the migration lock; ``barrier``: held while
    a migration commits.
    """

    #: databases written before the lease had its own object have none until it is first taken
    lease: Lease | None = None
    #: likewise the write barrier, until a migration first commits
    barrier: Barrier | None = None
    #: per class of ``schema``, its bases and its fields' declared types (dotted class name →
    #: ``{"bases": [...], "types": {...}}``); none in databases written before they were recorded
    shapes: dict[str, dict[str, Any]] | None = None

    def __init__(self) -> None:
        self.applied: OOBTree = OOBTree()
        self.schema: dict[str, list[str]] = {}
        self.snapshots: OOBTree = OOBTree()
        self.lease = Lease()
        self.barrier = Barrier()


@overload
def bookkeeping(root: Any, *, create: Literal[True]) -> Bookkeeping: ...
@overload
def bookkeeping(root: Any, *, create: bool = False) -> Bookkeeping | None: ...
def bookkeeping(root: Any, *, create: bool = False) -> Bookkeeping | None:
    """The bookkeeping object under ``root``; made (in the caller's transaction) if ``create``."""
    found = root.get(ROOT_KEY)
    if found is None and create:
        found = root[ROOT_KEY] = Bookkeeping()
    return found


__all__ = ["ROOT_KEY", "Barrier", "Bookkeeping", "Lease", "bookkeeping"]
